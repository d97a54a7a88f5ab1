// Entry of a ring lab worker in a browser (a module Web Worker): the same serveLab the Node
// runner's worker_threads run (src/lab/xthread-worker.ts). browserCrossThreadRunner starts two.
import { serveLab, type XPort } from '../lab/xthread-worker.ts';

serveLab(globalThis as unknown as XPort);
