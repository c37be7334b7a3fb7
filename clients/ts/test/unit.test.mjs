// Unit tests of the pure parts, and of the client against a fake WebSocket
// (the server side is played by the test).
import assert from "node:assert/strict";
import { afterEach, describe, test } from "node:test";
import { backoffDelay, goAwayDelay } from "../dist/clients/ts/src/backoff.js";
import { advance, randomHex64 } from "../dist/clients/ts/src/position.js";
import { ErrorCode, Herald, HeraldError, errorCodeName, errorFromClose } from "../dist/clients/ts/src/index.js";
import { shouldReconnect } from "../dist/clients/ts/src/errors.js";
import { fakeWebSocket, srv } from "./wire.mjs";
import { next, waitFor, within } from "./helpers.mjs";

describe("backoff", () => {
  test("full jitter between 0 and min(cap, initial * 2^attempt)", () => {
    assert.equal(backoffDelay(0, 100, 10000, () => 0), 0);
    assert.equal(backoffDelay(0, 100, 10000, () => 0.999999), 99);
    assert.equal(backoffDelay(3, 100, 10000, () => 0.5), 400);
    assert.equal(backoffDelay(7, 100, 10000, () => 0.999999), 9999);
    assert.equal(backoffDelay(1000, 100, 10000, () => 0.5), 5000);
    for (let a = 0; a < 20; a++) {
      const d = backoffDelay(a, 100, 10000);
      assert.ok(d >= 0 && d < Math.min(10000, 100 * 2 ** a), `attempt ${a}: ${d}`);
    }
  });
  test("GoAway delay is reconnect_after_ms x [1.0, 1.5)", () => {
    assert.equal(goAwayDelay(1000, () => 0), 1000);
    assert.equal(goAwayDelay(1000, () => 0.999999), 1499);
  });
});

describe("positions", () => {
  const p = (epoch, offset) => ({ epoch, offset });
  test("duplicates and skipped offsets", () => {
    assert.equal(advance(undefined, 7n, 3n), 0);
    assert.equal(advance(p(7n, 3n), 7n, 4n), 0);
    assert.equal(advance(p(7n, 3n), 7n, 3n), -1);
    assert.equal(advance(p(7n, 3n), 7n, 1n), -1);
    assert.equal(advance(p(7n, 3n), 7n, 6n), 2);
    assert.equal(advance(p(7n, 0n), 7n, 1n), 0);
  });
  test("a message in another epoch starts that epoch", () => {
    assert.equal(advance(p(7n, 300n), 8n, 1n), 0);
    assert.equal(advance(p(7n, 3n), 8n, 9n), 0);
  });
  test("64-bit offsets past 2^53 compare exactly", () => {
    const big = 2n ** 60n;
    assert.equal(advance(p(1n, big), 1n, big + 1n), 0);
    assert.equal(advance(p(1n, big + 1n), 1n, big + 1n), -1);
  });
});

describe("idempotency keys", () => {
  test("random 64-bit hex prefix per client, counter per publish", async () => {
    assert.match(randomHex64(), /^[0-9a-f]{16}$/);
    assert.notEqual(randomHex64(), randomHex64());
    const { FakeWebSocket, last } = fakeWebSocket();
    const a = new Herald("ws://x/ws", { token: "ann", WebSocket: FakeWebSocket });
    const b = new Herald("ws://x/ws", { token: "ann", WebSocket: FakeWebSocket, autoConnect: false });
    assert.match(a.keyPrefix, /^[0-9a-f]{16}$/);
    assert.notEqual(a.keyPrefix, b.keyPrefix);
    await connect(last());
    const p1 = a.publish("chat:a", "one");
    const p2 = a.publish("chat:a", "two", { idempotencyKey: "mine" });
    const p3 = a.publish("chat:a", "three");
    const p4 = a.publish("chat:a", "v", { volatile: true });
    const pubs = last().of("Publish");
    assert.deepEqual(
      pubs.map((f) => f.key),
      [`${a.keyPrefix}-1`, "mine", `${a.keyPrefix}-2`, null],
    );
    for (const f of pubs) last().recv(srv.reply(f.rid, 0, 1n, BigInt(f.rid)));
    await Promise.all([p1, p2, p3, p4]);
    a.close();
    b.close();
  });
});

describe("errors", () => {
  test("close codes: 4000 + code are Herald errors, RFC 6455 codes are transport closes", () => {
    const cases = [
      [4211, "Kicked", 211, true],
      [4206, "TokenExpired", 206, true],
      [4208, "SlowConsumer", 208, true],
      [4110, "Unavailable", 110, false],
      [4999, "Unknown", 999, true],
      [1000, "Unavailable", 110, false],
      [1001, "Unavailable", 110, false],
      [1006, "Unavailable", 110, false],
      [1002, "MalformedFrame", 200, true],
      [1007, "MalformedFrame", 200, true],
      [1003, "UnsupportedFrame", 202, true],
      [1009, "FrameTooLarge", 201, true],
    ];
    for (const [close, name, number, fatal] of cases) {
      const e = errorFromClose(close, "why");
      assert.ok(e instanceof HeraldError && e instanceof Error);
      assert.equal(e.code, name, `close ${close}`);
      assert.equal(e.codeNumber, number);
      assert.equal(e.fatal, fatal);
      assert.equal(e.closeCode, close);
      assert.equal(e.message, `${name}: why`);
    }
  });
  test("code names and reconnect rules", () => {
    assert.equal(errorCodeName(0), "Ok");
    assert.equal(errorCodeName(213), "UnsupportedVersion");
    assert.equal(errorCodeName(112), "Overloaded");
    assert.equal(errorCodeName(150), "Unknown");
    assert.equal(ErrorCode.Kicked, 211);
    for (const c of [205, 211, 213]) assert.equal(shouldReconnect(c, true), false);
    assert.equal(shouldReconnect(206, false), false);
    assert.equal(shouldReconnect(206, true), true);
    for (const c of [110, 200, 203, 204, 207, 208, 209, 210, 212]) assert.equal(shouldReconnect(c, false), true);
  });
});

// ---- the client against a fake server --------------------------------------

/** Opens the fake socket and answers Connect with Connected. */
async function connect(ws, opts) {
  ws.open();
  const c = ws.of("Connect").at(-1);
  assert.ok(c, "Connect sent");
  ws.recv(srv.connected(c.rid, opts));
  return c;
}

const clients = [];
afterEach(() => {
  for (const h of clients.splice(0)) h.close();
});

function client(options = {}) {
  const fake = fakeWebSocket();
  const herald = new Herald("ws://fake/ws", { token: "ann", WebSocket: fake.FakeWebSocket, reconnect: { initialDelayMs: 1, maxDelayMs: 5 }, ...options });
  clients.push(herald);
  return { herald, ...fake };
}

describe("client (fake server)", () => {
  test("Connect first, nothing else until Connected, then queued work in order", async () => {
    const { herald, last } = client({ clientName: "t" });
    const sub = herald.subscribe("chat:a");
    const subH = herald.subscribe("chat:h", { history: 5, presence: false });
    const pub = herald.publish("chat:a", "queued");
    const ws = last();
    ws.open();
    assert.deepEqual(
      ws.sent.map((f) => f.type),
      ["Connect"],
    );
    const c = ws.sent[0];
    assert.equal(c.protocol, "herald/1");
    assert.equal(c.token, "ann");
    assert.equal(c.clientName, "t");
    // A first subscribe with history is sent as Subscribe (resume entries carry none).
    assert.deepEqual(c.resume, [{ room: "chat:a", epoch: 0n, offset: 0n, presence: true }]);
    const connected = next(herald, "connected");
    ws.recv(srv.connected(c.rid));
    assert.equal((await connected).userId, "ann");
    assert.deepEqual(
      ws.sent.map((f) => f.type),
      ["Connect", "Subscribe", "Publish"],
    );
    const s = ws.of("Subscribe")[0];
    assert.equal(s.room, "chat:h");
    assert.equal(s.history, 5);
    assert.equal(s.presence, false);
    ws.recv(srv.subscribed(0, "chat:a", 5n, 2n));
    ws.recv(srv.subscribed(s.rid, "chat:h", 5n, 9n, false, [[8, "x"], [9, "y"]]));
    const ev = await within(sub.ready(), 1000);
    assert.deepEqual(ev, { room: "chat:a", epoch: 5, offset: 2, recovered: false, resumed: true, recovering: false });
    assert.equal(subH.state, "subscribed");
    ws.recv(srv.reply(ws.of("Publish")[0].rid, 0, 5n, 3n));
    assert.deepEqual(await pub, { epoch: 5, offset: 3 });
    herald.close();
  });

  test("Ping is answered with Pong and the same nonce", async () => {
    const { herald, last } = client();
    await connect(last());
    last().recv(srv.ping(2n ** 63n + 5n));
    assert.equal(last().of("Pong")[0].nonce, 2n ** 63n + 5n);
    herald.close();
  });

  test("positions: duplicates dropped, skipped counted, new epoch accepted", async () => {
    const { herald, last } = client();
    const sub = herald.subscribe("chat:a");
    await connect(last());
    last().recv(srv.subscribed(0, "chat:a", 7n, 5n));
    const got = [];
    sub.on("message", (m) => got.push([m.epoch, m.offset, m.skipped, m.text()]));
    const all = [];
    herald.on("message", (m) => all.push(m.offset));
    for (const [e, o] of [[7n, 5n], [7n, 6n], [7n, 9n], [7n, 8n], [7n, 9n], [8n, 3n], [8n, 4n]]) {
      last().recv(srv.message("chat:a", e, o, `m${o}`));
    }
    last().recv(srv.message("chat:a", 8n, 0n, "vol", { volatile: true }));
    last().recv(srv.message("user:ann", 0n, 1n, "direct"));
    assert.deepEqual(got, [
      [7, 6, 0, "m6"],
      [7, 9, 2, "m9"],
      [8, 3, 0, "m3"],
      [8, 4, 0, "m4"],
      [8, 0, 0, "vol"],
    ]);
    assert.deepEqual(all, [6, 9, 3, 4, 0, 1]);
    assert.deepEqual(sub.position, { epoch: 8, offset: 4 });
    herald.close();
  });

  test("reconnect: resume from positions, gap surfaced, publishes resent with the same key and id, queries fail", async () => {
    const { herald, last, sockets } = client();
    const sub = herald.subscribe("chat:a", { presence: false });
    herald.subscribe("chat:b", { recover: false });
    await connect(last());
    last().recv(srv.subscribed(0, "chat:a", 7n, 5n));
    last().recv(srv.subscribed(0, "chat:b", 3n, 1n));
    const p1 = herald.publish("chat:a", "one");
    const p2 = herald.publish("chat:a", "two");
    const vol = herald.publish("chat:a", "v", { volatile: true });
    const q = herald.presence("chat:a");
    const [f1, f2] = last().of("Publish");
    const states = [];
    sub.on("state", (s) => states.push(s.state));
    const reconnecting = next(herald, "reconnecting");
    const disconnected = next(herald, "disconnected");
    last().serverClose(1006);
    await assert.rejects(vol, (e) => e.code === "Unavailable");
    await assert.rejects(q, (e) => e.code === "Unavailable");
    assert.equal((await disconnected).willReconnect, true);
    assert.equal((await reconnecting).attempt, 0);
    assert.equal(herald.state, "disconnected");
    assert.deepEqual(states, ["subscribing"]);
    await waitFor(() => sockets.length === 2, 1000, "a new socket");
    const ws = last();
    ws.open();
    const c = ws.of("Connect")[0];
    assert.deepEqual(c.resume, [
      { room: "chat:a", epoch: 7n, offset: 5n, presence: false },
      { room: "chat:b", epoch: 0n, offset: 0n, presence: true },
    ]);
    // A publish made in the "connected" handler goes after the resent ones.
    let p3;
    herald.once("connected", (e) => {
      assert.equal(e.reconnected, true);
      p3 = herald.publish("chat:a", "three");
    });
    ws.recv(srv.connected(c.rid));
    const resent = ws.of("Publish");
    assert.deepEqual(
      resent.map((f) => [f.rid, f.key, f.text]),
      [[f1.rid, f1.key, "one"], [f2.rid, f2.key, "two"], [resent[2].rid, `${herald.keyPrefix}-3`, "three"]],
    );
    assert.deepEqual(resent[0].bytes, f1.bytes, "resent byte for byte");
    const gap = next(sub, "recovered");
    ws.recv(srv.subscribed(0, "chat:a", 9n, 2n, false));
    const g = await gap;
    assert.equal(g.recovered, false);
    assert.equal(g.resumed, true);
    assert.equal(g.recovering, true);
    ws.recv(srv.reply(f1.rid, 0, 7n, 6n));
    ws.recv(srv.reply(f2.rid, 0, 7n, 7n));
    ws.recv(srv.reply(resent[2].rid, 0, 9n, 3n));
    assert.deepEqual(await Promise.all([p1, p2, p3]), [
      { epoch: 7, offset: 6 },
      { epoch: 7, offset: 7 },
      { epoch: 9, offset: 3 },
    ]);
    herald.close();
  });

  test("recovered resume: history replay deduplicated against the live copy", async () => {
    const { herald, last, sockets } = client();
    const sub = herald.subscribe("chat:a");
    await connect(last());
    last().recv(srv.subscribed(0, "chat:a", 7n, 43n));
    last().serverClose(1006);
    await waitFor(() => sockets.length === 2, 1000, "a new socket");
    const c = await connect(last());
    assert.deepEqual(c.resume[0], { room: "chat:a", epoch: 7n, offset: 43n, presence: true });
    const got = [];
    sub.on("message", (m) => got.push(m.offset));
    let gapSeen = false;
    sub.on("recovered", () => (gapSeen = true));
    last().recv(srv.subscribed(0, "chat:a", 7n, 45n, true, [[44, "bye"], [45, "x"]]));
    last().recv(srv.message("chat:a", 7n, 45n, "x"));
    last().recv(srv.message("chat:a", 7n, 46n, "y"));
    assert.deepEqual(got, [44, 45, 46]);
    assert.equal(gapSeen, false);
    herald.close();
  });

  test("heartbeat: a server silent for 3 intervals is dropped and the client reconnects", async () => {
    const { herald, last, sockets } = client();
    await connect(last(), { heartbeatMs: 40 });
    const t0 = Date.now();
    const d = await next(herald, "disconnected", () => true, 2000);
    const took = Date.now() - t0;
    assert.equal(d.error.code, "IdleTimeout");
    assert.ok(took >= 110 && took < 1000, `dropped after ${took} ms`);
    assert.equal(sockets[0].closed, 1000);
    await waitFor(() => sockets.length === 2, 1000, "a new socket");
    herald.close();
  });

  test("AuthFailed, UnsupportedVersion and Kicked stop reconnecting; queued work rejects with the code", async () => {
    for (const [code, name, connected] of [[205, "AuthFailed", false], [213, "UnsupportedVersion", false], [211, "Kicked", true]]) {
      const { herald, last, sockets } = client();
      const ws = last();
      if (connected) await connect(ws);
      else ws.open();
      const pub = herald.publish("chat:a", "x");
      const closed = next(herald, "closed");
      const errors = [];
      herald.on("error", (e) => errors.push(e.code));
      ws.recv(srv.error(connected ? 0 : ws.sent[0].rid, code, "no"));
      const ev = await closed;
      assert.equal(ev.error.code, name);
      assert.equal(ev.error.fatal, true);
      assert.deepEqual(errors, [name]);
      await assert.rejects(pub, (e) => e.code === name);
      await assert.rejects(herald.publish("chat:a", "y"), (e) => e.code === name);
      assert.equal(herald.state, "closed");
      assert.equal(sockets.length, 1);
    }
  });

  test("close codes without an Error frame map the same way", async () => {
    const { herald, last } = client();
    await connect(last());
    const d = next(herald, "disconnected");
    last().serverClose(4211, "kicked");
    const e = (await d).error;
    assert.equal(e.code, "Kicked");
    assert.equal(e.closeCode, 4211);
    assert.equal(herald.state, "closed");
  });

  test("TokenExpired: static token stops; getToken is asked again and must give a fresh token", async () => {
    {
      const { herald, last } = client();
      await connect(last());
      const d = next(herald, "disconnected");
      last().recv(srv.error(0, 206, "expired"));
      assert.equal((await d).willReconnect, false);
      assert.equal(herald.state, "closed");
    }
    {
      let n = 0;
      const { herald, last, sockets } = client({ token: undefined, getToken: async () => `t${++n}` });
      await waitFor(() => sockets.length === 1, 1000, "a socket");
      const c1 = await connect(last());
      assert.equal(c1.token, "t1");
      const d = next(herald, "disconnected");
      last().recv(srv.error(0, 206, "expired"));
      assert.equal((await d).willReconnect, true);
      await waitFor(() => sockets.length === 2, 1000, "a new socket");
      last().open();
      assert.equal(last().of("Connect")[0].token, "t2");
      assert.equal(n, 2);
      herald.close();
    }
    {
      const { herald, last, sockets } = client({ token: undefined, getToken: () => "same" });
      await waitFor(() => sockets.length === 1, 1000, "a socket");
      await connect(last());
      const closed = next(herald, "closed");
      last().recv(srv.error(0, 206, "expired"));
      assert.equal((await closed).error.code, "TokenExpired");
      assert.equal(sockets.length, 1);
    }
  });

  test("GoAway: reconnect after reconnect_after_ms x [1, 1.5); 0 means stay away", async () => {
    {
      const { herald, last } = client();
      await connect(last());
      const r = next(herald, "reconnecting");
      last().recv(srv.goAway(209, 200));
      const ev = await r;
      assert.equal(ev.error.code, "ServerShutdown");
      assert.ok(ev.delayMs >= 200 && ev.delayMs < 300, `${ev.delayMs}`);
      herald.close();
    }
    {
      const { herald, last } = client();
      await connect(last());
      const closed = next(herald, "closed");
      last().recv(srv.goAway(211, 0));
      assert.equal((await closed).error.code, "Kicked");
    }
  });

  test("offline queue is bounded; volatile publishes fail at once when not connected", async () => {
    const { herald } = client({ autoConnect: false, maxQueuedPublishes: 2 });
    const a = herald.publish("chat:a", "1");
    const b = herald.publish("chat:a", "2");
    await assert.rejects(herald.publish("chat:a", "3"), (e) => e.code === "Unavailable" && /queue/.test(e.message));
    await assert.rejects(herald.publish("chat:a", "v", { volatile: true }), (e) => e.code === "Unavailable");
    const bytes = client({ autoConnect: false, maxQueuedBytes: 300 }).herald;
    const c = bytes.publish("chat:a", "x".repeat(100));
    await assert.rejects(bytes.publish("chat:a", "y".repeat(100)), (e) => e.code === "Unavailable");
    herald.close();
    bytes.close();
    for (const p of [a, b, c]) await assert.rejects(p, (e) => e.message === "Unavailable: client closed");
  });

  test("frames over max_frame_bytes are refused locally", async () => {
    const { herald, last } = client();
    await connect(last(), { maxFrameBytes: 1024 });
    await assert.rejects(herald.publish("chat:a", new Uint8Array(2000)), (e) => e.code === "PayloadTooLarge");
    assert.equal(last().of("Publish").length, 0);
    herald.close();
  });

  test("request timeout rejects with Timeout; requests wait for the connection", async () => {
    const { herald, last } = client({ requestTimeoutMs: 60 });
    const early = herald.history("chat:a");
    await connect(last());
    assert.equal(last().of("HistoryQuery").length, 1, "queued query sent after Connected");
    await assert.rejects(early, (e) => e.code === "Timeout" && e.codeNumber === 111);
    await assert.rejects(herald.presence("chat:a"), (e) => e.code === "Timeout");
    herald.close();
  });

  test("request errors: Reply codes and a refused resume entry", async () => {
    const { herald, last } = client();
    const sub = herald.subscribe("chat:secret");
    await connect(last());
    const err = next(sub, "error");
    last().recv(srv.error(0, 101, "not for you", "chat:secret"));
    assert.equal((await err).code, "Forbidden");
    assert.equal(sub.state, "unsubscribed");
    assert.equal(herald.getSubscription("chat:secret"), undefined);
    await assert.rejects(sub.ready(), (e) => e.code === "Forbidden");
    const n = herald.notifications();
    last().recv(srv.reply(last().sent.at(-1).rid, 110, 0n, 0n, "not yet"));
    await assert.rejects(n, (e) => e.code === "Unavailable" && e.codeNumber === 110 && !e.fatal);
    herald.close();
  });

  test("unread: the count after Connected is an event and kept; a page answers its query and updates it", async () => {
    const { herald, last } = client();
    assert.equal(herald.unread, undefined);
    await connect(last());
    const u = next(herald, "unread");
    last().recv(srv.notificationsPage(0, 4));
    assert.deepEqual(await u, { unread: 4 });
    assert.equal(herald.unread, 4);
    const page = herald.notifications({ limit: 2 });
    const q = last().sent.at(-1);
    assert.equal(q.type, "NotificationsQuery");
    last().recv(srv.notificationsPage(q.rid, 3, [[9, "b"], [7, "a"]], true));
    const p = await page;
    assert.deepEqual(
      p.notifications.map((n) => [n.id, n.kind]),
      [
        [9, "b"],
        [7, "a"],
      ],
    );
    assert.equal(p.hasMore, true);
    assert.equal(herald.unread, 3);
    herald.close();
  });

  test("protocol errors: missing identifier, client-only body; unknown members are skipped", async () => {
    const { herald, last, sockets } = client();
    await connect(last());
    last().recv(srv.raw(0, 40)); // a union member newer than this client
    assert.equal(herald.state, "connected");
    const d = next(herald, "disconnected");
    last().recv(srv.raw(0, 4)); // Publish, from a server
    assert.equal((await d).error.code, "UnsupportedFrame");
    await waitFor(() => sockets.length === 2, 1000, "a new socket");
    await connect(last());
    const d2 = next(herald, "disconnected");
    last().recv(new Uint8Array([8, 0, 0, 0, 88, 88, 88, 88, 0, 0, 0, 0]));
    assert.equal((await d2).error.code, "MalformedFrame");
    herald.close();
  });

  test("unsubscribe: Unsubscribe sent, later messages ignored, resume entry answered for a left room is left", async () => {
    const { herald, last, sockets } = client();
    const sub = herald.subscribe("chat:a");
    await connect(last());
    last().recv(srv.subscribed(0, "chat:a", 1n, 0n));
    const got = [];
    herald.on("message", (m) => got.push(m.room));
    sub.unsubscribe();
    assert.equal(sub.state, "unsubscribed");
    const u = last().of("Unsubscribe")[0];
    assert.equal(u.room, "chat:a");
    last().recv(srv.message("chat:a", 1n, 1n, "late"));
    assert.deepEqual(got, []);
    last().recv(srv.reply(u.rid));
    // A room left while the Connect resuming it is in flight.
    const b = herald.subscribe("chat:b");
    last().recv(srv.subscribed(last().of("Subscribe")[0].rid, "chat:b", 1n, 0n));
    last().serverClose(1006);
    await waitFor(() => sockets.length === 2, 1000, "a new socket");
    last().open();
    b.unsubscribe();
    last().recv(srv.connected(last().of("Connect")[0].rid));
    last().recv(srv.subscribed(0, "chat:b", 1n, 0n));
    assert.equal(last().of("Unsubscribe")[0].room, "chat:b");
    herald.close();
  });

  test("reconnect gives up after maxAttempts consecutive failures", async () => {
    const { herald, last, sockets } = client({ reconnect: { initialDelayMs: 1, maxDelayMs: 2, maxAttempts: 3 } });
    const closed = next(herald, "closed");
    const attempts = [];
    herald.on("reconnecting", (e) => attempts.push(e.attempt));
    last().serverClose(1006);
    await waitFor(() => sockets.length === 2, 1000, "socket 2");
    last().serverClose(1006);
    await waitFor(() => sockets.length === 3, 1000, "socket 3");
    last().serverClose(1006);
    assert.equal((await closed).error.code, "Unavailable");
    assert.deepEqual(attempts, [1, 2]);
  });
});
