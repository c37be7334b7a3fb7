//! Typed protocol errors and the wire error codes they map to.

use crate::wire::ErrorCode;

/// Why a frame or a transport message was rejected.
///
/// Every variant maps to a wire [`ErrorCode`] with [`ProtocolError::code`];
/// all of them are fatal for the connection that sent the bytes.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProtocolError {
    /// The frame (or a length prefix) announces more bytes than allowed.
    #[error("frame of {size} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Size of the offending frame in bytes.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The bytes do not start with the `HRL1` file identifier.
    #[error("not a herald/1 frame (bad file identifier)")]
    BadIdentifier,
    /// The FlatBuffers verifier rejected the frame.
    #[error("malformed frame: {0}")]
    Malformed(#[from] flatbuffers::InvalidFlatbuffer),
    /// The frame has no body.
    #[error("frame has no body")]
    MissingBody,
    /// The body is a union member this build does not know.
    #[error("unknown frame body type {0}")]
    UnknownBody(u8),
    /// The body is known but may not be sent by this peer (or on this
    /// transport), e.g. a server-only frame from a client.
    #[error("frame body {0} is not allowed here")]
    UnexpectedBody(&'static str),
    /// A WebSocket text message; the protocol is binary only.
    #[error("text messages are not supported; send binary frames")]
    TextMessage,
    /// A QUIC datagram carried a frame that is not volatile.
    #[error("only volatile frames may travel in datagrams, got {0}")]
    DatagramNotVolatile(&'static str),
}

impl ProtocolError {
    /// The wire error code to send before closing the connection.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            Self::BadIdentifier | Self::Malformed(_) | Self::MissingBody => ErrorCode::MalformedFrame,
            Self::UnknownBody(_) | Self::UnexpectedBody(_) | Self::TextMessage | Self::DatagramNotVolatile(_) => {
                ErrorCode::UnsupportedFrame
            }
        }
    }
}

impl ErrorCode {
    /// Whether the connection is closed after this code is sent.
    ///
    /// Codes below 200 answer one request; codes from 200 up are fatal.
    pub fn is_fatal(self) -> bool {
        self.0 >= 200
    }
}
