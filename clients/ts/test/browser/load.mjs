// Load helpers shared by the throughput test and the browser benchmark.

/** Publishes `n` messages of `bytes` bytes to `room`, up to `window` unacknowledged at once. */
export async function publishMany(herald, room, n, bytes, window = 2000) {
  // Before `connected`, publishes wait in the bounded offline queue.
  if (herald.state !== "connected") await new Promise((r) => herald.once("connected", r));
  const body = "x".repeat(bytes);
  const inflight = new Set();
  for (let i = 0; i < n; i++) {
    const p = herald.publish(room, body).then(() => inflight.delete(p));
    inflight.add(p);
    if (inflight.size >= window) await Promise.race(inflight);
  }
  await Promise.all(inflight);
}

/** The page's JS heap in use after a full garbage collection (Chromium DevTools protocol). */
export async function heapUsed(page) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("HeapProfiler.collectGarbage");
  const { usedSize } = await cdp.send("Runtime.getHeapUsage");
  await cdp.detach();
  return usedSize;
}
