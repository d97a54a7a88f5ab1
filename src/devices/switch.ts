// A learning L2 switch for vdpasim_net devices in port mode: frames a device transmits go to
// the port that learned their destination MAC, or to every other port for broadcast,
// multicast and unknown destinations (IEEE 802.1D forwarding, without spanning tree). Any
// other endpoint (a WebSocket, a socket, a file) can be a port too.

import { VirtioError, Code } from '../errors.ts';

/** Something that can sit on a switch port: takes frames from the switch. */
export interface SwitchEndpoint {
  /** Delivers frames to the endpoint (a device's rx). Returns how many it took. */
  deliver(frames: readonly Uint8Array[]): number;
}

/** Per-port counters. */
export interface SwitchPortStats {
  /** Frames received from the endpoint. */
  rxFrames: number;
  /** Chunks received from the endpoint that were not Ethernet frames (under 14 bytes): dropped. */
  rxErrors: number;
  /** Frames delivered to the endpoint. */
  txFrames: number;
  /** Frames the endpoint did not take (filtered, or dropped: see the device's own counters). */
  txDrops: number;
}

/** A learning switch. */
export class L2Switch {
  private readonly ports = new Map<number, { ep: SwitchEndpoint; stats: SwitchPortStats }>();
  private readonly fdb = new Map<string, number>();
  private nextPort = 1;
  private readonly maxFdb: number;

  constructor(opts: { maxFdb?: number } = {}) {
    this.maxFdb = opts.maxFdb ?? 4096;
  }

  /** Connects an endpoint; returns its port number. */
  connect(ep: SwitchEndpoint): number {
    const p = this.nextPort++;
    this.ports.set(p, { ep, stats: { rxFrames: 0, rxErrors: 0, txFrames: 0, txDrops: 0 } });
    return p;
  }

  /** Disconnects a port and forgets what it learned. */
  disconnect(port: number): void {
    if (!this.ports.delete(port)) throw new VirtioError(Code.NotFound, `switch port ${port} is not connected`);
    for (const [mac, p] of this.fdb) if (p === port) this.fdb.delete(mac);
  }

  /** Counters of a port. */
  stats(port: number): SwitchPortStats {
    const p = this.ports.get(port);
    if (!p) throw new VirtioError(Code.NotFound, `switch port ${port} is not connected`);
    return { ...p.stats };
  }

  /** The learned forwarding table: MAC → port. */
  get table(): ReadonlyMap<string, number> {
    return this.fdb;
  }

  /** Frames entering the switch on `port` (from its endpoint's tx). */
  input(port: number, frames: readonly Uint8Array[]): void {
    const src = this.ports.get(port);
    if (!src) throw new VirtioError(Code.NotFound, `switch port ${port} is not connected`);
    const out = new Map<number, Uint8Array[]>();
    for (const f of frames) {
      if (f.length < 14) {
        src.stats.rxErrors++; // not an Ethernet frame
        continue;
      }
      src.stats.rxFrames++;
      const sa = mac(f, 6);
      if (!(f[6]! & 1)) {
        if (!this.fdb.has(sa) && this.fdb.size >= this.maxFdb) this.fdb.delete(this.fdb.keys().next().value!);
        this.fdb.set(sa, port);
      }
      const dst = f[0]! & 1 ? undefined : this.fdb.get(mac(f, 0));
      const targets = dst !== undefined ? (dst === port ? [] : [dst]) : [...this.ports.keys()].filter((p) => p !== port);
      for (const t of targets) {
        let l = out.get(t);
        if (!l) out.set(t, (l = []));
        l.push(f);
      }
    }
    // One deliver() per receiving port and batch: the device filters and places it in wasm.
    for (const [t, list] of out) {
      const p = this.ports.get(t)!;
      const took = p.ep.deliver(list);
      p.stats.txFrames += took;
      p.stats.txDrops += list.length - took;
    }
  }
}

function mac(f: Uint8Array, o: number): string {
  let s = '';
  for (let i = 0; i < 6; i++) s += (i ? ':' : '') + f[o + i]!.toString(16).padStart(2, '0');
  return s;
}
