//! Transport framing: how frames travel on each transport.
//!
//! - WebSocket: one binary message is one frame; text messages are refused
//!   with [`ProtocolError::TextMessage`].
//! - QUIC stream: each frame is preceded by its length as a u32,
//!   little-endian. [`LengthPrefixedReader`] checks the length against the
//!   limit before buffering a single byte of the frame.
//! - QUIC datagram: exactly one frame, which must be volatile
//!   ([`check_datagram`]).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::ProtocolError;
use crate::wire::{self, Body};

/// Bytes in the QUIC stream length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// Appends one length-prefixed frame to `out`.
pub fn write_length_prefixed(frame: &[u8], out: &mut BytesMut) {
    let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
    out.reserve(LENGTH_PREFIX_BYTES + frame.len());
    out.put_u32_le(len);
    out.put_slice(frame);
}

/// Incremental reader for length-prefixed frames on a byte stream.
///
/// Feed it whatever the stream produced with [`extend`](Self::extend) and
/// pull frames with [`next_frame`](Self::next_frame): `Ok(None)` means "need
/// more bytes". A prefix above `max_frame_bytes` is an error before anything
/// is reserved for it, so a peer cannot make the reader allocate by lying
/// about a length.
#[derive(Debug)]
pub struct LengthPrefixedReader {
    buf: BytesMut,
    max_frame_bytes: usize,
}

impl LengthPrefixedReader {
    /// A reader that refuses frames larger than `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_frame_bytes,
        }
    }

    /// Appends stream bytes.
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, ProtocolError> {
        if self.buf.len() < LENGTH_PREFIX_BYTES {
            return Ok(None);
        }
        let mut prefix = [0u8; LENGTH_PREFIX_BYTES];
        prefix.copy_from_slice(&self.buf[..LENGTH_PREFIX_BYTES]);
        let len = u32::from_le_bytes(prefix) as usize;
        if len > self.max_frame_bytes {
            return Err(ProtocolError::FrameTooLarge {
                size: len,
                max: self.max_frame_bytes,
            });
        }
        if self.buf.len() < LENGTH_PREFIX_BYTES + len {
            return Ok(None);
        }
        self.buf.advance(LENGTH_PREFIX_BYTES);
        Ok(Some(self.buf.split_to(len).freeze()))
    }
}

/// Checks that a decoded frame may travel in a QUIC datagram: only volatile
/// traffic (volatile publishes and messages, typing, ping/pong).
pub fn check_datagram(frame: &wire::Frame<'_>) -> Result<(), ProtocolError> {
    let ok = match frame.body_type() {
        Body::Typing | Body::TypingEvent | Body::Ping | Body::Pong => true,
        Body::Publish => frame.body_as_publish().is_some_and(|p| p.volatile()),
        Body::Message => frame.body_as_message().is_some_and(|m| m.volatile()),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ProtocolError::DatagramNotVolatile(crate::codec::body_name(
            frame.body_type(),
        )))
    }
}
