// Runs the generated TypeScript bindings against the Rust codec, as a browser
// client would use them. protocol/tests/typescript_bindings.rs drives it:
//
//   node target/ts-check/check/wire.js DIR
//
// DIR/case.json lists frames the Rust encoder wrote (DIR/<file>) with the
// fields each must decode to, and one Publish to encode here. This script
// checks every frame, writes the Publish to DIR/from-ts.bin, and exits 0;
// any mismatch throws (exit 1) naming the field.
import * as fs from 'fs';
import * as path from 'path';
import * as flatbuffers from 'flatbuffers';

import { Body } from '../generated/ts/herald/v1/body.js';
import { Frame } from '../generated/ts/herald/v1/frame.js';
import { Message } from '../generated/ts/herald/v1/message.js';
import { Publish } from '../generated/ts/herald/v1/publish.js';

interface ExpectedMessage {
  file: string;
  request_id: number;
  room: string;
  epoch: string;
  offset: string;
  publisher: string;
  timestamp_ms: string;
  payload_hex: string;
  content_type: string | null;
  volatile: boolean;
}

interface PublishSpec {
  request_id: number;
  room: string;
  payload_hex: string;
  content_type: string;
  idempotency_key: string;
  volatile: boolean;
}

interface Case {
  messages: ExpectedMessage[];
  publish: PublishSpec;
}

function same(what: string, got: unknown, want: unknown): void {
  if (got !== want) {
    throw new Error(`${what}: got ${String(got)}, want ${String(want)}`);
  }
}

function hex(bytes: Uint8Array | null): string {
  return Buffer.from(bytes ?? new Uint8Array()).toString('hex');
}

function checkMessage(dir: string, want: ExpectedMessage): void {
  const bb = new flatbuffers.ByteBuffer(new Uint8Array(fs.readFileSync(path.join(dir, want.file))));
  const at = (field: string) => `${want.file}: ${field}`;
  same(at('file identifier'), Frame.bufferHasIdentifier(bb), true);
  const frame = Frame.getRootAsFrame(bb);
  same(at('request_id'), frame.requestId(), want.request_id);
  same(at('body type'), Body[frame.bodyType()], 'Message');
  const m = frame.body(new Message()) as Message | null;
  if (m === null) {
    throw new Error(at('body missing'));
  }
  same(at('room'), m.room(), want.room);
  same(at('epoch'), m.epoch(), BigInt(want.epoch));
  same(at('offset'), m.offset(), BigInt(want.offset));
  same(at('publisher'), m.publisher(), want.publisher);
  same(at('timestamp_ms'), m.timestampMs(), BigInt(want.timestamp_ms));
  same(at('payload'), hex(m.payloadArray()), want.payload_hex);
  same(at('content_type'), m.contentType(), want.content_type);
  same(at('volatile'), m.volatile(), want.volatile);
}

function encodePublish(p: PublishSpec): Uint8Array {
  const b = new flatbuffers.Builder(256);
  const room = b.createString(p.room);
  const payload = Publish.createPayloadVector(b, Buffer.from(p.payload_hex, 'hex'));
  const contentType = b.createString(p.content_type);
  const key = b.createString(p.idempotency_key);
  const body = Publish.createPublish(b, room, payload, contentType, p.volatile, key);
  const frame = Frame.createFrame(b, p.request_id, Body.Publish, body);
  Frame.finishFrameBuffer(b, frame);
  return b.asUint8Array();
}

const dir = process.argv[2];
if (dir === undefined) {
  throw new Error('usage: wire.js DIR');
}
const c = JSON.parse(fs.readFileSync(path.join(dir, 'case.json'), 'utf8')) as Case;
if (c.messages.length === 0) {
  throw new Error('case.json lists no messages');
}
for (const m of c.messages) {
  checkMessage(dir, m);
}
fs.writeFileSync(path.join(dir, 'from-ts.bin'), encodePublish(c.publish));
console.log(`checked ${c.messages.length} frames from Rust; wrote from-ts.bin`);
