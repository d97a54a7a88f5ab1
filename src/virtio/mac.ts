// MAC addresses as virtio-net carries them (VIRTIO 1.3 §5.1.4 `mac`, §5.1.6.5.2 MAC_ADDR_SET):
// six bytes; a station address is unicast and not all zeros (IEEE 802). Used by the management
// devices (`vdpa dev add … mac`) and by the net driver (setMac), so both accept the same input.

import { VirtioError, Code } from '../errors.ts';

/** Parses "aa:bb:cc:dd:ee:ff" (or takes 6 bytes); rejects multicast and all-zero addresses. */
export function parseMac(mac: string | Uint8Array): Uint8Array {
  let b: Uint8Array;
  if (typeof mac === 'string') {
    if (!/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(mac)) throw new VirtioError(Code.InvalidArgument, `invalid MAC address "${mac}"`);
    b = new Uint8Array(mac.split(':').map((x) => parseInt(x, 16)));
  } else {
    if (!(mac instanceof Uint8Array) || mac.length !== 6) throw new VirtioError(Code.InvalidArgument, 'a MAC address has 6 bytes');
    b = new Uint8Array(mac);
  }
  if (b[0]! & 1) throw new VirtioError(Code.InvalidArgument, `MAC address ${formatMac(b)} is multicast`);
  if (b.every((x) => x === 0)) throw new VirtioError(Code.InvalidArgument, 'MAC address 00:00:00:00:00:00 is not valid');
  return b;
}

/** "aa:bb:cc:dd:ee:ff". */
export function formatMac(b: Uint8Array): string {
  return macAt(b, 0);
}

/** Two lower-case hex digits for every byte value. */
const HEX2 = Array.from({ length: 256 }, (_, x) => x.toString(16).padStart(2, '0'));

/**
 * The six bytes at `b[o]` as "aa:bb:cc:dd:ee:ff" (no array made: a full control state turns a
 * hundred or more of them into strings and back inside a migration).
 */
export function macAt(b: Uint8Array, o: number): string {
  return `${HEX2[b[o]!]}:${HEX2[b[o + 1]!]}:${HEX2[b[o + 2]!]}:${HEX2[b[o + 3]!]}:${HEX2[b[o + 4]!]}:${HEX2[b[o + 5]!]}`;
}

/**
 * Writes a MAC string already checked to be "xx:xx:xx:xx:xx:xx" (hex digits, either case) as
 * six bytes at `out[at]`, without splitting it.
 */
export function putMac(m: string, out: Uint8Array, at: number): void {
  for (let i = 0; i < 6; i++) out[at + i] = (hexDigit(m.charCodeAt(3 * i)) << 4) | hexDigit(m.charCodeAt(3 * i + 1));
}

function hexDigit(c: number): number {
  return c <= 0x39 ? c - 0x30 : (c | 0x20) - 0x57; // '0'..'9', 'a'..'f' / 'A'..'F'
}

