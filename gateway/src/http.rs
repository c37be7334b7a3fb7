//! HTTP/1.1 on the shard's sockets: the request head that either upgrades to
//! WebSocket at `/ws` or asks the server API, and the responses we write.
//! Heads and bodies are bounded before anything is buffered.

use thiserror::Error;

/// Longest request head we buffer.
pub(crate) const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Most headers we parse.
const MAX_HEADERS: usize = 32;

/// A request head with what the gateway needs from it, borrowed from the
/// received bytes (no allocation per request or upgrade).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestHead<'a> {
    pub(crate) method: &'a str,
    /// Path without the query string.
    pub(crate) path: &'a str,
    pub(crate) query: &'a str,
    pub(crate) head_len: usize,
    pub(crate) content_length: usize,
    pub(crate) keep_alive: bool,
    pub(crate) authorization: Option<&'a str>,
    /// `Sec-WebSocket-Key` of an upgrade request.
    pub(crate) ws_key: Option<&'a str>,
    /// `Sec-WebSocket-Version` of an upgrade request.
    pub(crate) ws_version: Option<&'a str>,
    /// `Expect: 100-continue`: the client waits for a go-ahead before the body.
    pub(crate) expect_continue: bool,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum HeadError {
    #[error("malformed HTTP request")]
    Malformed,
    #[error("request head larger than {MAX_HEAD_BYTES} bytes")]
    TooLarge,
    #[error("chunked request bodies are not supported; send Content-Length")]
    Chunked,
}

/// Parses a request head; `Ok(None)` means more bytes are needed.
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<RequestHead<'_>>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed),
    };
    if head_len > MAX_HEAD_BYTES {
        return Err(HeadError::TooLarge);
    }
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Err(HeadError::Malformed);
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut head = RequestHead {
        method,
        path,
        query,
        head_len,
        content_length: 0,
        keep_alive: req.version == Some(1),
        authorization: None,
        ws_key: None,
        ws_version: None,
        expect_continue: false,
    };
    let mut upgrade = false;
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).map_err(|_| HeadError::Malformed)?.trim();
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            head.content_length = value.parse().map_err(|_| HeadError::Malformed)?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HeadError::Chunked);
        } else if name.eq_ignore_ascii_case("connection") {
            let lower = value.to_ascii_lowercase();
            if lower.contains("close") {
                head.keep_alive = false;
            } else if lower.contains("keep-alive") {
                head.keep_alive = true;
            }
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade = value.eq_ignore_ascii_case("websocket");
        } else if name.eq_ignore_ascii_case("authorization") {
            head.authorization = Some(value);
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            head.ws_key = Some(value);
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            head.ws_version = Some(value);
        } else if name.eq_ignore_ascii_case("expect") {
            head.expect_continue = value.eq_ignore_ascii_case("100-continue");
        }
    }
    if !upgrade {
        head.ws_key = None;
    }
    Ok(Some(head))
}

impl<'a> RequestHead<'a> {
    /// The value of query parameter `name`, if present (no percent-decoding:
    /// our parameters are numbers).
    pub(crate) fn query_param(&self, name: &str) -> Option<&'a str> {
        self.query
            .split('&')
            .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    /// The rest of the path after `prefix`, percent-decoded (backends build
    /// these paths with `encodeURIComponent`, which writes `:` as `%3A`).
    /// None if it is not valid UTF-8 once decoded.
    pub(crate) fn path_param(&self, prefix: &str) -> Option<String> {
        let raw = self.path.strip_prefix(prefix)?;
        percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .ok()
            .map(|s| s.into_owned())
    }

    /// The bearer token of the `Authorization` header.
    pub(crate) fn bearer(&self) -> Option<&'a str> {
        let v = self.authorization?;
        let (scheme, token) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
    }
}

/// Appends the `101 Switching Protocols` answer to a WebSocket upgrade.
pub(crate) fn write_upgrade_response(out: &mut Vec<u8>, ws_key: &str) {
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(ws_key.as_bytes());
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n");
    out.extend_from_slice(b"Sec-WebSocket-Accept: ");
    out.extend_from_slice(accept.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

/// A complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) content_type: &'static str,
    pub(crate) body: Vec<u8>,
}

impl Response {
    pub(crate) fn json(status: u16, value: &serde_json::Value) -> Self {
        let mut body = serde_json::to_vec(value).unwrap_or_default();
        body.push(b'\n');
        Self {
            status,
            content_type: "application/json",
            body,
        }
    }

    /// An error body: `{"error": {"code": "...", "message": "..."}}`.
    pub(crate) fn error(status: u16, code: &str, message: &str) -> Self {
        Self::json(
            status,
            &serde_json::json!({ "error": { "code": code, "message": message } }),
        )
    }

    pub(crate) fn text(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            content_type,
            body: body.into(),
        }
    }

    /// The bytes on the wire.
    pub(crate) fn encode(&self, keep_alive: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{}\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len(),
            if keep_alive { "" } else { "Connection: close\r\n" },
        )
        .into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_request_is_recognised_and_answered_per_rfc_6455() {
        let req = b"GET /ws?x=1 HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\nrest";
        let head = parse_head(req).unwrap().unwrap();
        assert_eq!(head.path, "/ws");
        assert_eq!(head.query_param("x"), Some("1"));
        assert_eq!(head.head_len, req.len() - 4);
        assert_eq!(head.ws_key, Some("dGhlIHNhbXBsZSBub25jZQ=="));
        // The RFC's own example key and answer.
        let mut out = Vec::new();
        write_upgrade_response(&mut out, "dGhlIHNhbXBsZSBub25jZQ==");
        let resp = String::from_utf8(out).unwrap();
        assert!(resp.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    }

    #[test]
    fn partial_heads_wait_and_oversized_or_broken_ones_fail() {
        let req = b"POST /api/publish HTTP/1.1\r\nContent-Length: 12\r\nAuthorization: Bearer k1\r\n\r\n";
        for cut in 0..req.len() {
            assert_eq!(parse_head(&req[..cut]), Ok(None));
        }
        let head = parse_head(req).unwrap().unwrap();
        assert_eq!((head.content_length, head.bearer()), (12, Some("k1")));
        assert!(head.ws_key.is_none());
        let mut huge = b"GET / HTTP/1.1\r\nX: ".to_vec();
        huge.resize(MAX_HEAD_BYTES + 1, b'a');
        assert_eq!(parse_head(&huge), Err(HeadError::TooLarge));
        assert_eq!(parse_head(b"\x00\x01garbage\r\n\r\n"), Err(HeadError::Malformed));
        assert_eq!(
            parse_head(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            Err(HeadError::Malformed)
        );
        assert_eq!(
            parse_head(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(HeadError::Chunked)
        );
    }

    #[test]
    fn path_parameters_are_percent_decoded() {
        let head = parse_head(b"GET /api/history/chat%3Alobby HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.path_param("/api/history/").as_deref(), Some("chat:lobby"));
        let plain = parse_head(b"GET /api/history/chat:lobby HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(plain.path_param("/api/history/").as_deref(), Some("chat:lobby"));
        let bad = parse_head(b"GET /api/history/%FF HTTP/1.1\r\n\r\n").unwrap().unwrap();
        assert_eq!(bad.path_param("/api/history/"), None);
        assert_eq!(plain.path_param("/api/presence/"), None);
    }

    #[test]
    fn expect_continue_is_recognised() {
        let h = parse_head(b"POST /api/publish HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
        assert!(h.unwrap().unwrap().expect_continue);
    }

    #[test]
    fn keep_alive_follows_version_and_connection_header() {
        let h = |s: &[u8]| parse_head(s).unwrap().unwrap().keep_alive;
        assert!(h(b"GET / HTTP/1.1\r\n\r\n"));
        assert!(!h(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(!h(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(h(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    }
}
