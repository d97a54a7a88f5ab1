#!/usr/bin/env node
// `vdpa`: iproute2's vdpa tool over vdpa-wasm's in-process vdpa bus (built into dist/ by
// `npx tsc -p tsconfig.build.json`). Each process has its own bus, so devices do not outlive
// one run: use `vdpa -batch FILE` (or `-batch -` for stdin) for a session, or the library.
import '../dist/cli/main.js';
