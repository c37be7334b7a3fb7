/** A position in a room's log. */
export interface Pos {
  epoch: bigint;
  offset: bigint;
}

/**
 * Checks a stored (non-volatile) message at (`epoch`, `offset`) against the
 * last position of its room. Returns -1 for a duplicate (same epoch, offset <=
 * last), else the number of offsets skipped since the last position in the
 * same epoch (0 normally, and 0 when the message starts another epoch).
 */
export function advance(last: Pos | undefined, epoch: bigint, offset: bigint): number {
  if (!last || last.epoch !== epoch) return 0;
  if (offset <= last.offset) return -1;
  return Number(offset - last.offset - 1n);
}

/** A random 64-bit value as 16 hex digits: the idempotency key prefix. */
export function randomHex64(): string {
  const c = (globalThis as { crypto?: { getRandomValues?<T extends Uint32Array>(a: T): T } }).crypto;
  const a = new Uint32Array(2);
  if (c && c.getRandomValues) c.getRandomValues(a);
  else for (let i = 0; i < 2; i++) a[i] = Math.floor(Math.random() * 2 ** 32);
  let s = "";
  for (const x of a) s += x.toString(16).padStart(8, "0");
  return s;
}
