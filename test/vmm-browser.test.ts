// The minimal VMM in headless Chromium (test/browser/vmm.html, vmm.js): the page's main thread is
// the VMM, the devices and the guest run in module workers; the same checks as test/vmm.test.ts.
// Skipped without /usr/bin/chromium (outside CI), like test/browser.test.ts; needs dist/ (npm run build).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import type { Browser } from 'playwright-core';
import { CHROMIUM, launchChromium, watchPage } from './helpers/chromium.ts';
import { serveStatic, type StaticServer } from './browser/server.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

interface VmmPage {
  ok: boolean;
  details: {
    crossOriginIsolated: boolean; error?: string; gpaBase: number; nodes: string[];
    net: { sent: number; received: [number, number]; mismatches: number };
    blk: { writes: number; reads: number; mismatches: number; errors: number };
    vmmMessages: number; syncOps: number; kicks: number;
    backends: { file: string; unknown: string; opfs: string[] };
  };
}

describe('minimal VMM in Chromium', { skip: existsSync(CHROMIUM) || process.env.CI ? false : `${CHROMIUM} not found: skipped` }, () => {
  let server: StaticServer | undefined;
  let browser: Browser | undefined;
  const problems: string[] = [];
  let result: VmmPage;

  before(async () => {
    if (!existsSync(path.join(ROOT, 'dist/vmm/browser-guest-worker.js'))) assert.fail('dist/vmm/browser-guest-worker.js is missing: run `npm run build` first');
    server = await serveStatic(ROOT, ['dist', 'test/browser']);
    browser = await launchChromium();
    const page = await browser.newPage();
    watchPage(page, (p) => problems.push(p));
    await page.goto(`${server.url}/test/browser/vmm.html`);
    await page.waitForFunction(() => '__vmm' in window, undefined, { timeout: 90_000, polling: 100 });
    result = await page.evaluate(() => (window as unknown as { __vmm: VmmPage }).__vmm);
  }, { timeout: 150_000 });

  after(async () => {
    await browser?.close();
    await server?.close();
  });

  test('net pair both ways byte for byte, blk vs a model, the VMM thread idle in the data phase', () => {
    assert.deepEqual(problems, []);
    assert.equal(result.ok, true, result.details.error);
    const d = result.details;
    assert.equal(d.crossOriginIsolated, true);
    assert.ok(d.gpaBase > 0);
    assert.deepEqual(d.nodes, ['vhost-vdpa-0', 'vhost-vdpa-1', 'vhost-vdpa-2']);
    assert.deepEqual(d.net, { sent: 200, received: [200, 200], mismatches: 0 });
    assert.deepEqual(d.blk, { writes: 100, reads: 64, mismatches: 0, errors: 0 });
    assert.equal(d.vmmMessages, 2, 'the VMM thread got the two answers and nothing else');
    assert.equal(d.syncOps, 0);
    assert.ok(d.kicks > 0);
    assert.deepEqual(d.backends, { file: 'unsupported', unknown: 'invalid_argument', opfs: ['opfs0', 'opfs1'] });
  });
});
