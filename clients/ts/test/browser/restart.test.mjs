// Pages ride out a node restart (SIGTERM, then the node starts again on the
// same port): a herald-client page through its own reconnect and resume, an
// SSE page through the browser's EventSource reconnect. Each receives every
// message published before, during and after, once and in order; the new
// epoch is reported (the node keeps history in memory), not hidden.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { startNode, waitFor } from "../helpers.mjs";
import { launch, page, site } from "./site.mjs";

let browser, dir;
before(async () => {
  dir = await site();
  browser = await launch();
});
after(async () => {
  await browser?.close();
  dir?.remove();
});

async function publish(node, room, texts) {
  for (const data of texts) await node.api("POST", "/api/publish", { room, data });
}

const texts = (got) => got.map((m) => m.text ?? m.data);

async function rideOutRestart(pagePath, room) {
  let node = await startNode({ args: ["--static-dir", dir.dir] });
  const port = node.port;
  const p = await page(browser);
  try {
    await p.goto(`${node.base}/app/${pagePath}?user=ann&room=${room}`);
    await p.evaluate(() => window.ready);
    await publish(node, room, ["m1", "m2", "m3"]);
    await waitFor(() => p.evaluate(() => got.length === 3), 10000, "the first messages");

    await node.stop("SIGTERM");
    node = await startNode({ port, args: ["--static-dir", dir.dir] });
    // Published as soon as the node is back, before the page has
    // reconnected (the GoAway asks for a second's patience, SSE retries
    // after `retry: 1000`).
    await publish(node, room, ["m4", "m5", "m6"]);
    await waitFor(() => p.evaluate(() => got.length >= 6), 15000, "the messages published meanwhile");
    await publish(node, room, ["m7"]);
    await waitFor(() => p.evaluate(() => got.length >= 7), 10000, "a live message after the resume");
    const got = await p.evaluate(() => got);
    const events = await p.evaluate(() => events);
    assert.deepEqual(texts(got), ["m1", "m2", "m3", "m4", "m5", "m6", "m7"]);
    assert.equal(new Set(got.map((m) => m.epoch)).size, 2, "two epochs, one per node run");
    assert.deepEqual(
      got.map((m) => m.offset),
      [1, 2, 3, 1, 2, 3, 4],
    );
    const rec = events.filter((e) => e.type === "recovered");
    assert.equal(rec.length, 1, JSON.stringify(events));
    assert.equal(rec[0].recovered, false);
    assert.deepEqual(p.errors, []);
    return events;
  } finally {
    await p.context().close();
    await node.stop();
  }
}

test("a herald-client page keeps its subscription across a node restart", async () => {
  const events = await rideOutRestart("resume.html", "chat:restart-ws");
  assert.deepEqual(
    events.filter((e) => e.type === "connected").map((e) => e.reconnected),
    [false, true],
  );
});

test("an SSE page keeps its stream across a node restart through EventSource's reconnect", async () => {
  const events = await rideOutRestart("sse.html", "chat:restart-sse");
  const closes = events.filter((e) => e.type === "close");
  assert.deepEqual(closes.map((e) => e.code), ["server_shutdown"]);
  const subs = events.filter((e) => e.type === "subscribed");
  assert.equal(subs.length, 2);
  assert.equal(subs[1].resumed, true, "the reconnect sent Last-Event-ID");
});
