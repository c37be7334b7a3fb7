// A page is refused by a node that does not allow its origin, on every
// entrance (WebSocket, EventSource, the server API with its CORS
// preflight), and let in by one that does. The allowed WebSocket also shows
// what Chromium negotiated: the herald.v1 subprotocol named back, its
// permessage-deflate offer declined.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { API_KEY, startNode } from "../helpers.mjs";
import { launch, page, site } from "./site.mjs";

let pages, browser, dir;
before(async () => {
  dir = await site();
  pages = await startNode({ args: ["--static-dir", dir.dir] });
  browser = await launch();
});
after(async () => {
  await browser?.close();
  await pages?.stop();
  dir?.remove();
});

async function probe(target) {
  const p = await page(browser);
  try {
    await p.goto(`${pages.base}/app/probe.html?target=127.0.0.1:${target.port}&key=${API_KEY}`);
    return await p.evaluate(() => window.result);
  } finally {
    await p.context().close();
  }
}

test("a page on another origin is refused where origins are restricted", async () => {
  const node = await startNode({ args: ["--allowed-origins", "https://app.example.com"] });
  try {
    const r = await probe(node);
    assert.deepEqual(r, { ws: { open: false, code: 1006 }, sse: "failed", api: "blocked" });
  } finally {
    await node.stop();
  }
});

test("a page on an allowed origin gets in, with herald.v1 and no extensions", async () => {
  const node = await startNode({ args: ["--allowed-origins", `${pages.base},https://app.example.com`] });
  try {
    const r = await probe(node);
    assert.deepEqual(r, { ws: { open: true, protocol: "herald.v1", extensions: "" }, sse: "subscribed", api: 200 });
  } finally {
    await node.stop();
  }
});
