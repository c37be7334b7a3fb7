import {
  Connected,
  Error as ErrorFrame,
  GoAway,
  HistoryPage as HistoryPageFrame,
  Message,
  Notification,
  NotificationsPage as NotificationsPageFrame,
  Ping,
  PresenceJoin,
  PresenceSnapshot,
  Reply,
  Subscribed,
  TypingEvent as TypingFrame,
} from "../../../schemas/generated/ts/herald/v1.js";
import { backoffDelay, goAwayDelay } from "./backoff.js";
import {
  Body,
  ByteBuffer,
  Frame,
  encodeConnect,
  encodeHistoryQuery,
  encodeMarkRead,
  encodeAnalyticsEvent,
  encodeNotificationsQuery,
  encodePong,
  encodePresenceQuery,
  encodePublish,
  encodeSubscribe,
  encodeTyping,
  encodeUnsubscribe,
  type ResumeEntry,
} from "./codec.js";
import { Emitter } from "./emitter.js";
import { ErrorCode, HeraldError, errorFromClose, shouldReconnect } from "./errors.js";
import { readMessage, readNotification } from "./message.js";
import { advance, randomHex64, type Pos } from "./position.js";
import type {
  ConnectedEvent,
  ConnectionState,
  HeraldEvents,
  HeraldMessage,
  HeraldOptions,
  HistoryOptions,
  HistoryPage,
  Limits,
  MarkReadOptions,
  NotificationsOptions,
  NotificationsPage,
  Position,
  PresenceInfo,
  PublishOptions,
  SubscribeOptions,
  SubscribedEvent,
  SubscriptionEvents,
  SubscriptionState,
  SubscriptionStateEvent,
  WebSocketConstructor,
  WebSocketLike,
} from "./types.js";

/** This package's version, sent as `Connect.client_version` by default. */
export const VERSION = "0.1.0";

const enc = new TextEncoder();
const liveMessage = new Message(); // reader reused for every delivered Message (decoding is not reentrant)
const ID = [72, 82, 76, 49]; // "HRL1"

// Kinds of pending requests.
const PUB = 0; // non-volatile publish: kept and resent until answered
const VOL = 1; // volatile publish: fails when the link drops
const SUB = 2; // subscribe
const UNSUB = 3; // unsubscribe
const REQ = 4; // query or mark-read

type Timer = ReturnType<typeof setTimeout>;

interface Pending {
  k: number;
  /** The encoded frame, kept until sent (and, for publishes, until answered). */
  f?: Uint8Array;
  sent: boolean;
  room?: string;
  t?: Timer;
  /** Expected answer body (REQ). */
  want?: Body;
  parse?: (body: never) => unknown;
  res?: (v: never) => void;
  rej?: (e: HeraldError) => void;
}

function readPresence(p: PresenceSnapshot): PresenceInfo {
  const users: string[] = [];
  for (let i = 0, n = p.usersLength(); i < n; i++) users.push(p.users(i));
  return { room: p.room() ?? "", users, count: Number(p.count()), truncated: p.truncated() };
}

function readLimits(c: Connected): Limits {
  const l = c.limits();
  return {
    maxFrameBytes: l ? l.maxFrameBytes() : 65536,
    maxPayloadBytes: l ? l.maxPayloadBytes() : 32768,
    maxRooms: l ? l.maxRooms() : 256,
    maxRoomNameBytes: l ? l.maxRoomNameBytes() : 128,
    publishRatePerSec: l ? l.publishRatePerSec() : 0,
    publishBurst: l ? l.publishBurst() : 0,
    maxOutboundBytes: l ? l.maxOutboundBytes() : 0,
  };
}

function big(n: number | undefined): bigint {
  return BigInt(Math.max(0, Math.floor(n ?? 0)));
}

function utf8(data: Uint8Array | string): Uint8Array {
  return typeof data === "string" ? enc.encode(data) : data;
}

/**
 * A Herald client: one logical connection that survives reconnects.
 *
 * ```ts
 * const herald = new Herald("ws://127.0.0.1:8080/ws", { token: "ann" });
 * const sub = herald.subscribe("chat:lobby", { history: 20 });
 * sub.on("message", (m) => console.log(m.publisher, m.text()));
 * await herald.publish("chat:lobby", "hello");
 * ```
 */
/** The WebSocket subprotocol offered to the node. */
const PROTOCOL = "herald.v1";

export class Herald extends Emitter<HeraldEvents> {
  /** Encodes a value as JSON in UTF-8, for `publish`. */
  static json(value: unknown): Uint8Array {
    return enc.encode(JSON.stringify(value));
  }

  /** Encodes a string in UTF-8. */
  static text(value: string): Uint8Array {
    return enc.encode(value);
  }

  /** The WebSocket URL, e.g. `ws://127.0.0.1:8080/ws`. */
  readonly url: string;
  private _o: HeraldOptions;
  private _WS: WebSocketConstructor;
  private _state: ConnectionState = "idle";
  private _ws: WebSocketLike | null = null;
  private _gen = 0;
  private _attempt = 0;
  private _nextRid = 1;
  private _connectRid = 0;
  private _pending = new Map<number, Pending>();
  private _subs = new Map<string, Subscription>();
  private _leaving = new Set<string>();
  private _keyPrefix = randomHex64();
  private _keyCount = 0;
  private _session: ConnectedEvent | undefined;
  private _limits: Limits | undefined;
  private _ever = false;
  private _token = "";
  private _expiredToken: string | undefined;
  private _lastRecv = 0;
  private _hb = 0;
  private _connectTimer: Timer | undefined;
  private _idleTimer: Timer | undefined;
  private _retryTimer: Timer | undefined;
  private _terminal: HeraldError | undefined;
  private _unread: number | undefined;

  constructor(url: string, options: HeraldOptions = {}) {
    super();
    this.url = url;
    this._o = options;
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) {
      throw new TypeError(
        "herald: no WebSocket implementation: pass { WebSocket } (e.g. from the `ws` package) or run Node 22+ (Node 20: --experimental-websocket)",
      );
    }
    this._WS = WS;
    if (options.autoConnect !== false) this.connect();
  }

  /** Connection state. */
  get state(): ConnectionState {
    return this._state;
  }

  /** What the server said in the current (or last) `Connected`. */
  get session(): ConnectedEvent | undefined {
    return this._session;
  }

  /**
   * The user's unread notification count as the node last told it: after
   * each connect (the `unread` event) and with every `notifications()` page.
   * Undefined until then.
   */
  get unread(): number | undefined {
    return this._unread;
  }

  /** The idempotency key prefix of this client (random per instance). */
  get keyPrefix(): string {
    return this._keyPrefix;
  }

  /** The subscription to a room, if any. */
  getSubscription(room: string): Subscription | undefined {
    return this._subs.get(room);
  }

  /** Every current subscription. */
  subscriptions(): Subscription[] {
    return [...this._subs.values()];
  }

  /** Starts connecting (after `autoConnect: false`, or again after `close()` or a fatal error). */
  connect(): void {
    if (this._state !== "idle" && this._state !== "closed") return;
    this._terminal = undefined;
    this._attempt = 0;
    this._expiredToken = undefined;
    this._ever = false;
    void this._open();
  }

  /**
   * Closes the connection for good: pending requests and queued publishes
   * reject, subscriptions end. `connect()` starts a new session.
   */
  close(): void {
    if (this._state === "closed") return;
    const err = new HeraldError(ErrorCode.Unavailable, "client closed");
    const was = this._state === "connected";
    this._detach();
    if (was) this._emit("disconnected", { error: err, willReconnect: false });
    this._stop(err, undefined);
  }

  // ---- rooms ----------------------------------------------------------------

  /**
   * Subscribes to a room (now if connected, else with the next connection)
   * and returns its `Subscription`; the same object if already subscribed.
   */
  subscribe(room: string, options: SubscribeOptions = {}): Subscription {
    let s = this._subs.get(room);
    if (s) return s;
    s = new Subscription(this, room, options);
    if (options.since) s._pos = { epoch: big(options.since.epoch), offset: big(options.since.offset) };
    this._subs.set(room, s);
    this._leaving.delete(room);
    if (this._state === "connected") this._sendSubscribe(s);
    return s;
  }

  /** @internal */
  _unsubscribe(s: Subscription): void {
    if (this._subs.get(s.room) !== s) return;
    this._subs.delete(s.room);
    if (s._rid) {
      const p = this._pending.get(s._rid);
      if (p) clearTimeout(p.t);
      this._pending.delete(s._rid);
      s._rid = 0;
    }
    if (this._state === "connected") {
      const rid = this._id();
      this._leaving.add(s.room);
      this._pending.set(rid, { k: UNSUB, sent: true, room: s.room, t: this._timer(rid) });
      this._send(encodeUnsubscribe(rid, s.room));
    }
    s._set({ state: "unsubscribed" });
  }

  private _sendSubscribe(s: Subscription): void {
    const rid = this._id();
    const o = s.options;
    const p = (s._asked = this._recoverFrom(s));
    s._rid = rid;
    this._pending.set(rid, { k: SUB, sent: true, room: s.room, t: this._timer(rid) });
    this._send(encodeSubscribe(rid, s.room, o.history ?? 0, p ? p.epoch : 0n, p ? p.offset : 0n, o.presence !== false));
  }

  /** The position to recover from: the last one seen (or `since` on the first subscribe), unless `recover: false`. */
  private _recoverFrom(s: Subscription): Pos | undefined {
    return (s.options.recover !== false || !s._confirmed) && s._pos && s._pos.epoch ? s._pos : undefined;
  }

  // ---- publish and requests ----------------------------------------------------

  /**
   * Publishes to a room; resolves with the stored position once the server
   * acknowledges (offset 0 for volatile publishes). Non-volatile publishes
   * made while disconnected wait for the next connection (bounded by
   * `maxQueuedPublishes`/`maxQueuedBytes`, else rejected with Unavailable);
   * unacknowledged ones are resent after a reconnect with the same
   * idempotency key. Volatile publishes reject at once when not connected.
   */
  publish(room: string, data: Uint8Array | string, options: PublishOptions = {}): Promise<Position> {
    if (this._state === "closed") return this._rejectClosed();
    const vol = !!options.volatile;
    const connected = this._state === "connected";
    if (vol && !connected) return Promise.reject(new HeraldError(ErrorCode.Unavailable, "not connected", room));
    const rid = this._id();
    const key = options.idempotencyKey ?? (vol ? undefined : `${this._keyPrefix}-${++this._keyCount}`);
    const f = encodePublish(rid, room, utf8(data), options.contentType, vol, key);
    const max = this._limits ? this._limits.maxFrameBytes : 65536;
    if (f.length > max) {
      return Promise.reject(new HeraldError(ErrorCode.PayloadTooLarge, `frame of ${f.length} bytes exceeds max_frame_bytes ${max}`, room));
    }
    if (!connected) {
      let n = 0;
      let bytes = f.length;
      for (const p of this._pending.values()) {
        if (p.k === PUB && !p.sent && p.f) {
          n++;
          bytes += p.f.length;
        }
      }
      if (n >= (this._o.maxQueuedPublishes ?? 1000) || bytes > (this._o.maxQueuedBytes ?? 1 << 20)) {
        return Promise.reject(new HeraldError(ErrorCode.Unavailable, "offline publish queue is full", room));
      }
    }
    return new Promise<Position>((res, rej) => {
      const p: Pending = { k: vol ? VOL : PUB, f, sent: false, room, res, rej, parse: (r: Reply): Position => ({ epoch: Number(r.epoch()), offset: Number(r.offset()) }) };
      this._pending.set(rid, p);
      if (connected) this._transmit(rid, p);
    });
  }

  /** Sends a typing indicator (`TypingEvent` to the other subscribers); returns false when not connected. */
  typing(room: string, active = true): boolean {
    if (this._state !== "connected") return false;
    this._send(encodeTyping(room, active));
    return true;
  }

  /** Who is in a room (`PresenceQuery`). */
  presence(room: string): Promise<PresenceInfo> {
    return this._request((rid) => encodePresenceQuery(rid, room), Body.PresenceSnapshot, readPresence, room);
  }

  /** A page of a room's stored history (`HistoryQuery`), oldest first. */
  history(room: string, options: HistoryOptions = {}): Promise<HistoryPage> {
    return this._request(
      (rid) => encodeHistoryQuery(rid, room, big(options.before), big(options.after), options.limit ?? 50),
      Body.HistoryPage,
      (h: HistoryPageFrame): HistoryPage => {
        const messages: HeraldMessage[] = [];
        let last: Pos | undefined;
        const m = new Message();
        for (let i = 0, n = h.messagesLength(); i < n; i++) {
          h.messages(i, m);
          const e = m.epoch();
          const o = m.offset();
          messages.push(readMessage(m, e, o, Math.max(0, advance(last, e, o))));
          last = { epoch: e, offset: o };
        }
        return { room: h.room() ?? room, epoch: Number(h.epoch()), messages, hasMore: h.hasMore() };
      },
      room,
    );
  }

  /**
   * A page of the user's stored notifications (`NotificationsQuery`), newest
   * first, with the unread count; page back with `beforeId` = the smallest
   * id seen while `hasMore`. The user is the token's: a session only ever
   * reads its own inbox. Rejects Unavailable/Overloaded when the node's
   * storage cannot answer.
   */
  notifications(options: NotificationsOptions = {}): Promise<NotificationsPage> {
    return this._request(
      (rid) => encodeNotificationsQuery(rid, options.unreadOnly !== false, big(options.beforeId), options.limit ?? 50),
      Body.NotificationsPage,
      (p: NotificationsPageFrame): NotificationsPage => {
        const notifications = [];
        for (let i = 0, n = p.notificationsLength(); i < n; i++) notifications.push(readNotification(p.notifications(i, new Notification())!));
        return { notifications, unread: Number(p.unread()), hasMore: p.hasMore() };
      },
    );
  }

  /**
   * Marks the user's notifications read (`NotificationsMarkRead`): `ids` (at
   * most 1,000) and every one with id <= `upTo`. Resolves once stored.
   */
  markRead(options: MarkReadOptions = {}): Promise<void> {
    return this._request(
      (rid) => encodeMarkRead(rid, (options.ids ?? []).map((i) => big(i)), big(options.upTo)),
      Body.Reply,
      (): void => undefined,
    );
  }

  /**
   * Records an analytics event (`AnalyticsEvent`: a page view, a click, a
   * game event) with its value (default 1) and tags, stamped and stored by
   * the node and rolled up per minute. Resolves once stored (name up to 128
   * bytes, at most 16 tags of 128 bytes each).
   */
  track(name: string, value = 1, tags: Record<string, string> = {}): Promise<void> {
    return this._request((rid) => encodeAnalyticsEvent(rid, name, value, tags), Body.Reply, (): void => undefined);
  }

  /**
   * Sends a request, now if connected or with the next connection; the
   * timeout runs from the call. A request sent on a link that drops rejects
   * with Unavailable.
   */
  private _request<T, B>(make: (rid: number) => Uint8Array, want: Body, parse: (body: B) => T, room?: string): Promise<T> {
    if (this._state === "closed") return this._rejectClosed();
    const rid = this._id();
    const f = make(rid);
    return new Promise<T>((res, rej) => {
      const p: Pending = { k: REQ, f, sent: false, want, parse: parse as (b: never) => unknown, res, rej, t: this._timer(rid) };
      if (room !== undefined) p.room = room;
      this._pending.set(rid, p);
      if (this._state === "connected") this._transmit(rid, p);
    });
  }

  private _rejectClosed<T>(): Promise<T> {
    return Promise.reject(this._terminal ?? new HeraldError(ErrorCode.Unavailable, "client closed"));
  }

  private _id(): number {
    let id: number;
    do {
      id = this._nextRid;
      this._nextRid = id >= 0xffffffff ? 1 : id + 1;
    } while (this._pending.has(id) || id === this._connectRid);
    return id;
  }

  private _timer(rid: number): Timer {
    return setTimeout(() => this._timeout(rid), this._o.requestTimeoutMs ?? 10000);
  }

  private _transmit(rid: number, p: Pending): void {
    p.sent = true;
    if (p.f) this._send(p.f);
    if (p.k === PUB || p.k === VOL) {
      p.t = this._timer(rid);
    } else p.f = undefined;
  }

  private _send(f: Uint8Array): void {
    try {
      this._ws?.send(f);
    } catch {
      // The close event follows.
    }
  }

  private _timeout(rid: number): void {
    const p = this._pending.get(rid);
    if (!p) return;
    this._pending.delete(rid);
    const err = new HeraldError(ErrorCode.Timeout, "no answer within the request timeout", p.room);
    if (p.k === SUB) {
      const s = this._subs.get(p.room ?? "");
      if (s && s._rid === rid) this._failSub(s, err);
    } else if (p.k === UNSUB) this._leaving.delete(p.room ?? "");
    else p.rej?.(err);
  }

  // ---- connection lifecycle -----------------------------------------------------

  private async _open(): Promise<void> {
    const gen = ++this._gen;
    this._state = "connecting";
    let token: string;
    try {
      token = this._o.getToken ? await this._o.getToken() : (this._o.token ?? "");
    } catch (e) {
      if (gen !== this._gen) return;
      const err = e instanceof HeraldError ? e : new HeraldError(ErrorCode.Unavailable, `getToken failed: ${String(e)}`);
      this._emit("error", err);
      return this._lost(err);
    }
    if (gen !== this._gen) return;
    if (this._expiredToken !== undefined && token === this._expiredToken) {
      return this._lost(new HeraldError(ErrorCode.TokenExpired, "getToken returned the expired token again"), -1);
    }
    this._token = token;
    let ws: WebSocketLike;
    try {
      // Naming the subprotocol lets servers and proxies tell Herald
      // sockets apart; the node answers with it (docs/PROTOCOL.md §2).
      ws = new this._WS(this.url, PROTOCOL);
    } catch (e) {
      return this._lost(new HeraldError(ErrorCode.Unavailable, String(e)));
    }
    this._ws = ws;
    ws.binaryType = "arraybuffer";
    ws.onopen = () => this._onOpen();
    ws.onmessage = ((ev: { data: unknown }) => this._onData(ev.data)) as (ev: never) => void;
    ws.onclose = ((ev: { code: number; reason: string }) => this._lost(errorFromClose(ev.code, ev.reason))) as (ev: never) => void;
    ws.onerror = () => undefined; // a close event follows
    this._connectTimer = setTimeout(
      () => this._drop(new HeraldError(ErrorCode.HandshakeTimeout, "no Connected within the connect timeout")),
      this._o.connectTimeoutMs ?? 10000,
    );
  }

  private _onOpen(): void {
    // Every room goes in `Connect.resume` at its last position ((0, 0) when
    // none is confirmed), except first subscribes that want history: those
    // send a `Subscribe` after `Connected`, since a resume entry carries no
    // history. At most `max_rooms` entries (more is a ProtocolViolation).
    const resume: ResumeEntry[] = [];
    const max = this._limits ? this._limits.maxRooms : 256;
    for (const s of this._subs.values()) {
      s._rid = 0;
      s._inConnect = (s._confirmed || !s.options.history || !!s.options.since) && resume.length < max;
      if (!s._inConnect) continue;
      const p = (s._asked = this._recoverFrom(s));
      resume.push({ room: s.room, epoch: p ? p.epoch : 0n, offset: p ? p.offset : 0n, presence: s.options.presence !== false });
    }
    this._connectRid = 0;
    this._connectRid = this._id();
    this._send(encodeConnect(this._connectRid, this._token, this._o.clientName ?? "herald-js", this._o.clientVersion ?? VERSION, resume));
  }

  private _onData(data: unknown): void {
    let u8: Uint8Array;
    if (data instanceof ArrayBuffer) u8 = new Uint8Array(data);
    else if (ArrayBuffer.isView(data)) u8 = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    else return this._drop(new HeraldError(ErrorCode.UnsupportedFrame, "text message"));
    this._lastRecv = Date.now();
    if (u8.length < 8 || ID.some((c, i) => u8[4 + i] !== c)) {
      return this._drop(new HeraldError(ErrorCode.MalformedFrame, "no HRL1 identifier"));
    }
    try {
      this._dispatch(Frame.getRootAsFrame(new ByteBuffer(u8)));
    } catch (e) {
      this._drop(new HeraldError(ErrorCode.MalformedFrame, String(e)));
    }
  }

  private _dispatch(f: Frame): void {
    const rid = f.requestId();
    const t = f.bodyType();
    switch (t) {
      case Body.Ping:
        return this._send(encodePong((f.body(new Ping()) as Ping).nonce()));
      case Body.Pong:
        return;
      case Body.Connected:
        return this._onConnected(f.body(new Connected()) as Connected);
      case Body.Reply: {
        const r = f.body(new Reply()) as Reply;
        return this._answer(rid, r.code(), r.message() ?? "", t, r);
      }
      case Body.Subscribed:
        return this._onSubscribed(rid, f.body(new Subscribed()) as Subscribed);
      case Body.Message:
        return this._onMessage(f.body(liveMessage) as Message);
      case Body.PresenceJoin:
      case Body.PresenceLeave: {
        const p = f.body(new PresenceJoin()) as PresenceJoin; // same layout as PresenceLeave
        const room = p.room() ?? "";
        this._subs.get(room)?._emit("presence", { type: t === Body.PresenceJoin ? "join" : "leave", room, user: p.user() ?? "" });
        return;
      }
      case Body.PresenceSnapshot: {
        const p = f.body(new PresenceSnapshot()) as PresenceSnapshot;
        if (rid) return this._answer(rid, 0, "", t, p);
        const info = readPresence(p);
        this._subs.get(info.room)?._emit("presence", { type: "snapshot", ...info });
        return;
      }
      case Body.TypingEvent: {
        const e = f.body(new TypingFrame()) as TypingFrame;
        const room = e.room() ?? "";
        this._subs.get(room)?._emit("typing", { room, user: e.user() ?? "", active: e.active() });
        return;
      }
      case Body.HistoryPage:
        return this._answer(rid, 0, "", t, f.body(new HistoryPageFrame()));
      case Body.NotificationsPage: {
        const p = f.body(new NotificationsPageFrame()) as NotificationsPageFrame;
        this._unread = Number(p.unread());
        // Request id 0: the count the node sends unasked after Connected.
        if (!rid) return this._emit("unread", { unread: this._unread });
        return this._answer(rid, 0, "", t, p);
      }
      case Body.Notification:
        return this._emit("notification", readNotification(f.body(new Notification()) as Notification));
      case Body.Error: {
        const e = f.body(new ErrorFrame()) as ErrorFrame;
        const code = e.code();
        const room = e.room() ?? undefined;
        const err = new HeraldError(code, e.message() ?? "", room);
        if (err.fatal) return this._drop(err);
        if (rid && this._pending.has(rid)) return this._answer(rid, code, e.message() ?? "", t, e);
        const s = room !== undefined ? this._subs.get(room) : undefined;
        if (s) this._failSub(s, err);
        return;
      }
      case Body.GoAway: {
        const g = f.body(new GoAway()) as GoAway;
        const ms = g.reconnectAfterMs();
        return this._drop(new HeraldError(g.code(), g.reason() ?? "going away"), ms > 0 ? goAwayDelay(ms) : -1);
      }
      case Body.MetricsUpdate:
      case Body.Alert:
        return;
      default:
        // NONE is malformed; a client-only body from a server is unsupported.
        // A member newer than this client is skipped (forward compatible).
        if (t === Body.NONE) return this._drop(new HeraldError(ErrorCode.MalformedFrame, "frame without body"));
        if (t <= Body.Pong) return this._drop(new HeraldError(ErrorCode.UnsupportedFrame, `server sent body ${t}`));
    }
  }

  private _onConnected(c: Connected): void {
    if (this._state !== "connecting") return;
    clearTimeout(this._connectTimer);
    this._state = "connected";
    this._attempt = 0;
    this._expiredToken = undefined;
    this._limits = readLimits(c);
    this._hb = c.heartbeatIntervalMs();
    this._lastRecv = Date.now();
    this._armIdle();
    const info: ConnectedEvent = {
      sessionId: c.sessionId() ?? "",
      nodeId: c.nodeId() ?? "",
      userId: c.userId() ?? "",
      serverTimeMs: Number(c.serverTimeMs()),
      heartbeatIntervalMs: this._hb,
      limits: this._limits,
      reconnected: this._ever,
    };
    this._ever = true;
    this._session = info;
    // Rooms not in this Connect's resume (subscribed meanwhile, or first
    // subscribes with history), then every unacknowledged publish and queued
    // request in their original order: before the event, so that a publish
    // made by a handler goes after them.
    for (const s of this._subs.values()) if (!s._inConnect && !s._rid) this._sendSubscribe(s);
    for (const [rid, p] of this._pending) if (!p.sent) this._transmit(rid, p);
    this._emit("connected", info);
  }

  private _armIdle(): void {
    clearTimeout(this._idleTimer);
    if (!this._hb) return;
    const limit = 3 * this._hb;
    const check = (): void => {
      const left = this._lastRecv + limit - Date.now();
      if (left <= 0) this._drop(new HeraldError(ErrorCode.IdleTimeout, "server silent for three heartbeat intervals"));
      else this._idleTimer = setTimeout(check, left);
    };
    this._idleTimer = setTimeout(check, limit);
  }

  private _answer(rid: number, code: number, message: string, type: Body, body: unknown): void {
    const p = this._pending.get(rid);
    if (!p) return;
    this._pending.delete(rid);
    clearTimeout(p.t);
    if (p.k === SUB) {
      const s = this._subs.get(p.room ?? "");
      if (s && s._rid === rid) this._failSub(s, new HeraldError(code || ErrorCode.BadRequest, message || "unexpected answer", p.room));
      return;
    }
    if (p.k === UNSUB) {
      this._leaving.delete(p.room ?? "");
      return;
    }
    if (code) return p.rej?.(new HeraldError(code, message, p.room));
    if (p.k === REQ && type !== p.want) return p.rej?.(new HeraldError(ErrorCode.BadRequest, `unexpected answer (body ${type})`, p.room));
    (p.res as (v: unknown) => void)(p.parse ? p.parse(body as never) : undefined);
  }

  private _onSubscribed(rid: number, s: Subscribed): void {
    const room = s.room() ?? "";
    if (rid) {
      const p = this._pending.get(rid);
      if (p && p.k === SUB) {
        this._pending.delete(rid);
        clearTimeout(p.t);
      }
    }
    const sub = this._subs.get(room);
    if (!sub) {
      // Unsubscribed meanwhile (e.g. while the Connect resuming it was in
      // flight): leave the room now.
      if (this._state === "connected") this._send(encodeUnsubscribe(this._id(), room));
      return;
    }
    if (rid && rid !== sub._rid) return; // answer to an older request
    sub._rid = 0;
    const epoch = s.epoch();
    const offset = s.offset();
    const recovered = s.recovered();
    const recovering = !!sub._asked;
    // History: dedup against the old position when the recovery filled the
    // gap; after a gap, deliver it all (the app starts over).
    let last = recovered ? sub._pos : undefined;
    const msgs: HeraldMessage[] = [];
    const m = new Message();
    for (let i = 0, n = s.historyLength(); i < n; i++) {
      s.history(i, m);
      const e = m.epoch();
      const o = m.offset();
      let skipped = 0;
      if (!m.volatile() && o) {
        skipped = advance(last, e, o);
        if (skipped < 0) continue;
        last = { epoch: e, offset: o };
      }
      msgs.push(readMessage(m, e, o, skipped));
    }
    sub._pos = { epoch, offset };
    sub._confirmed = true;
    const ev: SubscribedEvent = { room, epoch: Number(epoch), offset: Number(offset), recovered, resumed: rid === 0, recovering };
    sub._set({ state: "subscribed", ...ev });
    sub._emit("subscribed", ev);
    if (recovering && !recovered) sub._emit("recovered", ev);
    const p = s.presence();
    if (p) sub._emit("presence", { type: "snapshot", ...readPresence(p) });
    for (const msg of msgs) {
      if (this._subs.get(room) !== sub) break;
      sub._emit("message", msg);
      this._emit("message", msg);
    }
  }

  private _onMessage(m: Message): void {
    const room = m.room() ?? "";
    const sub = this._subs.get(room);
    if (!sub && this._leaving.has(room)) return;
    const e = m.epoch();
    const o = m.offset();
    let skipped = 0;
    if (sub && o && !m.volatile()) {
      skipped = advance(sub._pos, e, o);
      if (skipped < 0) return;
      sub._pos = { epoch: e, offset: o };
    }
    const msg = readMessage(m, e, o, skipped);
    sub?._emit("message", msg);
    this._emit("message", msg);
  }

  private _failSub(s: Subscription, err: HeraldError): void {
    if (this._subs.get(s.room) === s) this._subs.delete(s.room);
    s._rid = 0;
    s._set({ state: "unsubscribed", error: err });
    s._emit("error", err);
  }

  /** Closes the transport on our side and handles the loss. */
  private _drop(err: HeraldError, goAway?: number): void {
    this._lost(err, goAway);
  }

  private _detach(): void {
    clearTimeout(this._connectTimer);
    clearTimeout(this._idleTimer);
    clearTimeout(this._retryTimer);
    this._gen++;
    const ws = this._ws;
    this._ws = null;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close(1000);
    } catch {
      // already closed
    }
  }

  /**
   * A transport ended (or could not start). `goAway`: a GoAway's delay, -1
   * for "do not reconnect", undefined for the normal backoff.
   */
  private _lost(err: HeraldError, goAway?: number): void {
    if (this._state === "closed") return;
    this._detach();
    const was = this._state === "connected";
    if (!was) this._attempt++;
    this._connectRid = 0;
    for (const [rid, p] of this._pending) {
      if (p.k === PUB) {
        clearTimeout(p.t);
        p.sent = false;
        continue;
      }
      if (p.k === REQ && !p.sent) continue;
      clearTimeout(p.t);
      this._pending.delete(rid);
      if (p.k === VOL || p.k === REQ) p.rej?.(new HeraldError(ErrorCode.Unavailable, "connection lost before an answer", p.room));
    }
    this._leaving.clear();
    for (const s of this._subs.values()) {
      s._rid = 0;
      if (s.state !== "subscribing") s._set({ state: "subscribing" });
    }
    const r = this._o.reconnect;
    const ro = r || {};
    const again =
      r !== false &&
      goAway !== -1 &&
      shouldReconnect(err.codeNumber, !!this._o.getToken) &&
      !(ro.maxAttempts !== undefined && this._attempt >= ro.maxAttempts);
    if (err.codeNumber === ErrorCode.TokenExpired) this._expiredToken = this._token;
    if (was) this._emit("disconnected", { error: err, willReconnect: again });
    if (this._isClosed()) return; // closed by a handler
    if (!again) return this._stop(err, err);
    const delayMs = goAway !== undefined && goAway >= 0 ? goAway : backoffDelay(this._attempt, ro.initialDelayMs ?? 100, ro.maxDelayMs ?? 10000);
    this._state = "disconnected";
    this._emit("reconnecting", { attempt: this._attempt, delayMs, error: err });
    if (this._isClosed()) return; // closed by a handler
    const gen = this._gen;
    this._retryTimer = setTimeout(() => {
      if (gen === this._gen) void this._open();
    }, delayMs);
  }

  private _isClosed(): boolean {
    return this._state === "closed";
  }

  /** Stops for good: rejects everything, ends every subscription. */
  private _stop(reason: HeraldError, error: HeraldError | undefined): void {
    this._state = "closed";
    this._terminal = reason;
    clearTimeout(this._retryTimer);
    this._gen++;
    const pending = [...this._pending.values()];
    this._pending.clear();
    this._leaving.clear();
    for (const p of pending) {
      clearTimeout(p.t);
      p.rej?.(reason);
    }
    const subs = [...this._subs.values()];
    this._subs.clear();
    for (const s of subs) {
      s._rid = 0;
      s._set(error ? { state: "unsubscribed", error } : { state: "unsubscribed" });
    }
    if (error) this._emit("error", error);
    this._emit("closed", error ? { error } : {});
  }
}

/**
 * A subscription to one room, made by `herald.subscribe(room)`. It lives
 * until `unsubscribe()` (or a refusal): it goes back to "subscribing" while
 * the client reconnects, and is resumed from its last position.
 */
export class Subscription extends Emitter<SubscriptionEvents> {
  /** The room name. */
  readonly room: string;
  /** The options given to `subscribe`. */
  readonly options: Readonly<SubscribeOptions>;
  private _herald: Herald;
  private _state: SubscriptionState = "subscribing";
  private _last: SubscribedEvent | undefined;
  /** @internal */ _pos: Pos | undefined;
  /** @internal */ _asked: Pos | undefined;
  /** @internal */ _confirmed = false;
  /** @internal */ _inConnect = false;
  /** @internal */ _rid = 0;
  private _error: HeraldError | undefined;

  /** @internal */
  constructor(herald: Herald, room: string, options: SubscribeOptions) {
    super();
    this._herald = herald;
    this.room = room;
    this.options = options;
  }

  /** "subscribing", "subscribed" or "unsubscribed". */
  get state(): SubscriptionState {
    return this._state;
  }

  /** The last position seen in the room (save it to resume with `since` later). */
  get position(): Position | undefined {
    return this._pos && { epoch: Number(this._pos.epoch), offset: Number(this._pos.offset) };
  }

  /** @internal */
  _set(ev: SubscriptionStateEvent): void {
    this._state = ev.state;
    if (ev.state === "subscribed") {
      const { state: _, ...rest } = ev;
      this._last = rest;
    }
    if (ev.state === "unsubscribed") this._error = ev.error;
    this._emit("state", ev);
  }

  /**
   * Resolves when the room is subscribed (at once if it is), with the
   * `subscribed` event; rejects if the subscription ends or after
   * `timeoutMs` (optional) with Timeout.
   */
  ready(timeoutMs?: number): Promise<SubscribedEvent> {
    if (this._state === "subscribed" && this._last) return Promise.resolve(this._last);
    if (this._state === "unsubscribed") {
      return Promise.reject(this._error ?? new HeraldError(ErrorCode.NotSubscribed, "unsubscribed", this.room));
    }
    return new Promise((res, rej) => {
      let t: Timer | undefined;
      const off = this.on("state", (ev) => {
        if (ev.state === "subscribing") return;
        done();
        if (ev.state === "subscribed") res(this._last!);
        else rej(ev.error ?? new HeraldError(ErrorCode.NotSubscribed, "unsubscribed", this.room));
      });
      const done = (): void => {
        off();
        clearTimeout(t);
      };
      if (timeoutMs !== undefined) {
        t = setTimeout(() => {
          done();
          rej(new HeraldError(ErrorCode.Timeout, "not subscribed in time", this.room));
        }, timeoutMs);
      }
    });
  }

  /** Leaves the room. */
  unsubscribe(): void {
    this._herald._unsubscribe(this);
  }

  /** `herald.publish(room, ...)`. */
  publish(data: Uint8Array | string, options?: PublishOptions): Promise<Position> {
    return this._herald.publish(this.room, data, options);
  }

  /** `herald.typing(room, active)`. */
  typing(active = true): boolean {
    return this._herald.typing(this.room, active);
  }

  /** `herald.presence(room)`. */
  presence(): Promise<PresenceInfo> {
    return this._herald.presence(this.room);
  }

  /** `herald.history(room, options)`. */
  history(options?: HistoryOptions): Promise<HistoryPage> {
    return this._herald.history(this.room, options);
  }
}
