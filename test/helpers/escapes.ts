// Collects what escapes a test file into the process: unhandled rejections and exceptions thrown
// from microtasks or timers. The package promises none (shared/STYLE.md), so suites assert the
// list stays empty.
import { before, after } from 'node:test';

/** Registers process listeners for the file's lifetime; returns the live list of escapes. */
export function trackEscapes(): unknown[] {
  const escaped: unknown[] = [];
  const onEscape = (e: unknown) => escaped.push(e);
  before(() => {
    process.on('unhandledRejection', onEscape);
    process.on('uncaughtException', onEscape);
  });
  after(() => {
    process.off('unhandledRejection', onEscape);
    process.off('uncaughtException', onEscape);
  });
  return escaped;
}
