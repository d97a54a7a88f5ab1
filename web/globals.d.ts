// web/ type-checks against the DOM and worker libs only (no Node types), so nothing Node-only
// slips into the page. src/worker/host.ts feature-tests Node's setImmediate at run time
// (`typeof setImmediate === 'function'`); declare it as possibly absent for that test.
declare const setImmediate: ((f: () => void) => unknown) | undefined;
