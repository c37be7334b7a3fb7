// Messages/s a page takes in Chromium (BENCHMARKS.md, "Browser client"):
//  - decode: the client's receive path alone, frames handed to it in the
//    page with no network (the cost per message the client adds);
//  - end to end: N messages published through a node into one page as fast
//    as a Node.js publisher gets them acknowledged, counted by the page
//    without rendering; nothing may be lost or reordered; the page's heap
//    after a full GC, before and after.
// Run from clients/ts after `cargo build --release -p herald-gateway` and
// `npm run build`:  node --experimental-websocket bench/browser.mjs [N] [PAYLOAD_BYTES]
import { execFileSync } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Herald } from "../dist/clients/ts/src/index.js";
import { startNode, waitFor } from "../test/helpers.mjs";
import { heapUsed, publishMany } from "../test/browser/load.mjs";
import { CHROMIUM, launch, page, site } from "../test/browser/site.mjs";

const N = Number(process.argv[2] ?? 100000);
const PAYLOAD = Number(process.argv[3] ?? 100);
const dir = await site();
const node = await startNode({
  args: ["--static-dir", dir.dir],
  limits: { publish_rate_per_sec: 1000000, publish_burst: 1000000, max_outbound_bytes: 256 << 20 },
});
const browser = await launch();
const out = {
  date: new Date().toISOString(),
  chromium: execFileSync(CHROMIUM, ["--version"]).toString().trim(),
  node: process.version,
  herald: process.env.TEST_HERALD_BIN ?? "target/debug/herald",
  messages: N,
  payloadBytes: PAYLOAD,
};
try {
  const d = await page(browser);
  await d.goto(`${node.base}/app/decode.html`);
  await d.evaluate(() => window.ready);
  out.decode = [];
  for (let i = 0; i < 3; i++) out.decode.push(await d.evaluate(([n, b]) => window.run(n, b), [N, PAYLOAD]));
  await d.context().close();

  const p = await page(browser);
  await p.goto(`${node.base}/app/throughput.html?room=chat:bench`);
  await p.evaluate(() => window.ready);
  const heapBefore = await heapUsed(p);
  const publisher = new Herald(node.url, { token: "writer" });
  const t0 = performance.now();
  await publishMany(publisher, "chat:bench", N, PAYLOAD);
  const publishMs = performance.now() - t0;
  publisher.close();
  await waitFor(() => p.evaluate((n) => stats.n >= n, N), 120000, "every message in the page");
  const stats = await p.evaluate(() => stats);
  const heapAfter = await heapUsed(p);
  out.endToEnd = {
    received: stats.n,
    outOfOrder: stats.outOfOrder,
    lastOffset: stats.lastOffset,
    publishedPerSec: Math.round((N / publishMs) * 1000),
    pagePerSec: Math.round((stats.n / (stats.last - stats.first)) * 1000),
    heapBeforeBytes: heapBefore,
    heapAfterBytes: heapAfter,
  };
  await p.context().close();

  // The page reads nothing while the publisher runs, then drains the
  // backlog alone: the page's own rate, not the publisher's. Side by side
  // with a bare WebSocket that only counts (the browser's floor), twice.
  out.drain = [];
  for (const round of [1, 2]) {
    for (const kind of ["floor", "throughput"]) {
      const room = `chat:drain-${kind}-${round}`;
      const q = await page(browser);
      await q.goto(`${node.base}/app/${kind}.html?room=${room}`);
      await q.evaluate(() => window.ready);
      await q.evaluate(() => window.hold(60000));
      const writer = new Herald(node.url, { token: "writer" });
      await publishMany(writer, room, N, PAYLOAD);
      writer.close();
      writeFileSync(join(dir.dir, "go.txt"), "go");
      await waitFor(() => q.evaluate((n) => stats.n >= n, N), 120000, "every message in the page");
      const d = await q.evaluate(() => stats);
      rmSync(join(dir.dir, "go.txt"));
      out.drain.push({
        page: kind === "floor" ? "bare WebSocket (floor)" : "herald-client",
        received: d.n,
        outOfOrder: d.outOfOrder,
        firstAfterHold: d.first >= d.heldUntil,
        perSec: Math.round((d.n / (d.last - d.first)) * 1000),
      });
      await q.context().close();
    }
  }
} finally {
  await browser.close();
  await node.stop();
  dir.remove();
}
console.log(JSON.stringify(out, null, 2));
