// The browser suites' shared setup: Debian's Chromium (never a downloaded browser) launched by
// playwright-core with the same flags everywhere, and one watcher that turns page errors,
// console errors, failed requests and HTTP errors into problems the suite asserts on.
import { chromium, type Browser, type Page } from 'playwright-core';

/** Debian's chromium package (`apt-get install chromium`); CI installs it. */
export const CHROMIUM = '/usr/bin/chromium';

/** Headless Chromium with the flags every browser suite uses (no sandbox as root, no GPU, no network chatter). */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    timeout: 30_000,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/** Reports every page error, console error, failed request and HTTP status ≥ 400 of `page`. */
export function watchPage(page: Page, report: (problem: string) => void): void {
  page.on('pageerror', (e) => report(`page error: ${e.stack ?? e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') report(`console error: ${m.text()}`);
  });
  page.on('requestfailed', (r) => report(`request failed: ${r.url()} (${r.failure()?.errorText})`));
  page.on('response', (r) => {
    if (r.status() >= 400) report(`HTTP ${r.status()} for ${r.url()}`);
  });
}
