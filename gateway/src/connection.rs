//! One WebSocket connection: upgrade, then shuttle frames between the socket
//! and its [`ServerSession`], and session events to the node.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use herald_protocol::ErrorCode;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::node::Node;

/// WebSocket close code for a fatal herald error code: 4000 + code
/// (e.g. 4208 for `SlowConsumer`), so browsers can see why without parsing
/// the last frame.
pub fn close_code(code: ErrorCode) -> u16 {
    4000 + code.0.min(999)
}

fn ws_config(max_frame: usize) -> WebSocketConfig {
    // Small read buffer, frames coalesced up to 16 KiB per write, and message
    // limits equal to the protocol's frame limit.
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(Some(max_frame))
        .max_frame_size(Some(max_frame))
}

#[allow(clippy::result_large_err)] // the callback signature is tungstenite's
fn check_path(req: &Request, resp: Response) -> Result<Response, ErrorResponse> {
    if req.uri().path() == "/ws" {
        Ok(resp)
    } else {
        let mut err = ErrorResponse::new(Some("herald: WebSocket endpoint is /ws\n".into()));
        *err.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::NOT_FOUND;
        Err(err)
    }
}

pub(crate) async fn serve(node: Rc<RefCell<Node>>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let (max_frame, handshake) = {
        let n = node.borrow();
        (
            n.config.session.limits.decode.max_frame_bytes,
            n.config.session.handshake_timeout,
        )
    };
    let upgrade = tokio_tungstenite::accept_hdr_async_with_config(stream, check_path, Some(ws_config(max_frame)));
    let ws = match tokio::time::timeout(handshake, upgrade).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "websocket upgrade failed");
            return;
        }
        Err(_) => return,
    };
    let (id, conn) = node.borrow_mut().add_conn(Instant::now());
    let over_limit = node.borrow().conns.len() > node.borrow().config.max_connections;
    if over_limit {
        conn.borrow_mut()
            .session
            .close(ErrorCode::ConnectionLimit, "node connection limit reached");
    }
    let wake = conn.borrow().wake.clone();
    let (mut sink, mut source) = ws.split();
    loop {
        loop {
            let event = conn.borrow_mut().session.poll_event();
            match event {
                Some(ev) => node.borrow_mut().handle(Instant::now(), id, ev),
                None => break,
            }
        }
        let frames: Vec<Bytes> = {
            let mut c = conn.borrow_mut();
            std::iter::from_fn(|| c.session.poll_transmit()).collect()
        };
        let mut write_failed = false;
        for frame in frames {
            if sink.feed(Message::Binary(frame)).await.is_err() {
                write_failed = true;
                break;
            }
        }
        if write_failed || sink.flush().await.is_err() {
            break;
        }
        let close = conn.borrow().session.close_reason().map(|(c, r)| (c, r.to_owned()));
        if let Some((code, reason)) = close {
            let frame = CloseFrame {
                code: CloseCode::from(close_code(code)),
                reason: truncate(&reason, 120).into(),
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(Message::Close(Some(frame)))).await;
            break;
        }
        let deadline = conn.borrow().session.poll_timeout();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            msg = source.next() => {
                let now = Instant::now();
                let mut c = conn.borrow_mut();
                match msg {
                    Some(Ok(Message::Binary(b))) => {
                        if let Err(e) = c.session.handle_frame(now, b) {
                            tracing::debug!(conn = id, error = %e, "protocol error");
                        }
                    }
                    Some(Ok(Message::Text(_))) => {
                        c.session.handle_text();
                    }
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Ok(_)) => {}
                    Some(Err(WsError::Capacity(e))) => {
                        c.session.close(ErrorCode::FrameTooLarge, &format!("frame too large: {e}"));
                    }
                    Some(Err(e)) => {
                        tracing::debug!(conn = id, error = %e, "websocket read failed");
                        break;
                    }
                }
            }
            _ = wake.notified() => {}
            _ = sleep => conn.borrow_mut().session.handle_timeout(Instant::now()),
        }
    }
    node.borrow_mut().remove_conn(id);
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
