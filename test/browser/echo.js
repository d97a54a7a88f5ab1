// What travels through the rings in the browser test, shared by the page (driver) and the
// device worker: request `seq` carries payloadLen(seq) known bytes; the device answers with
// the same bytes reversed, so the driver can tell a reply from a stale or unprocessed buffer.

/** Bytes per buffer slot (both the out and the in buffer of a chain). */
export const SLOT = 64;

/** Length of request `seq`'s payload: 1..SLOT, varying from request to request. */
export function payloadLen(seq) {
  return 1 + ((seq * 37) % SLOT);
}

/** Byte j of request `seq`'s payload. */
export function payloadByte(seq, j) {
  return (seq * 131 + j * 7 + 1) & 0xff;
}

/** Writes request `seq`'s payload at `addr`. Returns its length. */
export function fillPayload(u8, addr, seq) {
  const n = payloadLen(seq);
  for (let j = 0; j < n; j++) u8[addr + j] = payloadByte(seq, j);
  return n;
}

/** The device's answer to readable bytes `data`: a new array with them reversed. */
export function reply(data) {
  return data.slice().reverse();
}

/**
 * Checks the reply to request `seq` found at `addr` with used length `len`.
 * Returns null if right, otherwise what is wrong.
 */
export function checkReply(u8, addr, seq, len) {
  const n = payloadLen(seq);
  if (len !== n) return `request ${seq}: used length ${len}, expected ${n}`;
  for (let j = 0; j < n; j++) {
    const want = payloadByte(seq, n - 1 - j);
    if (u8[addr + j] !== want) return `request ${seq}: reply byte ${j} is ${u8[addr + j]}, expected ${want}`;
  }
  return null;
}
