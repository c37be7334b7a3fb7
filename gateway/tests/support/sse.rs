//! A hand-written `text/event-stream` reader over a loopback TCP stream, so
//! the tests see the bytes the node writes (as a browser's EventSource
//! parses them: `event:`, `id:`, `data:`, comments, blank-line dispatch).

use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::{HttpResponse, WAIT};

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `event:` (EventSource's default is "message").
    pub name: String,
    /// The `id:` line of this event, if it had one.
    pub id: Option<String>,
    pub data: String,
}

impl Event {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("event data is not JSON ({e}): {:?}", self.data))
    }
}

/// An open stream (status 200 read, headers kept).
pub struct Stream {
    reader: BufReader<TcpStream>,
    pub headers: Vec<(String, String)>,
    /// Comment lines seen (`: heartbeat`).
    pub comments: Vec<String>,
    /// The last `id:` seen, as EventSource keeps it for `Last-Event-ID`.
    pub last_id: Option<String>,
    /// `retry:` as sent.
    pub retry: Option<u64>,
}

/// What opening a stream came to.
pub enum Opened {
    Stream(Stream),
    /// A non-200 answer (read whole).
    Refused(HttpResponse),
}

impl Opened {
    pub fn stream(self) -> Stream {
        match self {
            Opened::Stream(s) => s,
            Opened::Refused(r) => panic!("stream refused: {} {}", r.status, r.text()),
        }
    }

    pub fn refused(self) -> HttpResponse {
        match self {
            Opened::Stream(_) => panic!("stream opened, expected a refusal"),
            Opened::Refused(r) => r,
        }
    }
}

/// `GET target` with `headers` (whole lines, no CRLF).
pub async fn open(addr: SocketAddr, target: &str, headers: &[&str]) -> Opened {
    let sock = tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("connect within the wait bound")
        .expect("connect");
    open_on(sock, target, headers).await
}

/// [`open`] on a socket the test set up (a small receive buffer).
pub async fn open_on(mut sock: TcpStream, target: &str, headers: &[&str]) -> Opened {
    let mut req = format!("GET {target} HTTP/1.1\r\nHost: herald.test\r\nAccept: text/event-stream\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    sock.write_all(req.as_bytes()).await.expect("send request");
    let mut reader = BufReader::new(sock);
    tokio::time::timeout(WAIT, async {
        let mut line = String::new();
        reader.read_line(&mut line).await.expect("status line");
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("status line {line:?}"));
        let mut headers = Vec::new();
        loop {
            line.clear();
            reader.read_line(&mut line).await.expect("header");
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (n, v) = l.split_once(':').expect("header line");
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        if status != 200 {
            let len: usize = headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .map_or(0, |(_, v)| v.parse().unwrap());
            let mut body = vec![0; len];
            reader.read_exact(&mut body).await.expect("body");
            return Opened::Refused(HttpResponse { status, headers, body });
        }
        Opened::Stream(Stream {
            reader,
            headers,
            comments: Vec::new(),
            last_id: None,
            retry: None,
        })
    })
    .await
    .expect("an answer within the wait bound")
}

impl Stream {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The next event; None when the stream ends. Panics after the wait
    /// bound.
    pub async fn next(&mut self) -> Option<Event> {
        tokio::time::timeout(WAIT, self.next_unbounded())
            .await
            .expect("an event within the wait bound")
    }

    async fn next_unbounded(&mut self) -> Option<Event> {
        let mut name = String::new();
        let mut id = None;
        let mut data: Option<String> = None;
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.reader.read_line(&mut line).await.ok()?;
            if n == 0 {
                return None;
            }
            let l = line.strip_suffix('\n').unwrap_or(&line);
            if l.is_empty() {
                if let Some(data) = data.take() {
                    let name = if name.is_empty() { "message".to_owned() } else { name };
                    return Some(Event { name, id, data });
                }
                name.clear();
                id = None;
                continue;
            }
            if let Some(c) = l.strip_prefix(':') {
                self.comments.push(c.trim().to_owned());
                continue;
            }
            let (field, value) = l
                .split_once(':')
                .map_or((l, ""), |(f, v)| (f, v.strip_prefix(' ').unwrap_or(v)));
            match field {
                "event" => name = value.to_owned(),
                "id" => {
                    id = Some(value.to_owned());
                    self.last_id = Some(value.to_owned());
                }
                "data" => match &mut data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => data = Some(value.to_owned()),
                },
                "retry" => self.retry = value.parse().ok(),
                _ => {}
            }
        }
    }

    /// The next event named `name`, skipping others.
    pub async fn next_named(&mut self, name: &str) -> Event {
        loop {
            let e = self
                .next()
                .await
                .unwrap_or_else(|| panic!("stream ended before a {name} event"));
            if e.name == name {
                return e;
            }
        }
    }

    /// The next `n` message events (JSON data), skipping other events.
    pub async fn messages(&mut self, n: usize) -> Vec<Event> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let e = self.next().await.expect("stream open");
            if e.name == "message" {
                out.push(e);
            }
        }
        out
    }

    /// Every event until the stream ends.
    pub async fn until_end(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(e) = self.next().await {
            out.push(e);
        }
        out
    }
}
