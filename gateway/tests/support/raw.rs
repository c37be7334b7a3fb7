//! Blocking raw-TCP helpers for the RFC conformance tests
//! (`http_conformance.rs`, `websocket_conformance.rs`): a node, a loopback
//! connection with its unread input, and HTTP/1.1 responses read off it.
//! Every wait is bounded by [`BOUND`].

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use herald_gateway::{NodeConfig, NodeHandle};

/// Bound on any single wait for the node (answers on loopback take
/// milliseconds; this leaves room for a loaded machine).
pub const BOUND: Duration = Duration::from_secs(5);

/// A one-shard node with the default configuration that lets go quickly once
/// the test's sockets are gone.
pub fn one_shard() -> NodeHandle {
    one_shard_with(NodeConfig::default())
}

/// A one-shard node with `base`'s other settings that lets go quickly once
/// the test's sockets are gone.
pub fn one_shard_with(base: NodeConfig) -> NodeHandle {
    super::node_with(NodeConfig {
        shards: 1,
        shutdown_grace: Duration::from_millis(200),
        ..base
    })
}

// ---- responses ----------------------------------------------------------------

#[derive(Debug)]
pub struct HttpResponse {
    /// The status line's version, e.g. `HTTP/1.1`.
    pub version: String,
    pub status: u16,
    /// Names lower-cased, values trimmed.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether header `name` lists `token` (case-insensitive, comma-separated).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn show(&self) -> String {
        let headers: Vec<String> = self.headers.iter().map(|(n, v)| format!("{n}: {v}")).collect();
        let mut body = self.text();
        if let Some((cut, _)) = body.char_indices().nth(200) {
            body.truncate(cut);
            body.push_str("...");
        }
        format!("{} {} [{}] {body:?}", self.version, self.status, headers.join("; "))
    }
}

/// Why reading stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    Timeout,
    Eof,
    Reset(String),
    Malformed(String),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Timeout => write!(f, "nothing within {BOUND:?}"),
            End::Eof => write!(f, "the server closed the connection (EOF)"),
            End::Reset(e) => write!(f, "the connection failed: {e}"),
            End::Malformed(e) => write!(f, "malformed data from the server: {e}"),
        }
    }
}

impl End {
    /// Whether the connection is gone (EOF or an error), not just quiet.
    pub fn closed(&self) -> bool {
        matches!(self, End::Eof | End::Reset(_))
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses a response at the start of `buf`; Ok(None) = need more. The body
/// is framed by `Content-Length`, which every response must have except the
/// bodiless 1xx, 204 and 304 (RFC 9112 §6.3).
pub fn parse_response(buf: &[u8]) -> Result<Option<(HttpResponse, usize)>, End> {
    let Some((mut resp, body_at)) = parse_head(buf)? else {
        return Ok(None);
    };
    let len = match resp.header("content-length") {
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| End::Malformed(format!("Content-Length {v:?}")))?,
        None if (100..200).contains(&resp.status) || resp.status == 204 || resp.status == 304 => 0,
        None => return Err(End::Malformed(format!("no Content-Length in {}", resp.show()))),
    };
    let Some(body) = buf.get(body_at..body_at + len) else {
        return Ok(None);
    };
    resp.body = body.to_vec();
    Ok(Some((resp, body_at + len)))
}

/// A response head at the start of `buf` (body left empty) and where its
/// body starts; Ok(None) = need more.
pub fn parse_head(buf: &[u8]) -> Result<Option<(HttpResponse, usize)>, End> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > 64 * 1024 {
            return Err(End::Malformed("no end of response head in 64 KiB".into()));
        }
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split(' ');
    let (version, status) = match (parts.next(), parts.next().map(str::parse::<u16>)) {
        (Some(v), Some(Ok(s))) if v.starts_with("HTTP/1.") => (v.to_owned(), s),
        _ => return Err(End::Malformed(format!("status line {status_line:?}"))),
    };
    let mut headers = Vec::new();
    for line in lines {
        let Some((n, v)) = line.split_once(':') else {
            return Err(End::Malformed(format!("header line {line:?}")));
        };
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let resp = HttpResponse {
        version,
        status,
        headers,
        body: Vec::new(),
    };
    Ok(Some((resp, end + 4)))
}

// ---- a raw connection ---------------------------------------------------------

/// A loopback TCP connection to the node with its unread input.
#[derive(Debug)]
pub struct Peer {
    pub sock: TcpStream,
    /// Input read but not yet consumed.
    pub buf: Vec<u8>,
}

impl Peer {
    pub fn connect(addr: SocketAddr) -> Peer {
        let sock = TcpStream::connect_timeout(&addr, BOUND).expect("TCP connect to the node");
        sock.set_nodelay(true).expect("TCP_NODELAY");
        sock.set_write_timeout(Some(BOUND)).expect("write timeout");
        Peer { sock, buf: Vec::new() }
    }

    pub fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.sock
            .write_all(bytes)
            .map_err(|e| format!("writing {} bytes to the node failed: {e}", bytes.len()))
    }

    /// Reads more input; fails at the deadline, on EOF or on an error.
    pub fn fill(&mut self, deadline: Instant) -> Result<(), End> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(End::Timeout);
        }
        self.sock
            .set_read_timeout(Some(left))
            .map_err(|e| End::Reset(e.to_string()))?;
        let mut chunk = [0u8; 64 * 1024];
        match self.sock.read(&mut chunk) {
            Ok(0) => Err(End::Eof),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => Err(End::Timeout),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(End::Reset(e.to_string())),
        }
    }

    /// The next response, within [`BOUND`].
    pub fn read_response(&mut self) -> Result<HttpResponse, End> {
        let deadline = Instant::now() + BOUND;
        loop {
            if let Some((resp, used)) = parse_response(&self.buf)? {
                self.buf.drain(..used);
                return Ok(resp);
            }
            self.fill(deadline)?;
        }
    }

    /// The head of the next response (a stream's: its body has no end),
    /// within [`BOUND`]; the body's bytes stay in `buf`.
    pub fn read_response_head(&mut self) -> Result<HttpResponse, End> {
        let deadline = Instant::now() + BOUND;
        loop {
            if let Some((resp, used)) = parse_head(&self.buf)? {
                self.buf.drain(..used);
                return Ok(resp);
            }
            self.fill(deadline)?;
        }
    }

    /// Whether the server closes the connection within [`BOUND`], with
    /// nothing more sent (`Err` describes what came instead).
    pub fn closed_by_server(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + BOUND;
        loop {
            if !self.buf.is_empty() {
                return Err(format!("{} more bytes arrived instead of EOF", self.buf.len()));
            }
            match self.fill(deadline) {
                Ok(()) => {}
                Err(e) if e.closed() => return Ok(()),
                Err(e) => return Err(format!("the connection stayed open ({e})")),
            }
        }
    }
}

/// A request from a request line and header lines (each without CRLF).
pub fn request(request_line: &str, headers: &[&str]) -> String {
    let mut r = format!("{request_line}\r\n");
    for h in headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r
}
