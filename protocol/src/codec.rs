//! Frame codec: verified, allocation-free decoding and builder-reusing
//! encoders that return [`Bytes`], so one encoded frame can be handed to many
//! recipients by reference count.

use bytes::Bytes;
use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};

use crate::error::ProtocolError;
use crate::limits::DecodeLimits;
use crate::wire::{self, Body, ErrorCode};

/// Decodes and verifies one frame.
///
/// Checks, in order: the size limit, the `HRL1` identifier, the FlatBuffers
/// verifier (bounded by `limits`), and that the body is a known, present
/// union member. Allocates nothing on success. The returned view borrows
/// `buf`; accessors on it cannot panic once verification passed.
pub fn decode<'a>(buf: &'a [u8], limits: &DecodeLimits) -> Result<wire::Frame<'a>, ProtocolError> {
    if buf.len() > limits.max_frame_bytes {
        return Err(ProtocolError::FrameTooLarge {
            size: buf.len(),
            max: limits.max_frame_bytes,
        });
    }
    if buf.len() < 8 || !wire::frame_buffer_has_identifier(buf) {
        return Err(ProtocolError::BadIdentifier);
    }
    // Message and Publish frames are two tables deep; the specialised
    // verifier handles them, anything else (or anything it refuses) goes to
    // the generic one.
    if limits.max_depth >= 2
        && limits.max_tables >= 2
        && let Some(frame) = crate::fastpath::decode(buf)
    {
        return Ok(frame);
    }
    let frame = wire::root_as_frame_with_opts(&limits.verifier_options(), buf)?;
    let body = frame.body_type();
    if body == Body::NONE {
        return Err(ProtocolError::MissingBody);
    }
    if body.0 > Body::ENUM_MAX {
        return Err(ProtocolError::UnknownBody(body.0));
    }
    Ok(frame)
}

/// Name of a body type, for errors and logs.
pub fn body_name(body: Body) -> &'static str {
    body.variant_name().unwrap_or("Unknown")
}

/// Whether a client may send this body to a server.
pub fn is_client_body(body: Body) -> bool {
    (Body::Connect.0..=Body::Pong.0).contains(&body.0)
}

/// Whether a server may send this body to a client.
pub fn is_server_body(body: Body) -> bool {
    matches!(body, Body::Ping | Body::Pong) || (Body::Connected.0..=Body::ENUM_MAX).contains(&body.0)
}

/// A message to encode, borrowed from wherever the caller keeps it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MessageRef<'a> {
    /// Room name.
    pub room: &'a str,
    /// Room epoch.
    pub epoch: u64,
    /// Offset within the epoch (0 for volatile messages).
    pub offset: u64,
    /// Publisher's user id ("" for the server API).
    pub publisher: &'a str,
    /// Acceptance time, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// Application payload.
    pub payload: &'a [u8],
    /// Optional MIME type.
    pub content_type: Option<&'a str>,
    /// Best-effort, never stored.
    pub volatile: bool,
}

/// A publish to encode.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PublishRef<'a> {
    /// Room name.
    pub room: &'a str,
    /// Application payload.
    pub payload: &'a [u8],
    /// Optional MIME type.
    pub content_type: Option<&'a str>,
    /// Best-effort, never stored.
    pub volatile: bool,
    /// Optional deduplication key.
    pub idempotency_key: Option<&'a str>,
}

/// Encodes frames, reusing one FlatBuffers builder.
///
/// Each call produces one complete frame as [`Bytes`] (one allocation and one
/// copy out of the builder). Frames kinds on hot paths have dedicated methods;
/// every other frame can be encoded from its object-API form with
/// [`Encoder::frame`].
pub struct Encoder {
    fbb: FlatBufferBuilder<'static>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").finish_non_exhaustive()
    }
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

thread_local! {
    static THREAD_ENCODER: std::cell::RefCell<Encoder> = std::cell::RefCell::new(Encoder::new());
}

/// Runs `f` with this thread's shared encoder, so sessions do not each carry
/// a builder (which would cost ~1 KiB per idle connection).
pub fn with_encoder<R>(f: impl FnOnce(&mut Encoder) -> R) -> R {
    THREAD_ENCODER.with(|e| match e.try_borrow_mut() {
        Ok(mut enc) => f(&mut enc),
        // Re-entrant use (an encoder call inside another): use a fresh one.
        Err(_) => f(&mut Encoder::new()),
    })
}

impl Encoder {
    /// A new encoder with a 1 KiB builder that grows as needed and is reused.
    pub fn new() -> Self {
        Self {
            fbb: FlatBufferBuilder::with_capacity(1024),
        }
    }

    fn finish(&mut self, request_id: u32, body_type: Body, body: WIPOffset<UnionWIPOffset>) -> Bytes {
        let frame = wire::Frame::create(
            &mut self.fbb,
            &wire::FrameArgs {
                request_id,
                body_type,
                body: Some(body),
            },
        );
        wire::finish_frame_buffer(&mut self.fbb, frame);
        let out = Bytes::copy_from_slice(self.fbb.finished_data());
        self.fbb.reset();
        out
    }

    fn opt_str(&mut self, s: Option<&str>) -> Option<WIPOffset<&'static str>> {
        s.map(|s| self.fbb.create_string(s))
    }

    /// Encodes any frame from its object-API form.
    pub fn frame(&mut self, frame: &wire::FrameT) -> Bytes {
        let root = frame.pack(&mut self.fbb);
        wire::finish_frame_buffer(&mut self.fbb, root);
        let out = Bytes::copy_from_slice(self.fbb.finished_data());
        self.fbb.reset();
        out
    }

    /// Encodes a body with a request id.
    pub fn body(&mut self, request_id: u32, body: wire::BodyT) -> Bytes {
        self.frame(&wire::FrameT { request_id, body })
    }

    /// Encodes a delivered `Message` (request id 0): laid out directly into
    /// one exact-size buffer, without the builder (see `fastpath`).
    pub fn message(&mut self, m: &MessageRef<'_>) -> Bytes {
        crate::fastpath::encode_message(m)
    }

    /// Encodes a `Publish` request.
    pub fn publish(&mut self, request_id: u32, p: &PublishRef<'_>) -> Bytes {
        let room = self.fbb.create_string(p.room);
        let payload = self.fbb.create_vector(p.payload);
        let content_type = self.opt_str(p.content_type);
        let idempotency_key = self.opt_str(p.idempotency_key);
        let body = wire::Publish::create(
            &mut self.fbb,
            &wire::PublishArgs {
                room: Some(room),
                payload: Some(payload),
                content_type,
                volatile: p.volatile,
                idempotency_key,
            },
        );
        self.finish(request_id, Body::Publish, body.as_union_value())
    }

    /// Encodes a `Reply`: an acknowledgement with a position, or an error.
    pub fn reply(&mut self, request_id: u32, code: ErrorCode, message: Option<&str>, epoch: u64, offset: u64) -> Bytes {
        let message = self.opt_str(message);
        let body = wire::Reply::create(
            &mut self.fbb,
            &wire::ReplyArgs {
                code,
                message,
                epoch,
                offset,
            },
        );
        self.finish(request_id, Body::Reply, body.as_union_value())
    }

    /// Encodes an `Error` frame (fatal codes precede a close).
    pub fn error(&mut self, request_id: u32, code: ErrorCode, message: &str, room: Option<&str>) -> Bytes {
        let message = self.fbb.create_string(message);
        let room = self.opt_str(room);
        let body = wire::Error::create(
            &mut self.fbb,
            &wire::ErrorArgs {
                code,
                message: Some(message),
                room,
            },
        );
        self.finish(request_id, Body::Error, body.as_union_value())
    }

    /// Encodes a `GoAway` frame.
    pub fn go_away(&mut self, code: ErrorCode, reason: &str, reconnect_after_ms: u32) -> Bytes {
        let reason = self.fbb.create_string(reason);
        let body = wire::GoAway::create(
            &mut self.fbb,
            &wire::GoAwayArgs {
                code,
                reason: Some(reason),
                reconnect_after_ms,
            },
        );
        self.finish(0, Body::GoAway, body.as_union_value())
    }

    /// Encodes a `Ping`.
    pub fn ping(&mut self, nonce: u64) -> Bytes {
        let body = wire::Ping::create(&mut self.fbb, &wire::PingArgs { nonce });
        self.finish(0, Body::Ping, body.as_union_value())
    }

    /// Encodes a `Pong`.
    pub fn pong(&mut self, nonce: u64) -> Bytes {
        let body = wire::Pong::create(&mut self.fbb, &wire::PongArgs { nonce });
        self.finish(0, Body::Pong, body.as_union_value())
    }

    /// Encodes a `Subscribed` answer with its history (oldest first).
    pub fn subscribed(&mut self, request_id: u32, s: &SubscribedRef<'_>) -> Bytes {
        let mut history = Vec::with_capacity(s.history.len());
        for m in s.history {
            let room = self.fbb.create_string(m.room);
            let publisher = self.fbb.create_string(m.publisher);
            let payload = self.fbb.create_vector(m.payload);
            let content_type = self.opt_str(m.content_type);
            history.push(wire::Message::create(
                &mut self.fbb,
                &wire::MessageArgs {
                    room: Some(room),
                    epoch: m.epoch,
                    offset: m.offset,
                    publisher: Some(publisher),
                    timestamp_ms: m.timestamp_ms,
                    payload: Some(payload),
                    content_type,
                    volatile: m.volatile,
                },
            ));
        }
        let history = self.fbb.create_vector(&history);
        let presence = s.presence.map(|p| {
            let users: Vec<_> = p.users.iter().map(|u| self.fbb.create_string(u)).collect();
            let users = self.fbb.create_vector(&users);
            let room = self.fbb.create_string(s.room);
            wire::PresenceSnapshot::create(
                &mut self.fbb,
                &wire::PresenceSnapshotArgs {
                    room: Some(room),
                    users: Some(users),
                    count: p.count,
                    truncated: (p.users.len() as u64) < p.count,
                },
            )
        });
        let room = self.fbb.create_string(s.room);
        let body = wire::Subscribed::create(
            &mut self.fbb,
            &wire::SubscribedArgs {
                room: Some(room),
                epoch: s.epoch,
                offset: s.offset,
                recovered: s.recovered,
                history: Some(history),
                presence,
            },
        );
        self.finish(request_id, Body::Subscribed, body.as_union_value())
    }
}

/// A presence snapshot to encode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PresenceRef<'a> {
    /// Distinct users present (possibly a truncated list).
    pub users: &'a [&'a str],
    /// Total distinct users present.
    pub count: u64,
}

/// A `Subscribed` answer to encode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SubscribedRef<'a> {
    /// Room name.
    pub room: &'a str,
    /// Current epoch of the room.
    pub epoch: u64,
    /// Latest offset of the room.
    pub offset: u64,
    /// Whether the requested recovery has no gap.
    pub recovered: bool,
    /// Messages to replay, oldest first.
    pub history: &'a [MessageRef<'a>],
    /// Presence snapshot, when requested and enabled.
    pub presence: Option<PresenceRef<'a>>,
}
