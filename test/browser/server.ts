// A tiny read-only static file server for the browser test: serves a few folders of the
// repository from 127.0.0.1 on an ephemeral port, with the headers that make the page
// cross-origin isolated (needed for SharedArrayBuffer and for posting a shared
// WebAssembly.Memory to a worker: shared/TOOLCHAIN.md "Workers and shared memory").

import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { readFile, realpath, stat } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import path from 'node:path';

/** A running server: its origin and how to stop it. */
export interface StaticServer {
  /** Origin to load pages from, e.g. `http://127.0.0.1:41234` (no trailing slash). */
  readonly url: string;
  /** Stops accepting connections, drops idle keep-alive ones and resolves when closed. */
  close(): Promise<void>;
}

const MIME: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.wasm': 'application/wasm',
};

/** Headers on every response: cross-origin isolation, and no caching between runs. */
const COMMON_HEADERS = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
  'Cross-Origin-Resource-Policy': 'same-origin',
  'X-Content-Type-Options': 'nosniff',
  'Cache-Control': 'no-store',
};

/** Options of {@link serveStatic}. */
export interface ServeStaticOptions {
  /**
   * Single files served at fixed URL paths as `application/octet-stream`, whatever their name
   * (e.g. the guest's kernel, initramfs and BIOS, which live outside the repository and have no
   * known extension): `{ '/guest/kernel': '/abs/path/vmlinuz-…' }`.
   */
  files?: Readonly<Record<string, string>>;
}

/**
 * Serves the files under `root`/`dirs[i]` (and nothing else under `root`) read-only, plus the
 * exact URL paths of `opts.files`. Requests that leave those folders — `..`, encoded
 * separators, symlinks pointing out — get 404, as do unknown file types.
 */
export async function serveStatic(root: string, dirs: readonly string[], opts: ServeStaticOptions = {}): Promise<StaticServer> {
  const realRoot = await realpath(root);
  // A folder may be a symlink (node_modules is one in a git worktree): a request path must lie
  // under the folder as named, and the file it resolves to under the folder's real path.
  const named = dirs.map((d) => path.join(realRoot, d));
  const allowed = await Promise.all(named.map((d) => realpath(d)));
  const under = (list: string[], file: string) => list.some((dir) => file.startsWith(dir + path.sep));
  const files = new Map(Object.entries(opts.files ?? {}));

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { ...COMMON_HEADERS, Allow: 'GET, HEAD' }).end();
      return;
    }
    let rel: string;
    try {
      rel = decodeURIComponent(new URL(req.url ?? '/', 'http://localhost').pathname);
    } catch {
      res.writeHead(400, COMMON_HEADERS).end('bad path');
      return;
    }
    const single = files.get(rel);
    if (single !== undefined) {
      const body = await readFile(single);
      res.writeHead(200, { ...COMMON_HEADERS, 'Content-Type': 'application/octet-stream', 'Content-Length': body.length });
      res.end(req.method === 'HEAD' ? undefined : body);
      return;
    }
    // path.resolve normalizes `..`; the allow-list check runs on the result and again on the
    // real path, so neither traversal nor a symlink can reach outside the served folders.
    const file = path.resolve(realRoot, '.' + path.posix.normalize('/' + rel));
    const type = MIME[path.extname(file)];
    if (rel.includes('\0') || rel.includes('\\') || !under(named, file) || !type) {
      res.writeHead(404, COMMON_HEADERS).end('not found');
      return;
    }
    let body: Buffer;
    try {
      const real = await realpath(file);
      if (!under(allowed, real) || !(await stat(real)).isFile()) throw new Error('not a served file');
      body = await readFile(real);
    } catch {
      res.writeHead(404, COMMON_HEADERS).end('not found');
      return;
    }
    res.writeHead(200, { ...COMMON_HEADERS, 'Content-Type': type, 'Content-Length': body.length });
    res.end(req.method === 'HEAD' ? undefined : body);
  }

  const server = createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) res.writeHead(500, COMMON_HEADERS);
      res.end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((e) => (e ? reject(e) : resolve()));
        server.closeAllConnections();
      }),
  };
}
