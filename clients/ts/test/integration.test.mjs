// Integration tests against a real `herald serve` node (TEST_HERALD_BIN,
// default ../../target/debug/herald), each node on a free port.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Herald } from "../dist/clients/ts/src/index.js";
import { next, startNode, startProxy, waitFor, within } from "./helpers.mjs";
import { tapWebSocket } from "./wire.mjs";

const opened = [];
function herald(url, options = {}) {
  const h = new Herald(url, { reconnect: { initialDelayMs: 50, maxDelayMs: 300 }, ...options });
  opened.push(h);
  return h;
}
after(() => {
  for (const h of opened) h.close();
});

const texts = (page) => page.messages.map((m) => m.data ?? m.data_b64);

describe("one node", () => {
  let node;
  before(async () => {
    node = await startNode();
  });
  after(() => node?.stop());

  test("connect: Connected with the user, node and limits", async () => {
    const h = herald(node.url, { token: "ann" });
    const c = await next(h, "connected");
    assert.equal(c.userId, "ann");
    assert.equal(c.nodeId, "dev-1");
    assert.equal(c.reconnected, false);
    assert.equal(c.heartbeatIntervalMs, 15000);
    assert.equal(c.limits.maxFrameBytes, 65536);
    assert.equal(h.state, "connected");
    assert.equal(h.session.sessionId, c.sessionId);
    h.close();
    assert.equal(h.state, "closed");
  });

  test("subscribe with history: the latest messages arrive as message events", async () => {
    for (const data of ["h1", "h2", "h3"]) await node.api("POST", "/api/publish", { room: "chat:hist", data });
    const h = herald(node.url, { token: "ann" });
    const sub = h.subscribe("chat:hist", { history: 2 });
    const got = [];
    sub.on("message", (m) => got.push([m.offset, m.text(), m.publisher]));
    const ev = await within(sub.ready(), 5000, "subscribed");
    assert.equal(ev.offset, 3);
    assert.equal(ev.recovered, false);
    assert.equal(ev.recovering, false);
    assert.equal(ev.resumed, false);
    assert.deepEqual(got, [
      [2, "h2", ""],
      [3, "h3", ""],
    ]);
    assert.deepEqual(sub.position, { epoch: ev.epoch, offset: 3 });
    h.close();
  });

  test("publish: acknowledged with offsets, delivered in order, Reply before the own Message", async () => {
    const frames = [];
    const h = herald(node.url, { token: "ann", WebSocket: tapWebSocket(frames) });
    const sub = h.subscribe("chat:order");
    const { epoch } = await within(sub.ready(), 5000, "subscribed");
    const got = [];
    sub.on("message", (m) => got.push(m));
    const acks = await within(Promise.all([1, 2, 3, 4, 5].map((i) => h.publish("chat:order", `m${i}`))), 5000, "acks");
    assert.deepEqual(
      acks.map((a) => a.offset),
      [1, 2, 3, 4, 5],
    );
    for (const a of acks) assert.equal(a.epoch, epoch);
    await waitFor(() => got.length === 5, 5000, "5 messages");
    assert.deepEqual(
      got.map((m) => [m.offset, m.text(), m.publisher, m.skipped, m.volatile]),
      [1, 2, 3, 4, 5].map((i) => [i, `m${i}`, "ann", 0, false]),
    );
    for (const a of acks) {
      const reply = frames.findIndex((f) => f.type === "Reply" && f.offset === BigInt(a.offset));
      const msg = frames.findIndex((f) => f.type === "Message" && f.offset === BigInt(a.offset));
      assert.ok(reply >= 0 && msg > reply, `Reply (${reply}) before Message (${msg}) for offset ${a.offset}`);
    }
    // JSON helpers and a volatile publish (offset 0, not stored).
    const j = next(sub, "message", (m) => m.contentType === "application/json");
    await h.publish("chat:order", Herald.json({ a: 1 }), { contentType: "application/json" });
    assert.deepEqual((await j).json(), { a: 1 });
    const v = next(sub, "message", (m) => m.volatile);
    assert.deepEqual(await h.publish("chat:order", "vol", { volatile: true }), { epoch, offset: 0 });
    assert.equal((await v).offset, 0);
    h.close();
  });

  test("two clients: presence join/leave, snapshot, typing", async () => {
    const ann = herald(node.url, { token: "ann" });
    const bob = herald(node.url, { token: "bob" });
    const a = ann.subscribe("chat:pres");
    const snap = next(a, "presence", (e) => e.type === "snapshot");
    await within(a.ready(), 5000, "ann subscribed");
    assert.deepEqual((await snap).users, ["ann"]);
    const join = next(a, "presence", (e) => e.type === "join");
    const b = bob.subscribe("chat:pres");
    const bsnap = next(b, "presence", (e) => e.type === "snapshot");
    await within(b.ready(), 5000, "bob subscribed");
    assert.deepEqual(await join, { type: "join", room: "chat:pres", user: "bob" });
    assert.deepEqual((await bsnap).users.sort(), ["ann", "bob"]);
    const q = await ann.presence("chat:pres");
    assert.deepEqual({ ...q, users: q.users.sort() }, { room: "chat:pres", users: ["ann", "bob"], count: 2, truncated: false });
    const typing = next(a, "typing");
    assert.equal(b.typing(true), true);
    assert.deepEqual(await typing, { room: "chat:pres", user: "bob", active: true });
    const stop = next(a, "typing");
    bob.typing("chat:pres", false);
    assert.equal((await stop).active, false);
    const leave = next(a, "presence", (e) => e.type === "leave");
    bob.close();
    assert.deepEqual(await leave, { type: "leave", room: "chat:pres", user: "bob" });
    ann.close();
  });

  test("requests: history pages, presence and history errors, notifications and markRead", async () => {
    const h = herald(node.url, { token: "ann" });
    for (let i = 1; i <= 5; i++) await h.publish("chat:req", `r${i}`);
    const all = await h.history("chat:req");
    assert.deepEqual(
      all.messages.map((m) => m.text()),
      ["r1", "r2", "r3", "r4", "r5"],
    );
    assert.equal(all.hasMore, false);
    assert.equal(all.room, "chat:req");
    const last2 = await h.history("chat:req", { limit: 2 });
    assert.deepEqual(
      last2.messages.map((m) => m.offset),
      [4, 5],
    );
    assert.equal(last2.hasMore, true);
    const mid = await h.history("chat:req", { after: 1, before: 5 });
    assert.deepEqual(
      mid.messages.map((m) => m.offset),
      [2, 3, 4],
    );
    await assert.rejects(h.history("chat:nope"), (e) => e.code === "NotFound" && e.room === "chat:nope");
    await assert.rejects(h.presence("chat:nope"), (e) => e.code === "NotFound");
    // An inbox with nothing in it (the notifications test fills one).
    const inbox = await h.notifications({ unreadOnly: false, limit: 10 });
    assert.deepEqual(inbox, { notifications: [], unread: 0, hasMore: false });
    await h.markRead({ ids: [1, 2], upTo: 3 });
    assert.equal(h.state, "connected");
    h.close();
  });

  test("track: analytics events are stored and rolled up per minute; bad ones are refused", async () => {
    const h = herald(node.url, { token: "tess" });
    await next(h, "unread");
    const name = `ts.click.${process.pid}`;
    await h.track(name);
    await h.track(name, 5, { page: "/home" });
    await h.track(name, 2);
    const { rollups } = await node.api("GET", `/api/events/${name}/rollups`);
    const total = rollups.reduce(
      (t, r) => ({ count: t.count + r.count, sum: t.sum + r.sum, min: Math.min(t.min, r.min), max: Math.max(t.max, r.max) }),
      { count: 0, sum: 0, min: Infinity, max: -Infinity },
    );
    assert.deepEqual(total, { count: 3, sum: 8, min: 1, max: 5 });
    await assert.rejects(h.track("x".repeat(200)), (e) => e.code === "BadRequest");
    assert.equal(h.state, "connected");
    h.close();
  });

  test("notifications: the unread count on connect, pages newest first, markRead, only one's own", async () => {
    const ids = [];
    for (const kind of ["a", "b", "c"]) {
      const sent = await node.api("POST", "/api/notify", { user: "ines", kind, title: `t${kind}`, data: { kind } });
      assert.equal(sent.online_connections, 0);
      ids.push(sent.id);
    }
    assert.ok(ids[0] < ids[1] && ids[1] < ids[2], `increasing ids ${ids}`);
    const h = herald(node.url, { token: "ines" });
    assert.deepEqual(await next(h, "unread"), { unread: 3 });
    assert.equal(h.unread, 3);

    const head = await h.notifications({ limit: 2 });
    assert.deepEqual(
      head.notifications.map((n) => [n.id, n.kind, n.title, n.read]),
      [
        [ids[2], "c", "tc", false],
        [ids[1], "b", "tb", false],
      ],
    );
    assert.deepEqual(head.notifications[0].json(), { kind: "c" });
    assert.equal(head.unread, 3);
    assert.equal(head.hasMore, true);
    const rest = await h.notifications({ beforeId: ids[1] });
    assert.deepEqual(
      rest.notifications.map((n) => n.id),
      [ids[0]],
    );
    assert.equal(rest.hasMore, false);

    await h.markRead({ ids: [ids[0]] });
    const unread = await h.notifications();
    assert.deepEqual(
      unread.notifications.map((n) => n.id),
      [ids[2], ids[1]],
    );
    assert.equal(h.unread, 2);
    await h.markRead({ upTo: ids[1] });
    const live = next(h, "notification");
    const d = await node.api("POST", "/api/notify", { user: "ines", kind: "d" });
    assert.equal(d.online_connections, 1);
    assert.equal((await live).id, d.id);
    const all = await h.notifications({ unreadOnly: false });
    assert.deepEqual(
      all.notifications.map((n) => [n.id, n.read]),
      [
        [d.id, false],
        [ids[2], false],
        [ids[1], true],
        [ids[0], true],
      ],
    );
    assert.equal(all.unread, 2);
    // The same inbox over HTTP.
    const viaHttp = await node.api("GET", "/api/notifications/ines?unread_only=true");
    assert.deepEqual(
      viaHttp.notifications.map((n) => n.id),
      [d.id, ids[2]],
    );

    // Someone else sees and marks only their own.
    const otto = herald(node.url, { token: "otto" });
    assert.deepEqual(await next(otto, "unread"), { unread: 0 });
    assert.deepEqual((await otto.notifications({ unreadOnly: false })).notifications, []);
    await otto.markRead({ ids, upTo: d.id });
    assert.equal((await h.notifications()).unread, 2);

    // The next connection is told the count again.
    h.close();
    const again = herald(node.url, { token: "ines" });
    assert.deepEqual(await next(again, "unread"), { unread: 2 });
    again.close();
    otto.close();
  });

  test("pushes without a subscription: user:<id> messages and live notifications", async () => {
    const h = herald(node.url, { token: "nora" });
    await next(h, "connected");
    const m = next(h, "message");
    await node.api("POST", "/api/publish", { room: "user:nora", data: "direct" });
    const got = await m;
    assert.equal(got.room, "user:nora");
    assert.equal(got.text(), "direct");
    const n = next(h, "notification");
    const sent = await node.api("POST", "/api/notify", { user: "nora", kind: "mention", title: "Hi", body: "you", data: { room: "chat:x" } });
    assert.equal(sent.online_connections, 1);
    const note = await n;
    assert.equal(note.kind, "mention");
    assert.equal(note.title, "Hi");
    assert.equal(note.body, "you");
    assert.deepEqual(note.json(), { room: "chat:x" });
    h.close();
  });

  test("the minified bundle works end to end", async () => {
    const { Herald: MinHerald } = await import("../dist/herald.min.js");
    const h = new MinHerald(node.url, { token: "min" });
    opened.push(h);
    const sub = h.subscribe("chat:min", { history: 1 });
    await within(sub.ready(), 5000, "subscribed");
    const m = next(sub, "message");
    const ack = await h.publish("chat:min", "small");
    const got = await m;
    assert.equal(got.text(), "small");
    assert.equal(got.offset, ack.offset);
    await assert.rejects(h.history("chat:none"), (e) => e.code === "NotFound" && e.codeNumber === 102);
    h.close();
  });

  test("kick: Error{Kicked} ends the session and the client does not come back", async () => {
    const h = herald(node.url, { token: "kim" });
    await next(h, "connected");
    const sub = h.subscribe("chat:kick");
    await within(sub.ready(), 5000, "subscribed");
    const disconnected = next(h, "disconnected");
    const closed = next(h, "closed");
    let reconnecting = 0;
    h.on("reconnecting", () => reconnecting++);
    assert.deepEqual(await node.api("POST", "/api/disconnect/kim"), { disconnected: 1 });
    const d = await disconnected;
    assert.equal(d.error.code, "Kicked");
    assert.equal(d.error.codeNumber, 211);
    assert.equal(d.willReconnect, false);
    assert.equal((await closed).error.code, "Kicked");
    assert.equal(h.state, "closed");
    assert.equal(sub.state, "unsubscribed");
    await assert.rejects(h.publish("chat:kick", "x"), (e) => e.code === "Kicked");
    // Stays away: no reconnect scheduled, and the node sees no new session.
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(reconnecting, 0);
    const presence = await node.api("GET", "/api/presence/chat:kick").catch(() => ({ count: 0 }));
    assert.equal(presence.count, 0);
  });
});

test("GoAway on node SIGTERM: ServerShutdown, reconnect after reconnect_after_ms x [1, 1.5)", async () => {
  const node = await startNode();
  try {
    const h = herald(node.url, { token: "ann" });
    await next(h, "connected");
    const disconnected = next(h, "disconnected");
    const reconnecting = next(h, "reconnecting");
    const stopped = node.stop("SIGTERM");
    const d = await disconnected;
    assert.equal(d.error.code, "ServerShutdown");
    assert.equal(d.willReconnect, true);
    const r = await reconnecting;
    assert.ok(r.delayMs >= 1000 && r.delayMs < 1500, `delay ${r.delayMs}`);
    h.close();
    await stopped;
  } finally {
    await node.stop();
  }
});

test("node restart on the same port: resumed in a new epoch (recovered=false surfaced), new messages arrive", async () => {
  const node = await startNode();
  let node2;
  try {
    const h = herald(node.url, { token: "ann" });
    const sub = h.subscribe("chat:restart");
    const first = await within(sub.ready(), 5000, "subscribed");
    await h.publish("chat:restart", "before");
    const stopped = node.stop("SIGTERM");
    await next(h, "disconnected");
    await stopped;
    const connected = next(h, "connected", () => true, 10000);
    const gap = next(sub, "recovered", () => true, 10000);
    node2 = await startNode({ port: node.port });
    const c = await connected;
    assert.equal(c.reconnected, true);
    const g = await gap;
    assert.equal(g.recovered, false);
    assert.equal(g.resumed, true);
    assert.equal(g.recovering, true);
    assert.notEqual(g.epoch, first.epoch);
    assert.equal(sub.state, "subscribed");
    const m = next(sub, "message");
    await node2.api("POST", "/api/publish", { room: "chat:restart", data: "after" });
    const got = await m;
    assert.equal(got.text(), "after");
    assert.equal(got.epoch, g.epoch);
    assert.equal(got.offset, 1);
    h.close();
  } finally {
    await node.stop();
    await node2?.stop();
  }
});

test("link drop through a proxy: resume with recovered=true, no gap or duplicate, unacknowledged publishes stored once", async () => {
  const node = await startNode();
  const proxy = await startProxy(node.port);
  const room = "chat:drop";
  try {
    const h = herald(proxy.url, { token: "ann" });
    const sub = h.subscribe(room, { presence: false });
    await within(sub.ready(), 5000, "subscribed");
    const got = [];
    sub.on("message", (m) => got.push([m.offset, m.text(), m.skipped]));
    let gaps = 0;
    sub.on("recovered", () => gaps++);
    for (const t of ["a1", "a2", "a3"]) await h.publish(room, t);
    await waitFor(() => got.length === 3, 5000, "3 messages");
    // The node stores these but its answers (and the deliveries) are lost.
    proxy.blockDown = true;
    const lost = [h.publish(room, "b1"), h.publish(room, "b2")];
    await waitFor(async () => (await node.api("GET", `/api/history/${room}`)).messages.length === 5, 5000, "b1, b2 stored");
    await node.api("POST", "/api/publish", { room, data: "srv1" });
    const disconnected = next(h, "disconnected");
    proxy.cut();
    proxy.blockDown = false;
    assert.equal((await disconnected).error.code, "Unavailable");
    // Queued while disconnected; sent after the next Connected.
    const queued = h.publish(room, "c1");
    await node.api("POST", "/api/publish", { room, data: "srv2" });
    const resumed = await next(sub, "subscribed", (e) => e.resumed, 5000);
    assert.equal(resumed.recovered, true);
    assert.equal(resumed.recovering, true);
    const acks = await within(Promise.all([...lost, queued]), 5000, "acks after the reconnect");
    assert.deepEqual(
      acks.slice(0, 2).map((a) => a.offset),
      [4, 5],
      "resent publishes answered with their original offsets",
    );
    await waitFor(() => got.length >= 8, 5000, "8 messages");
    await new Promise((r) => setTimeout(r, 50)); // any stray duplicate would arrive now
    assert.deepEqual(
      got.map(([o]) => o),
      [1, 2, 3, 4, 5, 6, 7, 8],
    );
    assert.ok(got.every(([, , s]) => s === 0));
    assert.equal(gaps, 0);
    const page = await node.api("GET", `/api/history/${room}?limit=100`);
    const stored = texts(page);
    assert.equal(stored.length, 8);
    assert.deepEqual([...stored].sort(), ["a1", "a2", "a3", "b1", "b2", "c1", "srv1", "srv2"]);
    assert.equal(acks[2].offset, page.messages[stored.indexOf("c1")].offset);
    h.close();
  } finally {
    await proxy.close();
    await node.stop();
  }
});

test("heartbeats: Pongs keep the session alive; a silent server is dropped after 3 intervals", async () => {
  const node = await startNode({ limits: { heartbeat_interval: "150ms", idle_timeout: "1s" } });
  const proxy = await startProxy(node.port);
  try {
    const h = herald(proxy.url, { token: "ann" });
    const c = await next(h, "connected");
    assert.equal(c.heartbeatIntervalMs, 150);
    let drops = 0;
    h.on("disconnected", () => drops++);
    // Longer than the node's idle timeout: only the Pongs keep it open.
    await new Promise((r) => setTimeout(r, 1300));
    assert.equal(drops, 0);
    assert.equal(h.state, "connected");
    proxy.freeze = true;
    const t0 = Date.now();
    const d = await next(h, "disconnected", () => true, 3000);
    const took = Date.now() - t0;
    assert.equal(d.error.code, "IdleTimeout");
    assert.equal(d.error.closeCode, undefined, "detected by the client");
    assert.ok(took < 950, `dropped after ${took} ms`);
    proxy.freeze = false;
    const again = await next(h, "connected", () => true, 5000);
    assert.equal(again.reconnected, true);
    h.close();
  } finally {
    await proxy.close();
    await node.stop();
  }
});
