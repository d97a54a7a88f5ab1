// The OPFS test page's script: on the main thread OpfsBackend.open must refuse with
// `unsupported` (sync access handles exist only in dedicated workers); everything else runs in
// opfs-worker.js, whose report lands in window.__result = { ok, details }.

import { OpfsBackend, VirtioError } from '/dist/index.js';

/** How long the worker may take (it does a few hundred small requests). */
const WORKER_TIMEOUT_MS = 60_000;

async function mainThread() {
  try {
    const b = await OpfsBackend.open('vdpa-test/main-thread.img', { sectors: 8 });
    b.close();
    return { code: null, message: 'opened on the main thread' };
  } catch (e) {
    return { code: e instanceof VirtioError ? e.code : null, message: String(e?.message ?? e) };
  }
}

async function main() {
  const details = { mainThread: await mainThread() };
  const worker = new Worker(new URL('./opfs-worker.js', import.meta.url), { type: 'module', name: 'vdpa-opfs' });
  try {
    details.worker = await new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`the OPFS worker did not report within ${WORKER_TIMEOUT_MS} ms`)), WORKER_TIMEOUT_MS);
      worker.onmessage = (e) => {
        clearTimeout(t);
        resolve(e.data);
      };
      worker.onerror = (e) => {
        e.preventDefault();
        clearTimeout(t);
        reject(new Error(`OPFS worker error: ${e.message} (${e.filename}:${e.lineno})`));
      };
    });
  } finally {
    worker.terminate();
  }
  return details;
}

main().then(
  (details) => {
    window.__result = { ok: details.worker?.error === undefined, details };
  },
  (err) => {
    window.__result = { ok: false, details: { error: err instanceof Error ? (err.stack ?? err.message) : String(err) } };
  },
);
