//! The socket side of a connection: what its bytes are (an HTTP request
//! stream, a WebSocket, or a connection being closed), independent of what
//! Herald does with the messages. A WebSocket link carries a [`Peer`], the
//! part fan-out and the room owners deal with; later links (QUIC streams,
//! SSE responses) carry one too, so everything above them stays the same.

mod http;
mod ws;

pub(crate) use http::{HTTP_TIMEOUT, HttpLink, HttpState};
pub(crate) use ws::{FrameAction, WsFraming};

use crate::peer::Peer;

/// What a connection's bytes are.
#[derive(Debug)]
pub(crate) enum Link {
    /// HTTP/1.1 requests (the server API, health, metrics) or the upgrade
    /// request of a WebSocket.
    Http(HttpLink),
    /// An upgraded WebSocket with its Herald session.
    Ws(Box<WsLink>),
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
            Link::Http(_) | Link::Closing => None,
        }
    }

    pub(crate) fn is_ws(&self) -> bool {
        matches!(self, Link::Ws(_))
    }
}
