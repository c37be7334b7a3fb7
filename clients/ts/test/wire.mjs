// Server-side frames for tests with a fake WebSocket, built with the same
// generated bindings (compiled into dist/) the client uses.
import { Builder, ByteBuffer } from "flatbuffers";
import * as w from "../dist/schemas/generated/ts/herald/v1.js";

const { Body, Frame } = w;

function frame(rid, type, build) {
  const b = new Builder(256);
  const body = build(b);
  w.Frame.finishFrameBuffer(b, w.Frame.createFrame(b, rid, type, body));
  return b.asUint8Array().slice();
}

const s = (b, v) => (v == null ? 0 : b.createString(v));

export const srv = {
  connected: (rid, { userId = "ann", heartbeatMs = 15000, maxFrameBytes = 65536, maxRooms = 256 } = {}) =>
    frame(rid, Body.Connected, (b) => {
      const limits = w.Limits.createLimits(b, maxFrameBytes, 32768, maxRooms, 128, 50, 100, 1 << 20);
      const [sid, nid, uid] = [s(b, "s-1"), s(b, "n1"), s(b, userId)];
      w.Connected.startConnected(b);
      w.Connected.addSessionId(b, sid);
      w.Connected.addNodeId(b, nid);
      w.Connected.addUserId(b, uid);
      w.Connected.addServerTimeMs(b, BigInt(Date.now()));
      w.Connected.addHeartbeatIntervalMs(b, heartbeatMs);
      w.Connected.addLimits(b, limits);
      return w.Connected.endConnected(b);
    }),
  reply: (rid, code = 0, epoch = 0n, offset = 0n, message) =>
    frame(rid, Body.Reply, (b) => w.Reply.createReply(b, code, s(b, message), epoch, offset)),
  error: (rid, code, message = "", room) => frame(rid, Body.Error, (b) => w.Error.createError(b, code, s(b, message), s(b, room))),
  goAway: (code, reconnectAfterMs, reason = "bye") =>
    frame(0, Body.GoAway, (b) => w.GoAway.createGoAway(b, code, s(b, reason), reconnectAfterMs)),
  ping: (nonce) => frame(0, Body.Ping, (b) => w.Ping.createPing(b, nonce)),
  message: (room, epoch, offset, text = "", { volatile = false, publisher = "bob" } = {}) =>
    frame(0, Body.Message, (b) => message(b, room, epoch, offset, text, volatile, publisher)),
  subscribed: (rid, room, epoch, offset, recovered = false, history = []) =>
    frame(rid, Body.Subscribed, (b) => {
      const msgs = history.map(([o, t]) => message(b, room, epoch, BigInt(o), t, false, "bob"));
      const vec = msgs.length ? w.Subscribed.createHistoryVector(b, msgs) : 0;
      const r = b.createString(room);
      w.Subscribed.startSubscribed(b);
      w.Subscribed.addRoom(b, r);
      w.Subscribed.addEpoch(b, epoch);
      w.Subscribed.addOffset(b, offset);
      w.Subscribed.addRecovered(b, recovered);
      if (vec) w.Subscribed.addHistory(b, vec);
      return w.Subscribed.endSubscribed(b);
    }),
  /** A `NotificationsPage` (request id 0: the unread count after Connected) with notifications `[id, kind]`. */
  notificationsPage: (rid, unread, notes = [], hasMore = false) =>
    frame(rid, Body.NotificationsPage, (b) => {
      const items = notes.map(([id, kind]) => w.Notification.createNotification(b, BigInt(id), b.createString(kind), 0, 0, 0, 0n, false));
      const vec = items.length ? w.NotificationsPage.createNotificationsVector(b, items) : 0;
      return w.NotificationsPage.createNotificationsPage(b, vec, BigInt(unread), hasMore);
    }),
  /** A frame whose body type is `type` (e.g. a client-only or unknown member). */
  raw: (rid, type) => frame(rid, type, (b) => w.Pong.createPong(b, 0n)),
};

/** Client frames, for pages that speak to a node without the client. */
export const cli = {
  /** `Connect` resuming `room` from nothing (a plain subscribe). */
  connect: (token, room) => {
    const b = new Builder(256);
    const entry = w.RoomPosition.createRoomPosition(b, b.createString(room), 0n, 0n, false);
    const resume = w.Connect.createResumeVector(b, [entry]);
    const connect = w.Connect.createConnect(b, b.createString("herald/1"), b.createString(token), 0, 0, resume);
    w.Frame.finishFrameBuffer(b, w.Frame.createFrame(b, 1, Body.Connect, connect));
    return b.asUint8Array().slice();
  },
};

function message(b, room, epoch, offset, text, volatile, publisher) {
  const p = b.createByteVector(new TextEncoder().encode(text));
  return w.Message.createMessage(b, b.createString(room), epoch, offset, b.createString(publisher), 0n, p, 0, volatile);
}

/** Decodes a frame the client sent into a plain object. */
export function decode(bytes) {
  const f = Frame.getRootAsFrame(new ByteBuffer(bytes));
  const type = Body[f.bodyType()];
  const out = { rid: f.requestId(), type, bytes };
  const get = (T) => f.body(new T());
  switch (f.bodyType()) {
    case Body.Connect: {
      const c = get(w.Connect);
      out.protocol = c.protocol();
      out.token = c.token();
      out.clientName = c.clientName();
      out.resume = [];
      for (let i = 0; i < c.resumeLength(); i++) {
        const r = c.resume(i);
        out.resume.push({ room: r.room(), epoch: r.epoch(), offset: r.offset(), presence: r.presence() });
      }
      break;
    }
    case Body.Subscribe: {
      const x = get(w.Subscribe);
      Object.assign(out, { room: x.room(), history: x.history(), recoverEpoch: x.recoverEpoch(), recoverOffset: x.recoverOffset(), presence: x.presence() });
      break;
    }
    case Body.Publish: {
      const x = get(w.Publish);
      Object.assign(out, { room: x.room(), text: new TextDecoder().decode(x.payloadArray() ?? new Uint8Array()), volatile: x.volatile(), key: x.idempotencyKey() });
      break;
    }
    case Body.Pong:
      out.nonce = get(w.Pong).nonce();
      break;
    case Body.Unsubscribe:
    case Body.PresenceQuery:
      out.room = get(w.Unsubscribe).room();
      break;
    case Body.Typing: {
      const x = get(w.Typing);
      Object.assign(out, { room: x.room(), active: x.active() });
      break;
    }
  }
  return out;
}

/**
 * A fake WebSocket class: every instance is recorded in `sockets`; the test
 * plays the server with `open()`, `recv(frame)` and `serverClose(code)`.
 */
export function fakeWebSocket() {
  const sockets = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.binaryType = "blob";
      this.sent = [];
      this.closed = undefined;
      this.onopen = this.onmessage = this.onclose = this.onerror = null;
      sockets.push(this);
    }
    send(data) {
      if (this.closed !== undefined) return;
      this.sent.push(decode(new Uint8Array(data)));
    }
    close(code = 1000) {
      this.closed ??= code;
    }
    open() {
      this.onopen?.({});
    }
    recv(bytes) {
      const ab = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
      this.onmessage?.({ data: ab });
    }
    serverClose(code = 1006, reason = "") {
      this.closed ??= code;
      this.onclose?.({ code, reason });
    }
    /** The sent frames of a type. */
    of(type) {
      return this.sent.filter((f) => f.type === type);
    }
  }
  return { FakeWebSocket, sockets, last: () => sockets[sockets.length - 1] };
}

/** Body type name, request id and (for Message/Reply) offset of a server frame. */
export function peek(bytes) {
  const f = Frame.getRootAsFrame(new ByteBuffer(bytes));
  const out = { rid: f.requestId(), type: Body[f.bodyType()] };
  if (f.bodyType() === Body.Message) out.offset = f.body(new w.Message()).offset();
  if (f.bodyType() === Body.Reply) out.offset = f.body(new w.Reply()).offset();
  return out;
}

/**
 * A WebSocket class (the platform's) that records every server frame in
 * `log` (via `peek`) before the client sees it.
 */
export function tapWebSocket(log) {
  return class TapWebSocket extends globalThis.WebSocket {
    set onmessage(fn) {
      super.onmessage = fn && ((ev) => {
        if (ev.data instanceof ArrayBuffer) log.push(peek(new Uint8Array(ev.data)));
        fn(ev);
      });
    }
    get onmessage() {
      return super.onmessage;
    }
  };
}
