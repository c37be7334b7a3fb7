//! The socket side of a connection: what its bytes are (an HTTP request
//! stream, a WebSocket, an SSE stream, or a connection being closed),
//! independent of what Herald does with the messages. A WebSocket link
//! carries a [`Peer`] (a Herald session); an SSE link carries its own small
//! read-only state ([`SseLink`]); fan-out hands a message to either, each in
//! its wire format.

mod http;
mod ws;

pub(crate) use http::{HTTP_TIMEOUT, HttpLink, HttpState};
pub(crate) use ws::{FrameAction, WsFraming};

use crate::peer::Peer;
pub(crate) use crate::sse::SseLink;

/// What a connection's bytes are.
#[derive(Debug)]
pub(crate) enum Link {
    /// HTTP/1.1 requests (the server API, health, metrics) or the upgrade
    /// request of a WebSocket.
    Http(HttpLink),
    /// An upgraded WebSocket with its Herald session.
    Ws(Box<WsLink>),
    /// A Server-Sent Events stream.
    Sse(Box<SseLink>),
    /// Output shut down after a last answer; waiting for the peer to close,
    /// until the connection's deadline.
    Closing,
}

/// A WebSocket: the framing state and the peer it carries.
#[derive(Debug)]
pub(crate) struct WsLink {
    pub(crate) framing: WsFraming,
    pub(crate) peer: Peer,
}

impl Link {
    /// The peer this link carries, whatever the transport.
    pub(crate) fn peer_mut(&mut self) -> Option<&mut Peer> {
        match self {
            Link::Ws(w) => Some(&mut w.peer),
            Link::Http(_) | Link::Sse(_) | Link::Closing => None,
        }
    }

    pub(crate) fn is_ws(&self) -> bool {
        matches!(self, Link::Ws(_))
    }
}
