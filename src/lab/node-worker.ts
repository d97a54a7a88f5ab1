// Entry of a ring lab worker under Node's worker_threads (src/lab/xthread-worker.ts does the work).
import { parentPort } from 'node:worker_threads';
import { serveLab, type XPort } from './xthread-worker.ts';

serveLab(parentPort as unknown as XPort);
