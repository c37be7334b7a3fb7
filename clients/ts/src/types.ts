import type { HeraldError } from "./errors.js";

/**
 * The subset of the browser WebSocket API this client uses. The browsers'
 * `WebSocket`, Node's (Node 22+, or Node 20 with `--experimental-websocket`)
 * and the `ws` package's class all fit.
 */
export interface WebSocketLike {
  binaryType: string;
  onopen: ((ev: never) => unknown) | null;
  onmessage: ((ev: never) => unknown) | null;
  onclose: ((ev: never) => unknown) | null;
  onerror: ((ev: never) => unknown) | null;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
}

/** A WebSocket constructor, e.g. `globalThis.WebSocket` or `ws`'s `WebSocket`. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** Reconnection settings. */
export interface ReconnectOptions {
  /** First backoff ceiling, ms. Default 100. */
  initialDelayMs?: number;
  /** Largest backoff ceiling, ms. Default 10000. */
  maxDelayMs?: number;
  /** Give up after this many consecutive failed attempts. Default: never. */
  maxAttempts?: number;
}

/** Options of `new Herald(url, options)`. */
export interface HeraldOptions {
  /** Token sent in `Connect` (a JWT; the user id on a development node). */
  token?: string;
  /** Called for each new connection (and so after `TokenExpired`); wins over `token`. */
  getToken?: () => string | Promise<string>;
  /** WebSocket implementation. Default `globalThis.WebSocket`. */
  WebSocket?: WebSocketConstructor;
  /** Connect in the constructor. Default true; otherwise call `connect()`. */
  autoConnect?: boolean;
  /** Reported in `Connect.client_name`. Default "herald-js". */
  clientName?: string;
  /** Reported in `Connect.client_version`. Default this package's version. */
  clientVersion?: string;
  /** Time from opening the WebSocket to `Connected`. Default 10000 ms. */
  connectTimeoutMs?: number;
  /** Time to wait for any answer. Default 10000 ms. */
  requestTimeoutMs?: number;
  /** Backoff settings, or `false` to never reconnect automatically. */
  reconnect?: ReconnectOptions | false;
  /** Publishes that may wait while disconnected. Default 1000. */
  maxQueuedPublishes?: number;
  /** Bytes (encoded frames) that may wait while disconnected. Default 1 MiB. */
  maxQueuedBytes?: number;
}

/** Connection state of a `Herald` client. */
export type ConnectionState = "idle" | "connecting" | "connected" | "disconnected" | "closed";

/** Limits the server enforces on this connection (`Connected.limits`). */
export interface Limits {
  maxFrameBytes: number;
  maxPayloadBytes: number;
  maxRooms: number;
  maxRoomNameBytes: number;
  publishRatePerSec: number;
  publishBurst: number;
  maxOutboundBytes: number;
}

/** The `connected` event: what the server said in `Connected`. */
export interface ConnectedEvent {
  sessionId: string;
  nodeId: string;
  userId: string;
  serverTimeMs: number;
  heartbeatIntervalMs: number;
  limits: Limits;
  /** False on the first connection, true on every reconnection. */
  reconnected: boolean;
}

/** The `disconnected` event: a connected session ended. */
export interface DisconnectedEvent {
  error: HeraldError;
  willReconnect: boolean;
}

/** The `reconnecting` event: a new connection is scheduled. */
export interface ReconnectingEvent {
  /** Consecutive failed attempts so far (0 right after a connected session). */
  attempt: number;
  delayMs: number;
  /** Why the last connection ended. */
  error: HeraldError;
}

/** The `closed` event: the client stopped for good (`close()`, or an error it cannot retry). */
export interface ClosedEvent {
  error?: HeraldError;
}

/** A payload with decoding helpers. */
export interface Payload {
  /** The bytes; may be a view into the received frame's buffer. */
  data: Uint8Array;
  /** `data` decoded as UTF-8. */
  text(): string;
  /** `data` parsed as JSON. */
  json<T = unknown>(): T;
}

/** A message delivered in a room (or listed in a history page). */
export interface HeraldMessage extends Payload {
  room: string;
  epoch: number;
  /** Position in the room's log; 0 for volatile messages. */
  offset: number;
  /** Publisher's user id ("" for the server API). */
  publisher: string;
  timestampMs: number;
  contentType?: string;
  volatile: boolean;
  /** Offsets jumped over since the previous message of the room in this epoch (conflation); 0 normally. */
  skipped: number;
}

/** A notification (pushed live, or in a page). */
export interface HeraldNotification extends Payload {
  id: number;
  kind: string;
  title: string;
  body: string;
  createdMs: number;
  read: boolean;
}

/** Who is in a room. */
export interface PresenceInfo {
  room: string;
  users: string[];
  /** Distinct users present (may exceed `users.length` when `truncated`). */
  count: number;
  truncated: boolean;
}

/** A presence change or snapshot in a subscribed room. */
export type PresenceEvent =
  | { type: "join"; room: string; user: string }
  | { type: "leave"; room: string; user: string }
  | ({ type: "snapshot" } & PresenceInfo);

/** Someone started or stopped typing. */
export interface TypingEvent {
  room: string;
  user: string;
  active: boolean;
}

/** A position in a room's log. */
export interface Position {
  epoch: number;
  offset: number;
}

/** The `subscribed` event (and the `recovered` event when `recovered` is false after a recovery attempt). */
export interface SubscribedEvent {
  room: string;
  /** The room's epoch and latest offset. */
  epoch: number;
  offset: number;
  /**
   * True when every message after the position asked for was delivered (no
   * gap). False after a recovery attempt means a gap: refetch the room.
   */
  recovered: boolean;
  /** True when this answers the resume of a reconnection. */
  resumed: boolean;
  /** True when a recovery was asked for (a known position was sent). */
  recovering: boolean;
}

/** State of a subscription. */
export type SubscriptionState = "subscribing" | "subscribed" | "unsubscribed";

/** The `state` event of a subscription. */
export type SubscriptionStateEvent =
  | { state: "subscribing" }
  | ({ state: "subscribed" } & SubscribedEvent)
  | { state: "unsubscribed"; error?: HeraldError };

/** Options of `subscribe`. */
export interface SubscribeOptions {
  /** Most recent messages to receive (as `message` events) with the first subscribe. Default 0. */
  history?: number;
  /** Receive presence events and a snapshot. Default true. */
  presence?: boolean;
  /** Recover missed messages on reconnection from the last position. Default true. */
  recover?: boolean;
  /** Recover from this position on the first subscribe (e.g. saved before a page reload). */
  since?: Position;
}

/** Options of `publish`. */
export interface PublishOptions {
  /** Best effort: not stored, not resent, fails at once when not connected. */
  volatile?: boolean;
  /** Deduplication key; one is generated for non-volatile publishes. */
  idempotencyKey?: string;
  /** MIME type, e.g. "application/json". */
  contentType?: string;
}

/** Options of `history`. Bounds are exclusive; 0 or absent = unbounded. */
export interface HistoryOptions {
  before?: number;
  after?: number;
  /** Default 50 (the server caps it). */
  limit?: number;
}

/** A page of stored history, oldest first. */
export interface HistoryPage {
  room: string;
  epoch: number;
  messages: HeraldMessage[];
  hasMore: boolean;
}

/** Options of `notifications`. */
export interface NotificationsOptions {
  /** Default true. */
  unreadOnly?: boolean;
  /** Only ids below this one (0 = from the newest). */
  beforeId?: number;
  /** Default 50. */
  limit?: number;
}

/** A page of notifications, newest first. */
export interface NotificationsPage {
  notifications: HeraldNotification[];
  unread: number;
  hasMore: boolean;
}

/** Options of `markRead`. */
export interface MarkReadOptions {
  ids?: number[];
  /** And every notification with id <= upTo. */
  upTo?: number;
}

/** Events of a `Herald` client. */
export interface HeraldEvents {
  connected: ConnectedEvent;
  disconnected: DisconnectedEvent;
  reconnecting: ReconnectingEvent;
  closed: ClosedEvent;
  /** A token callback failed, or the client stopped on an error. */
  error: HeraldError;
  /** Every delivered message, including rooms the server sends without a subscription (`user:<id>`). */
  message: HeraldMessage;
  notification: HeraldNotification;
  /** The user's unread notification count, sent by the node after each connect. */
  unread: UnreadEvent;
}

/** The `unread` event. */
export interface UnreadEvent {
  /** Unread notifications in the user's inbox. */
  unread: number;
}

/** Events of a `Subscription`. */
export interface SubscriptionEvents {
  state: SubscriptionStateEvent;
  subscribed: SubscribedEvent;
  /** A recovery attempt failed (`recovered: false`): discard local state and refetch. */
  recovered: SubscribedEvent;
  message: HeraldMessage;
  presence: PresenceEvent;
  typing: TypingEvent;
  /** The subscription was refused or could not be resumed; it is now unsubscribed. */
  error: HeraldError;
}
