//! The `sse://` target's read side: the request that opens a stream, the
//! answer's head, an incremental `text/event-stream` parser (any split
//! across reads, bounded buffering) and a reader for the few events the
//! generator acts on.
//!
//! Message data is read by a small scanner of flat JSON objects rather
//! than serde_json: the generator shares the machine with the node, and a
//! delivery's cost on the generator is taken from the target (the ws://
//! path is hand-parsed for the same reason).

use std::borrow::Cow;

/// The longest line (and the most data one event may carry) accepted; more
/// fails the connection rather than growing its buffer without bound.
pub const MAX_LINE: usize = 1 << 20;

/// Largest answer head, and error body, read before a stream starts.
const MAX_HEAD: usize = 16 * 1024;

/// `GET path?room=…&room=…&token=…` for one stream.
pub fn request<'a>(host: &str, path: &str, rooms: impl Iterator<Item = &'a str>, token: &str) -> Vec<u8> {
    let mut target = path.to_owned();
    let mut sep = if path.contains('?') { '&' } else { '?' };
    for room in rooms {
        target.push(sep);
        target.push_str("room=");
        encode(&mut target, room);
        sep = '&';
    }
    target.push(sep);
    target.push_str("token=");
    encode(&mut target, token);
    format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\nCache-Control: no-store\r\n\r\n")
        .into_bytes()
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(out: &mut String, s: &str) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 0xF)]));
        }
    }
}

/// What the start of an answer says.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Not all of it yet.
    Incomplete,
    /// `200`: events follow the head's `len` bytes.
    Streaming(usize),
    /// Anything else: why, with the error code from the body when it has one.
    Refused(String),
}

/// Reads the answer at the start of `buf`. A refusal's body is waited for
/// (its code is the useful part) unless the target already closed (`eof`).
pub fn answer(buf: &[u8], eof: bool) -> Answer {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            return Answer::Refused("answer head too large".into());
        }
        if eof && !buf.is_empty() {
            return Answer::Refused(format!("sse refused ({})", status_line(buf)));
        }
        return Answer::Incomplete;
    };
    let head = &buf[..end];
    let status = status_line(head);
    if head.starts_with(b"HTTP/1.1 200 ") || head.starts_with(b"HTTP/1.0 200 ") {
        return Answer::Streaming(end + 4);
    }
    let body = &buf[end + 4..];
    let length = std::str::from_utf8(head).ok().and_then(|h| {
        h.split("\r\n").find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
    });
    match length {
        Some(n) if n <= MAX_HEAD && body.len() < n && !eof => return Answer::Incomplete,
        _ => {}
    }
    let code = serde_json::from_slice::<serde_json::Value>(&body[..length.unwrap_or(body.len()).min(body.len())])
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
    Answer::Refused(match code {
        Some(code) => format!("sse refused ({status} {code})"),
        None => format!("sse refused ({status})"),
    })
}

/// `HTTP/1.1 403` from the first line (the reason phrase is left out: the
/// body's code says more).
fn status_line(head: &[u8]) -> String {
    let line = head.split(|&b| b == b'\r' || b == b'\n').next().unwrap_or_default();
    let text = String::from_utf8_lossy(&line[..line.len().min(64)]).into_owned();
    let mut parts = text.split(' ');
    match (parts.next(), parts.next()) {
        (Some(v), Some(code)) => format!("{v} {code}"),
        _ => text,
    }
}

/// One dispatched event: its name (empty when it had no `event:` line,
/// i.e. a message) and its data lines joined with `\n`.
#[derive(Debug, PartialEq, Eq)]
pub struct Event<'a> {
    pub name: &'a [u8],
    pub data: &'a [u8],
}

/// An event line (or an event's data) went over [`MAX_LINE`].
#[derive(Debug, PartialEq, Eq)]
pub struct TooLong;

/// `text/event-stream` parsing as the HTML standard defines it, for `\n`
/// and `\r\n` line endings (Herald sends `\n`; lone `\r` is not handled).
/// Bytes go in with [`push`](Self::push) as they arrive; events come out of
/// [`next_event`](Self::next_event). Only the unfinished line is kept.
#[derive(Debug, Default)]
pub struct Parser {
    buf: Vec<u8>,
    /// Start of the first line not yet handled.
    start: usize,
    /// The search for the next newline resumes here: a long line arriving
    /// in many reads is scanned once, not once per read.
    scanned: usize,
    name: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    /// The last call returned an event: clear it before the next.
    dispatched: bool,
}

impl Parser {
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            // Only the unfinished line moves: events are a few hundred
            // bytes, reads are up to 64 KiB.
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole event in what was pushed, if there is one.
    pub fn next_event(&mut self) -> Result<Option<Event<'_>>, TooLong> {
        if self.dispatched {
            self.dispatched = false;
            self.name.clear();
            self.data.clear();
            self.has_data = false;
        }
        loop {
            let Some(nl) = find(&self.buf[self.scanned..], b'\n', b'\n') else {
                self.scanned = self.buf.len();
                if self.buf.len() - self.start > MAX_LINE {
                    return Err(TooLong);
                }
                return Ok(None);
            };
            let end = self.scanned + nl;
            let mut line = &self.buf[self.start..end];
            self.start = end + 1;
            self.scanned = end + 1;
            if line.len() > MAX_LINE {
                return Err(TooLong);
            }
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            if line.is_empty() {
                if !self.has_data {
                    // No data, no event (the standard): a stray name is reset.
                    self.name.clear();
                    continue;
                }
                self.dispatched = true;
                return Ok(Some(Event {
                    name: &self.name,
                    data: &self.data,
                }));
            }
            if line[0] == b':' {
                continue; // a comment (`: heartbeat`)
            }
            let (field, value) = match line.iter().position(|&b| b == b':') {
                Some(c) => {
                    let v = &line[c + 1..];
                    (&line[..c], v.strip_prefix(b" ").unwrap_or(v))
                }
                None => (line, &[][..]),
            };
            match field {
                b"data" => {
                    if self.has_data {
                        self.data.push(b'\n');
                    }
                    self.data.extend_from_slice(value);
                    self.has_data = true;
                    if self.data.len() > MAX_LINE {
                        return Err(TooLong);
                    }
                }
                b"event" => {
                    self.name.clear();
                    self.name.extend_from_slice(value);
                }
                // `id` (the generator never resumes), `retry`, unknown fields.
                _ => {}
            }
        }
    }

    /// Drops what is buffered (the connection is gone).
    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

/// What an event tells the generator.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// A message of `room` at `offset`, its payload text.
    Message {
        room: Cow<'a, str>,
        offset: u64,
        payload: Cow<'a, str>,
    },
    /// A message whose payload is not text (`data_b64`): the generator's
    /// payloads are, so it carries no stamp the generator wrote.
    Binary,
    /// A room's join was answered.
    Subscribed,
    /// A room's owner refused the join: its code.
    Refused(String),
    /// The last event before the target closes: its code.
    Close(String),
    /// Data that is not the JSON object the event should carry.
    Undecodable,
    /// Presence, notifications, `recovered`, anything else.
    Other,
}

pub fn read<'a>(ev: &Event<'a>) -> Incoming<'a> {
    match ev.name {
        b"" | b"message" => read_message(ev.data),
        b"subscribed" => Incoming::Subscribed,
        b"close" => Incoming::Close(code_of(ev.data)),
        b"refused" => Incoming::Refused(code_of(ev.data)),
        _ => Incoming::Other,
    }
}

fn read_message(data: &[u8]) -> Incoming<'_> {
    let (mut room, mut offset, mut payload, mut binary) = (None, None, None, false);
    let ok = fields(data, |key, v| match (key, v) {
        (b"room", Val::Str(s, e)) => room = Some((s, e)),
        (b"offset", Val::Num(n)) => offset = std::str::from_utf8(n).ok().and_then(|n| n.parse().ok()),
        (b"data", Val::Str(s, e)) => payload = Some((s, e)),
        (b"data_b64", _) => binary = true,
        _ => {}
    });
    if binary && ok {
        return Incoming::Binary;
    }
    match (ok, room.and_then(unescape), offset, payload.and_then(unescape)) {
        (true, Some(room), Some(offset), Some(payload)) => Incoming::Message { room, offset, payload },
        _ => Incoming::Undecodable,
    }
}

/// The `code` of a `close` or `refused` event.
fn code_of(data: &[u8]) -> String {
    let mut code = None;
    let ok = fields(data, |key, v| {
        if let (b"code", Val::Str(s, e)) = (key, v) {
            code = unescape((s, e));
        }
    });
    match (ok, code) {
        (true, Some(c)) => c.into_owned(),
        _ => "undecodable".into(),
    }
}

/// A value of a flat JSON object, as its raw text.
#[derive(Clone, Copy, Debug)]
enum Val<'a> {
    /// A string with its quotes, and whether it has escapes.
    Str(&'a [u8], bool),
    Num(&'a [u8]),
    /// `true`, `false`, `null`.
    Word,
}

/// Calls `f` with every key (raw, without quotes) and value of the flat
/// JSON object `json`; false when it is not one (nested values included:
/// no event the generator reads has them).
fn fields<'a>(json: &'a [u8], mut f: impl FnMut(&'a [u8], Val<'a>)) -> bool {
    let ws = |i: &mut usize| {
        while json.get(*i).is_some_and(u8::is_ascii_whitespace) {
            *i += 1;
        }
    };
    let mut i = 0;
    ws(&mut i);
    if json.get(i) != Some(&b'{') {
        return false;
    }
    i += 1;
    ws(&mut i);
    if json.get(i) == Some(&b'}') {
        return json[i + 1..].iter().all(u8::is_ascii_whitespace);
    }
    loop {
        ws(&mut i);
        let Some((key_end, _)) = string_end(json, i) else {
            return false;
        };
        let key = &json[i + 1..key_end - 1];
        i = key_end;
        ws(&mut i);
        if json.get(i) != Some(&b':') {
            return false;
        }
        i += 1;
        ws(&mut i);
        let value = match json.get(i) {
            Some(b'"') => {
                let Some((end, escaped)) = string_end(json, i) else {
                    return false;
                };
                let v = Val::Str(&json[i..end], escaped);
                i = end;
                v
            }
            Some(b'-' | b'0'..=b'9') => {
                let start = i;
                while json
                    .get(i)
                    .is_some_and(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
                {
                    i += 1;
                }
                Val::Num(&json[start..i])
            }
            Some(b't' | b'f' | b'n') => {
                let start = i;
                while json.get(i).is_some_and(u8::is_ascii_lowercase) {
                    i += 1;
                }
                if !matches!(&json[start..i], b"true" | b"false" | b"null") {
                    return false;
                }
                Val::Word
            }
            _ => return false,
        };
        f(key, value);
        ws(&mut i);
        match json.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => return json[i + 1..].iter().all(u8::is_ascii_whitespace),
            _ => return false,
        }
    }
}

/// One past the closing quote of the string that starts at `i`, and
/// whether the string has escapes.
fn string_end(json: &[u8], mut i: usize) -> Option<(usize, bool)> {
    if json.get(i) != Some(&b'"') {
        return None;
    }
    i += 1;
    let mut escaped = false;
    loop {
        i += find(json.get(i..)?, b'"', b'\\')?;
        if json[i] == b'"' {
            return Some((i + 1, escaped));
        }
        escaped = true;
        i += 2;
    }
}

/// A JSON string's text: borrowed when it has no escapes (the generator's
/// payloads and room names never do), else decoded by serde_json.
fn unescape((quoted, escaped): (&[u8], bool)) -> Option<Cow<'_, str>> {
    if !escaped {
        return std::str::from_utf8(&quoted[1..quoted.len() - 1])
            .ok()
            .map(Cow::Borrowed);
    }
    serde_json::from_slice::<String>(quoted).ok().map(Cow::Owned)
}

/// Index of the first `a` or `b` in `hay`, eight bytes at a time: newlines
/// and quotes are what every byte of a stream is searched for, and a
/// byte-by-byte loop made that search most of an event's cost.
fn find(hay: &[u8], a: u8, b: u8) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    // High bit set in each byte of `w` equal to `c` (exact up to the first
    // match, which is all that is read).
    let eq = |w: u64, c: u8| {
        let x = w ^ (LO * u64::from(c));
        x.wrapping_sub(LO) & !x & HI
    };
    let mut chunks = hay.chunks_exact(8);
    let mut at = 0;
    for c in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(c);
        let w = u64::from_le_bytes(word);
        let m = eq(w, a) | eq(w, b);
        if m != 0 {
            return Some(at + (m.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&x| x == a || x == b)
        .map(|p| at + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every event `bytes` holds, pushed in pieces of `chunk` bytes, as
    /// (name, data) text.
    fn events(bytes: &[u8], chunk: usize) -> Result<Vec<(String, String)>, TooLong> {
        let mut p = Parser::default();
        let mut out = Vec::new();
        for piece in bytes.chunks(chunk.max(1)) {
            p.push(piece);
            while let Some(e) = p.next_event()? {
                out.push((
                    String::from_utf8(e.name.to_vec()).unwrap(),
                    String::from_utf8(e.data.to_vec()).unwrap(),
                ));
            }
        }
        Ok(out)
    }

    const STREAM: &[u8] = b"retry: 1000\n: herald\n\n\
event: subscribed\ndata: {\"room\":\"chat:a\",\"epoch\":7,\"offset\":0,\"resumed\":false,\"recovered\":false}\n\n\
: heartbeat\n\n\
id: 7.1\ndata: {\"data\":\"one\",\"epoch\":7,\"offset\":1,\"publisher\":\"lg-3\",\"room\":\"chat:a\",\"timestamp_ms\":5}\n\n\
id: 7.2\r\ndata: first\r\ndata: second\r\n\r\n\
event: presence\ndata: {\"room\":\"chat:a\",\"type\":\"snapshot\",\"users\":[\"a\"],\"count\":1}\n\n\
event: close\ndata: {\"code\":\"slow_consumer\",\"reason\":\"the stream fell too far behind\"}\n\n";

    #[test]
    fn a_stream_split_at_every_byte_boundary_gives_the_same_events() {
        let whole = events(STREAM, STREAM.len()).unwrap();
        let names: Vec<&str> = whole.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["subscribed", "", "", "presence", "close"]);
        assert_eq!(whole[2].1, "first\nsecond", "data lines join with \\n; \\r\\n endings");
        for chunk in 1..STREAM.len() {
            assert_eq!(events(STREAM, chunk).unwrap(), whole, "pieces of {chunk} bytes");
        }
        // Two pieces, split at every byte.
        for at in 0..=STREAM.len() {
            let mut p = Parser::default();
            let mut n = 0;
            for piece in [&STREAM[..at], &STREAM[at..]] {
                p.push(piece);
                while p.next_event().unwrap().is_some() {
                    n += 1;
                }
            }
            assert_eq!(n, whole.len(), "split at {at}");
        }
    }

    #[test]
    fn comments_retry_and_nameless_blank_lines_make_no_event() {
        let got = events(b": herald\nretry: 1000\n\n: heartbeat\n\nevent: x\n\nid: 1\n\n", 1000).unwrap();
        assert!(got.is_empty(), "{got:?}");
        // A name without data is forgotten: it does not stick to the next.
        let got = events(b"event: x\n\ndata: y\n\n", 1000).unwrap();
        assert_eq!(got, [(String::new(), "y".into())]);
        // A field without a colon, a value without the space.
        let got = events(b"data\n\ndata:z\n\n", 1000).unwrap();
        assert_eq!(got, [(String::new(), String::new()), (String::new(), "z".into())]);
    }

    #[test]
    fn a_line_over_the_limit_fails_whether_it_arrives_whole_or_in_pieces() {
        let mut long = b"data: ".to_vec();
        long.resize(MAX_LINE + 10, b'x');
        let mut whole = long.clone();
        whole.extend_from_slice(b"\n\n");
        assert_eq!(events(&whole, whole.len()), Err(TooLong));
        // No newline yet: the buffer stops growing at the limit.
        let mut p = Parser::default();
        let mut failed = false;
        for piece in long.chunks(64 * 1024) {
            p.push(piece);
            if p.next_event() == Err(TooLong) {
                failed = true;
                break;
            }
        }
        assert!(failed);
        assert!(p.buf.len() <= MAX_LINE + 64 * 1024);
        // Many data lines adding up to more than the limit.
        let line = format!("data: {}\n", "y".repeat(4096));
        let many = line.repeat(MAX_LINE / 4096 + 2);
        assert_eq!(events(many.as_bytes(), 64 * 1024), Err(TooLong));
        // Just under the limit is fine.
        let mut ok = b"data: ".to_vec();
        ok.resize(MAX_LINE - 100, b'x');
        ok.extend_from_slice(b"\n\n");
        assert_eq!(events(&ok, 4096).unwrap().len(), 1);
    }

    #[test]
    fn events_read_as_messages_joins_and_closes() {
        let ev = |name: &'static [u8], data: &'static [u8]| read(&Event { name, data });
        let m = ev(
            b"",
            br#"{"data":"0123 \"q\"","epoch":7,"offset":42,"publisher":"lg-3","room":"chat:lg-1","timestamp_ms":5}"#,
        );
        assert_eq!(
            m,
            Incoming::Message {
                room: "chat:lg-1".into(),
                offset: 42,
                payload: "0123 \"q\"".into()
            }
        );
        // Key order does not matter, and a key inside the payload text is
        // not taken for one of the object's.
        let m = ev(
            b"message",
            br#"{ "room" : "r:1", "offset": 3, "data": "x\",\"room\":\"r:2", "content_type": null }"#,
        );
        assert!(
            matches!(m, Incoming::Message { ref room, offset: 3, .. } if room == "r:1"),
            "{m:?}"
        );
        let plain = br#"{"room":"r:1","epoch":1,"offset":9,"data":"abc"}"#;
        let Incoming::Message { room, payload, .. } = ev(b"", plain) else {
            panic!("a message")
        };
        assert!(
            matches!((room, payload), (Cow::Borrowed(_), Cow::Borrowed(_))),
            "no copy without escapes"
        );
        assert_eq!(
            ev(b"", br#"{"room":"r:1","offset":1,"data_b64":"/wA="}"#),
            Incoming::Binary
        );
        assert_eq!(ev(b"", b"{\"room\":\"r:1\",\"offset\":1}"), Incoming::Undecodable);
        assert_eq!(
            ev(b"", b"{\"room\":\"r:1\",\"offset\":1,\"data\":\"x\""),
            Incoming::Undecodable
        );
        assert_eq!(ev(b"", b"not json"), Incoming::Undecodable);
        assert_eq!(
            ev(
                b"subscribed",
                br#"{"room":"r:1","epoch":1,"offset":0,"resumed":false,"recovered":false}"#
            ),
            Incoming::Subscribed
        );
        assert_eq!(
            ev(b"close", br#"{"code":"slow_consumer","reason":"behind"}"#),
            Incoming::Close("slow_consumer".into())
        );
        assert_eq!(
            ev(b"refused", br#"{"room":"r:1","code":"room_full","message":"full"}"#),
            Incoming::Refused("room_full".into())
        );
        assert_eq!(ev(b"close", b"{}"), Incoming::Close("undecodable".into()));
        assert_eq!(ev(b"presence", b"{\"users\":[\"a\"]}"), Incoming::Other);
        assert_eq!(ev(b"recovered", b"{}"), Incoming::Other);
    }

    #[test]
    fn find_agrees_with_a_byte_by_byte_search() {
        let hay: Vec<u8> = (0..300u32).map(|i| (i * 37 % 251) as u8).collect();
        for start in 0..40 {
            for len in 0..(hay.len() - start) {
                let h = &hay[start..start + len];
                for (a, b) in [(b'\n', b'\n'), (b'"', b'\\'), (0, 0x80), (0xff, 1)] {
                    let want = h.iter().position(|&x| x == a || x == b);
                    assert_eq!(find(h, a, b), want, "start {start} len {len} {a} {b}");
                }
            }
        }
    }

    #[test]
    fn requests_name_every_room_and_the_token_encoded() {
        let req = request("h:1", "/sse", ["chat:lg-0", "a b"].into_iter(), "lg-7");
        let text = String::from_utf8(req).unwrap();
        assert!(
            text.starts_with("GET /sse?room=chat%3Alg-0&room=a%20b&token=lg-7 HTTP/1.1\r\nHost: h:1\r\n"),
            "{text}"
        );
        assert!(text.ends_with("\r\n\r\n"));
        let req = request("h:1", "/p/sse?presence=1", std::iter::once("r"), "t");
        assert!(
            String::from_utf8(req)
                .unwrap()
                .starts_with("GET /p/sse?presence=1&room=r&token=t ")
        );
    }

    #[test]
    fn answers_stream_or_say_why_not() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\nretry: 1000\n";
        assert_eq!(answer(ok, false), Answer::Streaming(ok.len() - 12));
        assert_eq!(answer(&ok[..20], false), Answer::Incomplete);
        let body = br#"{"error":{"code":"forbidden","message":"no"}}"#;
        let mut refused = format!(
            "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        let head_len = refused.len();
        refused.extend_from_slice(body);
        assert_eq!(
            answer(&refused[..head_len + 5], false),
            Answer::Incomplete,
            "waits for the body"
        );
        assert_eq!(
            answer(&refused, false),
            Answer::Refused("sse refused (HTTP/1.1 403 forbidden)".into())
        );
        assert_eq!(
            answer(&refused[..head_len + 5], true),
            Answer::Refused("sse refused (HTTP/1.1 403)".into()),
            "closed before the body: the status alone"
        );
        assert_eq!(
            answer(b"HTTP/1.1 404 Not Found\r\n\r\n", false),
            Answer::Refused("sse refused (HTTP/1.1 404)".into())
        );
        assert!(matches!(answer(&[b'x'; MAX_HEAD + 1], false), Answer::Refused(_)));
    }
}
