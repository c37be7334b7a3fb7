//! HTTP/1.1 (RFC 9112) on the shard's sockets: request heads, parsed and
//! checked before anything else happens, and the responses we write. Heads
//! and bodies are bounded before anything is buffered.
//!
//! What hyper checks, we check: a missing or repeated `Host`, `Content-Length`
//! values that disagree, and header fields that are token lists
//! (`Connection`, `Upgrade`) compared by token, case-insensitively, never by
//! substring.

use std::borrow::Cow;

use thiserror::Error;

/// Longest request head we buffer.
pub(crate) const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Largest request body (server API).
pub(crate) const MAX_BODY_BYTES: usize = 256 * 1024;
/// Most bytes a connection's unparsed input may hold: one whole request. A
/// client that pipelines more waits in its own socket buffer until the
/// answers before it are written.
pub(crate) const MAX_REQUEST_BYTES: usize = MAX_HEAD_BYTES + MAX_BODY_BYTES;
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
    /// HTTP/1.x minor version.
    pub(crate) minor_version: u8,
    pub(crate) head_len: usize,
    pub(crate) content_length: usize,
    pub(crate) keep_alive: bool,
    pub(crate) authorization: Option<&'a str>,
    /// `Connection` lists the `upgrade` token.
    pub(crate) connection_upgrade: bool,
    /// `Upgrade` lists the `websocket` protocol.
    pub(crate) upgrade_websocket: bool,
    /// `Sec-WebSocket-Key`, as sent.
    pub(crate) ws_key: Option<&'a str>,
    /// `Sec-WebSocket-Version`, as sent.
    pub(crate) ws_version: Option<&'a str>,
    /// `Expect: 100-continue`: the client waits for a go-ahead before the body.
    pub(crate) expect_continue: bool,
    /// `Host`, as sent.
    pub(crate) host: Option<&'a str>,
    /// `Origin` (browsers send it on cross-origin and WebSocket requests).
    pub(crate) origin: Option<&'a str>,
    /// `Cookie`, as sent.
    pub(crate) cookie: Option<&'a str>,
    /// `Last-Event-ID` of an EventSource reconnecting.
    pub(crate) last_event_id: Option<&'a str>,
    /// `Sec-WebSocket-Protocol`: the subprotocols a client offers.
    pub(crate) ws_protocols: Option<&'a str>,
    /// `Access-Control-Request-Method` of a CORS preflight.
    pub(crate) cors_method: Option<&'a str>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum HeadError {
    #[error("malformed HTTP request")]
    Malformed,
    #[error("request head larger than {MAX_HEAD_BYTES} bytes or with too many headers")]
    TooLarge,
    #[error("chunked request bodies are not supported; send Content-Length")]
    Chunked,
    #[error("an HTTP/1.1 request needs exactly one Host header")]
    Host,
    #[error("Content-Length values disagree or are not a number")]
    ContentLength,
}

impl HeadError {
    /// The status that answers it (the connection closes afterwards).
    pub(crate) fn status(&self) -> u16 {
        match self {
            HeadError::TooLarge => 431,
            HeadError::Chunked => 411,
            HeadError::Malformed | HeadError::Host | HeadError::ContentLength => 400,
        }
    }
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
    let (Some(method), Some(target), Some(minor_version)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed);
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut head = RequestHead {
        method,
        path,
        query,
        minor_version,
        head_len,
        content_length: 0,
        keep_alive: minor_version == 1,
        authorization: None,
        connection_upgrade: false,
        upgrade_websocket: false,
        ws_key: None,
        ws_version: None,
        expect_continue: false,
        host: None,
        origin: None,
        cookie: None,
        last_event_id: None,
        ws_protocols: None,
        cors_method: None,
    };
    let mut hosts = 0;
    let mut content_length: Option<usize> = None;
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).map_err(|_| HeadError::Malformed)?.trim();
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
            head.host = Some(value);
        } else if name.eq_ignore_ascii_case("origin") {
            head.origin = Some(value);
        } else if name.eq_ignore_ascii_case("cookie") {
            head.cookie = Some(value);
        } else if name.eq_ignore_ascii_case("last-event-id") {
            head.last_event_id = Some(value);
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            head.ws_protocols = Some(value);
        } else if name.eq_ignore_ascii_case("access-control-request-method") {
            head.cors_method = Some(value);
        } else if name.eq_ignore_ascii_case("content-length") {
            // RFC 9112 §6.3: repeated values (as lines or as a list) must agree.
            for v in value.split(',') {
                let n = v.trim().parse::<usize>().map_err(|_| HeadError::ContentLength)?;
                if content_length.is_some_and(|c| c != n) {
                    return Err(HeadError::ContentLength);
                }
                content_length = Some(n);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HeadError::Chunked);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in tokens(value) {
                if token.eq_ignore_ascii_case("close") {
                    head.keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") && minor_version == 0 {
                    head.keep_alive = true;
                } else if token.eq_ignore_ascii_case("upgrade") {
                    head.connection_upgrade = true;
                }
            }
        } else if name.eq_ignore_ascii_case("upgrade") {
            // `protocol-name["/" protocol-version]`, a list.
            head.upgrade_websocket |= tokens(value).any(|p| {
                let name = p.split_once('/').map_or(p, |(n, _)| n);
                name.eq_ignore_ascii_case("websocket")
            });
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
    // RFC 9112 §3.2: exactly one Host in HTTP/1.1; at most one in 1.0.
    if hosts > 1 || (minor_version == 1 && hosts == 0) {
        return Err(HeadError::Host);
    }
    // A `Connection: close` that came before `keep-alive` still wins.
    if head.keep_alive
        && req
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
            .any(|h| std::str::from_utf8(h.value).is_ok_and(|v| tokens(v).any(|t| t.eq_ignore_ascii_case("close"))))
    {
        head.keep_alive = false;
    }
    head.content_length = content_length.unwrap_or(0);
    Ok(Some(head))
}

/// The elements of a comma-separated header list, trimmed, empty ones left
/// out (RFC 9110 §5.6.1).
fn tokens(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|t| !t.is_empty())
}

impl<'a> RequestHead<'a> {
    /// Whether the client asks to upgrade to WebSocket at all (any of the
    /// upgrade headers present), as opposed to a plain request.
    pub(crate) fn wants_websocket(&self) -> bool {
        self.upgrade_websocket || self.ws_key.is_some()
    }

    /// The value of query parameter `name`, if present (no percent-decoding:
    /// our parameters are numbers).
    pub(crate) fn query_param(&self, name: &str) -> Option<&'a str> {
        self.query_params().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// Every `name=value` pair of the query string, raw (not decoded).
    pub(crate) fn query_params(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.query
            .split('&')
            .filter(|kv| !kv.is_empty())
            .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
    }

    /// The value of cookie `name`, if the request carries it.
    pub(crate) fn cookie(&self, name: &str) -> Option<&'a str> {
        self.cookie?
            .split(';')
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.trim_matches('"'))
    }

    /// Whether the client offers WebSocket subprotocol `protocol`, spelled
    /// exactly so (a browser fails the connection unless the answer equals
    /// one of its offers).
    pub(crate) fn offers_protocol(&self, protocol: &str) -> bool {
        self.ws_protocols.is_some_and(|v| tokens(v).any(|p| p == protocol))
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

/// A complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) content_type: &'static str,
    /// Extra header lines, each `Name: value`.
    pub(crate) headers: Vec<Cow<'static, str>>,
    pub(crate) body: Vec<u8>,
}

impl Response {
    pub(crate) fn json(status: u16, value: &serde_json::Value) -> Self {
        let mut body = serde_json::to_vec(value).unwrap_or_default();
        body.push(b'\n');
        Self {
            status,
            content_type: "application/json",
            headers: Vec::new(),
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
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// The same response with one more header line (`Name: value`).
    pub(crate) fn with_header(mut self, line: impl Into<Cow<'static, str>>) -> Self {
        self.headers.push(line.into());
        self
    }

    /// The same response with more header lines.
    pub(crate) fn with_headers(mut self, lines: impl IntoIterator<Item = Cow<'static, str>>) -> Self {
        self.headers.extend(lines);
        self
    }

    /// A body-less answer (`204 No Content` to a CORS preflight).
    pub(crate) fn empty(status: u16) -> Self {
        Self::text(status, "text/plain", Vec::new())
    }

    /// The bytes on the wire, appended to `out`.
    pub(crate) fn encode_into(&self, keep_alive: bool, out: &mut Vec<u8>) {
        use std::io::Write as _;
        let _ = write!(out, "HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        // RFC 9110 §8.6: no Content-Length (and no body) on a 204.
        if self.status != 204 {
            let _ = write!(
                out,
                "Content-Type: {}\r\nContent-Length: {}\r\n",
                self.content_type,
                self.body.len()
            );
        }
        out.extend_from_slice(b"Cache-Control: no-store\r\n");
        for line in &self.headers {
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
    }

    /// The bytes on the wire.
    pub(crate) fn encode(&self, keep_alive: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + self.body.len());
        self.encode_into(keep_alive, &mut out);
        out
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
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
    fn upgrade_headers_are_read_as_token_lists() {
        let req =
            b"GET /ws?x=1 HTTP/1.1\r\nHost: a\r\nUpgrade: foo/1, WebSocket\r\nConnection: keep-alive, Upgrade\r\n\
                    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\nrest";
        let head = parse_head(req).unwrap().unwrap();
        assert_eq!(head.path, "/ws");
        assert_eq!(head.query_param("x"), Some("1"));
        assert_eq!(head.head_len, req.len() - 4);
        assert_eq!(head.ws_key, Some("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(head.upgrade_websocket && head.connection_upgrade && head.keep_alive);
        let h = |s: &'static [u8]| parse_head(s).unwrap().unwrap();
        assert!(!h(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgraded\r\n\r\n").connection_upgrade);
        assert!(!h(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocketx\r\n\r\n").upgrade_websocket);
    }

    #[test]
    fn partial_heads_wait_and_oversized_or_broken_ones_fail() {
        let req = b"POST /api/publish HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\nAuthorization: Bearer k1\r\n\r\n";
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
            parse_head(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n"),
            Err(HeadError::ContentLength)
        );
        assert_eq!(
            parse_head(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(HeadError::Chunked)
        );
    }

    #[test]
    fn content_lengths_must_agree() {
        let p = |s: &[u8]| parse_head(s).map(|h| h.map(|h| h.content_length));
        assert_eq!(
            p(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            Err(HeadError::ContentLength)
        );
        assert_eq!(
            p(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n"),
            Err(HeadError::ContentLength)
        );
        assert_eq!(
            p(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"),
            Ok(Some(5))
        );
        assert_eq!(
            p(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n"),
            Ok(Some(5))
        );
    }

    #[test]
    fn http_1_1_needs_exactly_one_host() {
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\n\r\n"), Err(HeadError::Host));
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            Err(HeadError::Host)
        );
        assert!(parse_head(b"GET / HTTP/1.0\r\n\r\n").unwrap().is_some());
    }

    #[test]
    fn path_parameters_are_percent_decoded() {
        let head = parse_head(b"GET /api/history/chat%3Alobby HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.path_param("/api/history/").as_deref(), Some("chat:lobby"));
        let plain = parse_head(b"GET /api/history/chat:lobby HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(plain.path_param("/api/history/").as_deref(), Some("chat:lobby"));
        let bad = parse_head(b"GET /api/history/%FF HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(bad.path_param("/api/history/"), None);
        assert_eq!(plain.path_param("/api/presence/"), None);
    }

    #[test]
    fn expect_continue_is_recognised() {
        let h =
            parse_head(b"POST /api/publish HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
        assert!(h.unwrap().unwrap().expect_continue);
    }

    #[test]
    fn keep_alive_follows_version_and_connection_tokens() {
        let h = |s: &[u8]| parse_head(s).unwrap().unwrap().keep_alive;
        assert!(h(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(!h(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(!h(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"));
        assert!(!h(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Close\r\n\r\n"
        ));
        assert!(h(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: closed-captioning\r\n\r\n"));
        assert!(h(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
        assert!(!h(
            b"GET / HTTP/1.0\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n"
        ));
    }

    #[test]
    fn responses_carry_extra_headers_and_the_close() {
        let r = Response::error(426, "upgrade_required", "x").with_header("Sec-WebSocket-Version: 13");
        let text = String::from_utf8(r.encode(false)).unwrap();
        assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"));
        assert!(text.contains("\r\nConnection: close\r\n\r\n"));
    }
}
