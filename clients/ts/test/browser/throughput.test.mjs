// Many messages into one page: nothing lost or reordered, and the page's
// heap does not keep what it was given. (How fast is measured, not asserted:
// `npm run bench:browser` records messages/s in BENCHMARKS.md.)
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Herald } from "../../dist/clients/ts/src/index.js";
import { startNode, waitFor } from "../helpers.mjs";
import { launch, page, site } from "./site.mjs";
import { heapUsed, publishMany } from "./load.mjs";

const N = 20000;
let node, browser, dir;
before(async () => {
  dir = await site();
  node = await startNode({
    args: ["--static-dir", dir.dir],
    limits: { publish_rate_per_sec: 1000000, publish_burst: 1000000, max_outbound_bytes: 64 << 20 },
  });
  browser = await launch();
});
after(async () => {
  await browser?.close();
  await node?.stop();
  dir?.remove();
});

test(`${N} messages reach a page, all of them in order, and its heap stays flat`, async () => {
  const p = await page(browser);
  await p.goto(`${node.base}/app/throughput.html?room=chat:tp`);
  await p.evaluate(() => window.ready);
  const before = await heapUsed(p);
  const publisher = new Herald(node.url, { token: "writer" });
  await publishMany(publisher, "chat:tp", N, 100);
  publisher.close();
  await waitFor(() => p.evaluate((n) => stats.n >= n, N), 60000, "every message in the page");
  const stats = await p.evaluate(() => stats);
  assert.equal(stats.n, N);
  assert.equal(stats.outOfOrder, 0);
  assert.equal(stats.lastOffset, N);
  const grown = (await heapUsed(p)) - before;
  // 20,000 messages of 100 bytes are 2 MB on the wire; a page that kept
  // them (or the client that did) would hold at least that.
  assert.ok(grown < 1 << 20, `heap grew by ${grown} bytes`);
  await p.context().close();
});
