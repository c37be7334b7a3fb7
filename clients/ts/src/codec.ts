// Frame encoders, on the generated bindings (schemas/generated/ts, not forked).
import { Builder, ByteBuffer } from "flatbuffers";
import {
  AnalyticsEvent,
  Body,
  Connect,
  Frame,
  HistoryQuery,
  KeyValue,
  NotificationsMarkRead,
  NotificationsQuery,
  Pong,
  PresenceQuery,
  Publish,
  RoomPosition,
  Subscribe,
  Typing,
  Unsubscribe,
} from "../../../schemas/generated/ts/herald/v1.js";

export { Body, ByteBuffer, Frame };

const b = new Builder(1024);

function str(s: string | undefined): number {
  return s === undefined ? 0 : b.createString(s);
}

function finish(rid: number, type: Body, body: number): Uint8Array {
  Frame.finishFrameBuffer(b, Frame.createFrame(b, rid, type, body));
  const out = b.asUint8Array().slice();
  b.clear();
  return out;
}

/** A resume entry of `Connect`. */
export interface ResumeEntry {
  room: string;
  epoch: bigint;
  offset: bigint;
  presence: boolean;
}

export function encodeConnect(rid: number, token: string, name: string, version: string, resume: ResumeEntry[]): Uint8Array {
  const entries = resume.map((r) => RoomPosition.createRoomPosition(b, b.createString(r.room), r.epoch, r.offset, r.presence));
  const vec = entries.length ? Connect.createResumeVector(b, entries) : 0;
  return finish(rid, Body.Connect, Connect.createConnect(b, b.createString("herald/1"), str(token), str(name), str(version), vec));
}

export function encodeSubscribe(rid: number, room: string, history: number, epoch: bigint, offset: bigint, presence: boolean): Uint8Array {
  return finish(rid, Body.Subscribe, Subscribe.createSubscribe(b, b.createString(room), history, epoch, offset, presence));
}

export function encodeUnsubscribe(rid: number, room: string): Uint8Array {
  return finish(rid, Body.Unsubscribe, Unsubscribe.createUnsubscribe(b, b.createString(room)));
}

export function encodePublish(
  rid: number,
  room: string,
  payload: Uint8Array,
  contentType: string | undefined,
  volatile: boolean,
  key: string | undefined,
): Uint8Array {
  const p = b.createByteVector(payload);
  return finish(rid, Body.Publish, Publish.createPublish(b, b.createString(room), p, str(contentType), volatile, str(key)));
}

export function encodeTyping(room: string, active: boolean): Uint8Array {
  return finish(0, Body.Typing, Typing.createTyping(b, b.createString(room), active));
}

export function encodePresenceQuery(rid: number, room: string): Uint8Array {
  return finish(rid, Body.PresenceQuery, PresenceQuery.createPresenceQuery(b, b.createString(room)));
}

export function encodeHistoryQuery(rid: number, room: string, before: bigint, after: bigint, limit: number): Uint8Array {
  return finish(rid, Body.HistoryQuery, HistoryQuery.createHistoryQuery(b, b.createString(room), before, after, limit));
}

export function encodeNotificationsQuery(rid: number, unreadOnly: boolean, beforeId: bigint, limit: number): Uint8Array {
  return finish(rid, Body.NotificationsQuery, NotificationsQuery.createNotificationsQuery(b, unreadOnly, beforeId, limit));
}

export function encodeMarkRead(rid: number, ids: bigint[], upTo: bigint): Uint8Array {
  const vec = ids.length ? NotificationsMarkRead.createIdsVector(b, ids) : 0;
  return finish(rid, Body.NotificationsMarkRead, NotificationsMarkRead.createNotificationsMarkRead(b, vec, upTo));
}

export function encodeAnalyticsEvent(rid: number, name: string, value: number, tags: Record<string, string>): Uint8Array {
  const pairs = Object.entries(tags).map(([k, v]) => KeyValue.createKeyValue(b, b.createString(k), b.createString(v)));
  const dims = pairs.length ? AnalyticsEvent.createDimensionsVector(b, pairs) : 0;
  const ev = AnalyticsEvent.createAnalyticsEvent(b, b.createString(name), value, dims);
  return finish(rid, Body.AnalyticsEvent, ev);
}

export function encodePong(nonce: bigint): Uint8Array {
  return finish(0, Body.Pong, Pong.createPong(b, nonce));
}
