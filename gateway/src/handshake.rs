//! The WebSocket opening handshake, server side (RFC 6455 §4.2): which
//! requests upgrade at `GET /ws`, and the exact refusal for each that does
//! not (as tungstenite answers them).

use base64::Engine as _;

use crate::http::{RequestHead, Response};

/// The one path that upgrades.
pub(crate) const WS_PATH: &str = "/ws";

/// The WebSocket subprotocol a client may offer (`new WebSocket(url,
/// "herald.v1")`); the server names it back when offered. Clients that offer
/// none are served the same protocol, so offering it is optional.
pub(crate) const PROTOCOL: &str = "herald.v1";

/// What to do with a request for [`WS_PATH`], or with an upgrade request
/// elsewhere.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Handshake<'a> {
    /// Not about WebSocket: route it as a plain HTTP request.
    NotWebSocket,
    /// Upgrade with this `Sec-WebSocket-Key`.
    Accept(&'a str),
    /// Answer and close.
    Refuse(Response),
}

/// Decides on a request head (the `Host` rule is already checked by the
/// parser for every request).
pub(crate) fn check<'a>(head: &RequestHead<'a>) -> Handshake<'a> {
    let wants = head.wants_websocket();
    if head.path != WS_PATH {
        return if wants {
            Handshake::Refuse(Response::error(404, "not_found", "the WebSocket endpoint is GET /ws"))
        } else {
            Handshake::NotWebSocket
        };
    }
    // RFC 9110 §15.5.22: a 426 names the protocol to upgrade to.
    let upgrade_required = |message| {
        Response::error(426, "upgrade_required", message)
            .with_header("Upgrade: websocket")
            .with_header("Connection: Upgrade")
            .with_header("Sec-WebSocket-Version: 13")
    };
    if !wants {
        return Handshake::Refuse(upgrade_required(
            "GET /ws is a WebSocket endpoint: send the upgrade headers",
        ));
    }
    if head.method != "GET" {
        return Handshake::Refuse(
            Response::error(405, "method_not_allowed", "a WebSocket upgrade is a GET").with_header("Allow: GET"),
        );
    }
    let bad = |message| Handshake::Refuse(Response::error(400, "bad_request", message));
    if head.minor_version != 1 {
        return bad("a WebSocket upgrade needs HTTP/1.1");
    }
    if !head.upgrade_websocket {
        return bad("a WebSocket upgrade needs Upgrade: websocket");
    }
    if !head.connection_upgrade {
        return bad("a WebSocket upgrade needs Connection: Upgrade");
    }
    // §4.4: any other version gets 426 and the versions we speak.
    if head.ws_version != Some("13") {
        return Handshake::Refuse(upgrade_required("Sec-WebSocket-Version must be 13"));
    }
    match head.ws_key {
        Some(key) if is_valid_key(key) => Handshake::Accept(key),
        Some(_) => bad("Sec-WebSocket-Key must be 16 bytes in base64"),
        None => bad("a WebSocket upgrade needs Sec-WebSocket-Key"),
    }
}

/// §4.1: the key is a randomly selected 16-byte value, base64-encoded.
fn is_valid_key(key: &str) -> bool {
    key.len() == 24
        && base64::engine::general_purpose::STANDARD
            .decode(key)
            .is_ok_and(|raw| raw.len() == 16)
}

/// Appends the `101 Switching Protocols` answer to a WebSocket upgrade,
/// naming `protocol` when the client offered it (§4.2.2: a server must not
/// name one the client did not offer, and other offers are declined by
/// leaving the header out; extensions such as permessage-deflate likewise).
pub(crate) fn write_accept(out: &mut Vec<u8>, ws_key: &str, protocol: Option<&str>) {
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(ws_key.as_bytes());
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n");
    out.extend_from_slice(b"Sec-WebSocket-Accept: ");
    out.extend_from_slice(accept.as_bytes());
    if let Some(protocol) = protocol {
        out.extend_from_slice(b"\r\nSec-WebSocket-Protocol: ");
        out.extend_from_slice(protocol.as_bytes());
    }
    out.extend_from_slice(b"\r\n\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse_head;

    const GOOD: &str = "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    fn decide(req: &str) -> Result<String, u16> {
        let head = parse_head(req.as_bytes()).unwrap().unwrap();
        match check(&head) {
            Handshake::Accept(k) => Ok(k.to_owned()),
            Handshake::Refuse(r) => Err(r.status),
            Handshake::NotWebSocket => Err(0),
        }
    }

    #[test]
    fn the_rfc_example_is_accepted_and_answered() {
        assert_eq!(decide(GOOD), Ok("dGhlIHNhbXBsZSBub25jZQ==".to_owned()));
        let mut out = Vec::new();
        write_accept(&mut out, "dGhlIHNhbXBsZSBub25jZQ==", None);
        let resp = String::from_utf8(out).unwrap();
        assert!(resp.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(!resp.contains("Sec-WebSocket-Protocol"));
    }

    #[test]
    fn the_subprotocol_is_named_only_when_offered() {
        let offered = GOOD.replace("\r\n\r\n", "\r\nSec-WebSocket-Protocol: chat, herald.v1\r\n\r\n");
        let head = parse_head(offered.as_bytes()).unwrap().unwrap();
        assert!(head.offers_protocol(PROTOCOL));
        assert!(!head.offers_protocol("chat.v2"));
        let other = GOOD.replace("\r\n\r\n", "\r\nSec-WebSocket-Protocol: HERALD.V1\r\n\r\n");
        let head = parse_head(other.as_bytes()).unwrap().unwrap();
        // Echoed bytes must equal an offered value exactly.
        assert!(!head.offers_protocol(PROTOCOL));
        let mut out = Vec::new();
        write_accept(&mut out, "dGhlIHNhbXBsZSBub25jZQ==", Some(PROTOCOL));
        let resp = String::from_utf8(out).unwrap();
        assert!(resp.ends_with("Sec-WebSocket-Protocol: herald.v1\r\n\r\n"), "{resp}");
    }

    #[test]
    fn each_broken_upgrade_gets_its_status() {
        let with = |from: &str, to: &str| GOOD.replace(from, to);
        assert_eq!(decide(&with("HTTP/1.1", "HTTP/1.0")), Err(400));
        assert_eq!(decide(&with("Connection: Upgrade", "Connection: keep-alive")), Err(400));
        assert_eq!(decide(&with("dGhlIHNhbXBsZSBub25jZQ==", "abc")), Err(400));
        // Base64 of 15 and 17 bytes.
        assert_eq!(
            decide(&with("dGhlIHNhbXBsZSBub25jZQ==", "AAAAAAAAAAAAAAAAAAAA")),
            Err(400)
        );
        assert_eq!(
            decide(&with("dGhlIHNhbXBsZSBub25jZQ==", "AAAAAAAAAAAAAAAAAAAAAAA=")),
            Err(400)
        );
        assert_eq!(
            decide(&with("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "")),
            Err(400)
        );
        assert_eq!(decide(&with("Version: 13", "Version: 8")), Err(426));
        assert_eq!(decide(&with("Sec-WebSocket-Version: 13\r\n", "")), Err(426));
        assert_eq!(decide(&with("GET /ws", "POST /ws")), Err(405));
        assert_eq!(decide(&with("GET /ws", "GET /other")), Err(404));
        assert_eq!(decide("GET /ws HTTP/1.1\r\nHost: a\r\n\r\n"), Err(426));
        assert_eq!(decide("GET /health HTTP/1.1\r\nHost: a\r\n\r\n"), Err(0));
        assert!(decide(&with("Upgrade: websocket", "Upgrade: foo/1, websocket")).is_ok());
    }
}
