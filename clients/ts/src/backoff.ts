/**
 * Delay before reconnect attempt `attempt` (0-based), with full jitter:
 * uniform in [0, min(maxMs, initialMs * 2^attempt)).
 */
export function backoffDelay(attempt: number, initialMs: number, maxMs: number, random: () => number = Math.random): number {
  return Math.floor(random() * Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 40)));
}

/** Delay after `GoAway{reconnect_after_ms}`: that value times [1.0, 1.5). */
export function goAwayDelay(reconnectAfterMs: number, random: () => number = Math.random): number {
  return Math.floor(reconnectAfterMs * (1 + random() * 0.5));
}
