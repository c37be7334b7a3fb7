//! The Herald wire protocol, `herald/1`.
//!
//! This crate is sans-IO: it contains no networking code and reads no clock.
//! Time enters only as the `now: Instant` argument of the methods that need
//! it, so every behaviour (handshake and idle timeouts, heartbeats, rate
//! limits, ack timeouts) is deterministic and testable on virtual time.
//!
//! - [`wire`]: the FlatBuffers bindings generated from `schemas/herald.fbs`
//!   (regenerate with `scripts/gen-schemas`).
//! - [`decode`] and [`Encoder`]: verified, allocation-free decoding with
//!   explicit [`DecodeLimits`]; encoders that reuse a builder and return
//!   `Bytes`, so one encoded message is shared by every recipient.
//! - [`framing`]: transport framing (WebSocket messages, QUIC length
//!   prefixes and datagrams).
//! - [`ServerSession`] and [`ClientSession`]: connection state machines in
//!   the shape of quinn-proto (`handle_*` for input, commands, `poll_*` for
//!   output).
//! - [`owner`]: the room owner (offsets, memory window, members, presence,
//!   idempotency), a state machine over a log store it speaks to only by
//!   messages.
//! - feature `client`: [`tokio_client`], an async WebSocket client with
//!   reconnect and resume.

#[allow(unused_extern_crates)] // the generated object API names `alloc::`
extern crate alloc;

mod client;
mod codec;
mod error;
mod fastpath;
pub mod framing;
mod limits;
pub mod owner;
mod rate;
mod server;
#[cfg(feature = "client")]
pub mod tokio_client;

#[allow(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    unused_imports,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    clippy::all,
    clippy::unwrap_used,
    rust_2018_idioms,
    unsafe_code
)]
#[rustfmt::skip]
mod generated;

/// Generated FlatBuffers bindings for the `herald.v1` namespace: readers
/// (`Frame<'a>`, ...), builders and the owned object API (`FrameT`, `BodyT`).
pub mod wire {
    pub use crate::generated::herald::v_1::*;
}

pub use client::{ClientConfig, ClientEvent, ClientSession, Delivery, PublishOptions, SubscribeOptions};
pub use codec::{
    Encoder, MessageRef, PresenceRef, PublishRef, SubscribedRef, body_name, decode, is_client_body, is_server_body,
    with_encoder,
};
pub use error::ProtocolError;
#[doc(hidden)]
pub use fastpath::accepts as fast_verifier_accepts;
pub use limits::{DecodeLimits, SessionLimits, valid_room_name};
pub use rate::TokenBucket;
pub use server::{Accept, RateLimit, ResumeRoom, SendOutcome, ServerConfig, ServerEvent, ServerSession};
pub use wire::ErrorCode;

/// The protocol version string sent in `Connect.protocol`.
pub const PROTOCOL_VERSION: &str = "herald/1";

/// A position in a room's log: offsets are comparable within one epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    /// Incarnation of the room's log (0 = none).
    pub epoch: u64,
    /// Offset within the epoch (0 = before the first message).
    pub offset: u64,
}
