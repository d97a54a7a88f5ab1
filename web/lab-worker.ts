// A ring lab worker for the page: the same serveLab the Node runner uses, on a Web Worker's port.
import { serveLab, type XPort } from '../src/index.ts';

serveLab(self as unknown as XPort);
