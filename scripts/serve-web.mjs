// `npm run demo:web`: builds the demo page (scripts/build-web.mjs) and serves build/web/ on
// http://127.0.0.1:PORT/ (PORT from --port N or $PORT, default 8080) with the headers that make
// it cross-origin isolated (COOP/COEP: SharedArrayBuffer and a shared WebAssembly.Memory need
// them). Read-only, GET/HEAD only, nothing outside build/web/.

import { createServer } from 'node:http';
import { readFile, realpath } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildWeb } from './build-web.mjs';

const MIME = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.wasm': 'application/wasm',
};
const HEADERS = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
  'Cross-Origin-Resource-Policy': 'same-origin',
  'X-Content-Type-Options': 'nosniff',
  'Cache-Control': 'no-store',
};

/**
 * Serves `dir` (default: build/web/, built first) on 127.0.0.1:`port` (0: any free port).
 * Resolves to { url, close() } once listening.
 */
export async function serveWeb({ port = 0, dir } = {}) {
  const root = await realpath(dir ?? (await buildWeb()));
  const server = createServer(async (req, res) => {
    try {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { ...HEADERS, Allow: 'GET, HEAD' }).end();
        return;
      }
      let rel = decodeURIComponent(new URL(req.url ?? '/', 'http://localhost').pathname);
      if (rel.endsWith('/')) rel += 'index.html';
      const file = path.resolve(root, '.' + path.posix.normalize('/' + rel));
      const type = MIME[path.extname(file)];
      const real = type && file.startsWith(root + path.sep) ? await realpath(file).catch(() => null) : null;
      if (!real || !real.startsWith(root + path.sep)) {
        res.writeHead(404, HEADERS).end('not found');
        return;
      }
      const body = await readFile(real);
      res.writeHead(200, { ...HEADERS, 'Content-Type': type, 'Content-Length': body.length });
      res.end(req.method === 'HEAD' ? undefined : body);
    } catch {
      if (!res.headersSent) res.writeHead(400, HEADERS);
      res.end();
    }
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    close: () => new Promise((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const arg = process.argv.indexOf('--port');
  const port = Number(arg > 0 ? process.argv[arg + 1] : process.env.PORT ?? 8080);
  const { url } = await serveWeb({ port });
  console.log(`vdpa-wasm demo: ${url}/  (Ctrl-C stops)`);
}
