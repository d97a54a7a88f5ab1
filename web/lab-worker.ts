// The page's ring lab worker: the package's browser lab worker entry, bundled (src/browser/lab-worker.ts).
import '../src/browser/lab-worker.ts';
