import type { Message, Notification } from "../../../schemas/generated/ts/herald/v1.js";
import type { HeraldMessage, HeraldNotification } from "./types.js";

const dec = new TextDecoder();
const EMPTY = new Uint8Array(0);

class PayloadBase {
  data: Uint8Array = EMPTY;
  text(): string {
    return dec.decode(this.data);
  }
  json<T = unknown>(): T {
    return JSON.parse(this.text()) as T;
  }
}

class Msg extends PayloadBase implements HeraldMessage {
  room = "";
  epoch = 0;
  offset = 0;
  publisher = "";
  timestampMs = 0;
  contentType?: string;
  volatile = false;
  skipped = 0;
}

/** Reads a wire `Message` once; `data` is a view into the frame's buffer. */
export function readMessage(m: Message, epoch: bigint, offset: bigint, skipped: number): HeraldMessage {
  const r = new Msg();
  r.room = m.room() ?? "";
  r.epoch = Number(epoch);
  r.offset = Number(offset);
  r.publisher = m.publisher() ?? "";
  r.timestampMs = Number(m.timestampMs());
  r.data = m.payloadArray() ?? EMPTY;
  const ct = m.contentType();
  if (ct !== null) r.contentType = ct;
  r.volatile = m.volatile();
  r.skipped = skipped;
  return r;
}

class Note extends PayloadBase implements HeraldNotification {
  id = 0;
  kind = "";
  title = "";
  body = "";
  createdMs = 0;
  read = false;
}

export function readNotification(n: Notification): HeraldNotification {
  const r = new Note();
  r.id = Number(n.id());
  r.kind = n.kind() ?? "";
  r.title = n.title() ?? "";
  r.body = n.body() ?? "";
  r.data = n.dataArray() ?? EMPTY;
  r.createdMs = Number(n.createdMs());
  r.read = n.read();
  return r;
}
