// The OPFS virtio-blk backend (src/browser/opfs-backend.ts) in headless Chromium, next to the
// IndexedDB one: test/browser/opfs.html runs a main-thread check (open must refuse: sync access
// handles exist only in dedicated workers) and test/browser/opfs-worker.js, which gives both
// backends the same seeded stream of writes, reads and flushes checked against an in-memory
// model, then probes the OPFS backend's edges and drives a vdpasim_blk device over it.
// Needs `npm run build` (the page imports /dist/index.js). Skipped without /usr/bin/chromium,
// except under CI, where test/browser.test.ts already fails for it.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import type { Browser } from 'playwright-core';
import { CHROMIUM, launchChromium, watchPage } from './helpers/chromium.ts';
import { serveStatic, type StaticServer } from './browser/server.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
/** How long the page may take to publish its result (it bounds the worker at 60 s itself). */
const PAGE_TIMEOUT_MS = 90_000;

interface ModelCounts { write: number; read: number; flush: number; mismatches: number; bytes: number; whole: boolean }

/** window.__result as opfs-main.js writes it. */
interface PageResult {
  ok: boolean;
  details: {
    error?: string;
    mainThread: { code: string | null; message: string };
    worker: {
      error?: string;
      opfsCapacity: number;
      opfs: ModelCounts;
      idb: ModelCounts;
      idbEdges: Record<string, string>;
      edges: Record<string, unknown>;
      device: { afterClose: string; capacity: number; id: string; roundTrip: boolean; inFile: boolean; zeros: boolean };
    };
  };
}

const haveChromium = existsSync(CHROMIUM);

describe('OPFS backend in Chromium', { skip: haveChromium ? false : `${CHROMIUM} not found (apt-get install chromium): browser test skipped` }, () => {
  let server: StaticServer | undefined;
  let browser: Browser | undefined;
  const problems: string[] = [];
  let result: PageResult;

  before(async () => {
    if (!existsSync(path.join(ROOT, 'dist/index.js'))) assert.fail('dist/index.js is missing: run `npm run build` first');
    server = await serveStatic(ROOT, ['dist', 'test/browser']);
    browser = await launchChromium();
    // A fresh context: its own origin storage (OPFS and IndexedDB start empty).
    const page = await (await browser.newContext()).newPage();
    watchPage(page, (p) => problems.push(p));
    await page.goto(`${server.url}/test/browser/opfs.html`);
    await page.waitForFunction(() => '__result' in window, undefined, { timeout: PAGE_TIMEOUT_MS, polling: 100 });
    result = await page.evaluate(() => (window as unknown as { __result: PageResult }).__result);
  }, { timeout: PAGE_TIMEOUT_MS + 60_000 });

  after(async () => {
    await browser?.close();
    await server?.close();
  });

  test('the page and its worker ran without errors', () => {
    assert.deepEqual(problems, []);
    assert.equal(result.ok, true, result.details.error ?? result.details.worker?.error);
  });

  test('on the main thread open() refuses with unsupported (sync access handles are worker-only)', () => {
    assert.equal(result.details.mainThread.code, 'unsupported', result.details.mainThread.message);
  });

  test('OPFS and IndexedDB answer the same seeded request stream exactly as the model disk', () => {
    const { opfs, idb, opfsCapacity } = result.details.worker;
    assert.equal(opfsCapacity, 256);
    // Both backends saw the same stream (same seed): identical op counts, no mismatch.
    assert.deepEqual({ ...opfs }, { ...idb });
    assert.equal(opfs.mismatches, 0);
    assert.equal(opfs.whole, true);
    assert.equal(opfs.write + opfs.read + opfs.flush, 300);
    assert.ok(opfs.write > 50 && opfs.read > 50 && opfs.flush > 10, JSON.stringify(opfs));
  });

  test('IndexedDB backend edges: out-of-range and closed are typed as for OPFS', () => {
    assert.deepEqual(result.details.worker.idbEdges, {
      readPastEnd: 'invalid_argument',
      writePastEnd: 'invalid_argument',
      readNegative: 'invalid_argument',
      readPartialSector: 'invalid_argument',
      readClosed: 'failed_precondition',
      writeClosed: 'failed_precondition',
      flushClosed: 'failed_precondition',
    });
  });

  test('edges: capacity, persistence, lock, out-of-range, closed handle, read-only, remove', () => {
    assert.deepEqual(result.details.worker.edges, {
      reopenCapacity: 256,
      persisted: true,
      secondOpen: 'failed_precondition',
      readPastEnd: 'invalid_argument',
      writePastEnd: 'invalid_argument',
      readNegative: 'invalid_argument',
      readPartialSector: 'invalid_argument',
      zeroesPastEnd: 'invalid_argument',
      writeZeroes: true,
      closedFlag: true,
      readClosed: 'failed_precondition',
      writeClosed: 'failed_precondition',
      flushClosed: 'failed_precondition',
      wrongSize: 'invalid_argument',
      sameSize: 'resolved',
      missingNoSize: 'not_found',
      zeroSectors: 'invalid_argument',
      fractionalSectors: 'invalid_argument',
      badPath: 'invalid_argument',
      emptyPath: 'invalid_argument',
      readOnly: true,
      readOnlyRead: true,
      readOnlyWrite: 'failed_precondition',
      readOnlyCreate: 'not_found',
      freshCapacity: 16,
      freshZeros: true,
      removedThenOpen: 'not_found',
      fromHandleCapacity: 4,
      fromHandleRoundTrip: true,
      readAfterExternalClose: 'failed_precondition',
      fromHandleOddSize: 'invalid_argument',
      removeMissing: 'not_found',
    });
  });

  test('vdpasim_blk over OPFS through virtio_vdpa: writes land in the file, reads come back; a closed backend is IOERR', () => {
    assert.deepEqual(result.details.worker.device, { afterClose: 'io_error', capacity: 2048, id: 'vdpasim-opfs0', roundTrip: true, inFile: true, zeros: true });
  });
});
