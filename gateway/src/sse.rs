//! Server-Sent Events (`GET /sse?room=A&room=B`): a read-only stream of a
//! few rooms for pages that cannot or need not open a WebSocket.
//!
//! Every message is one event whose `id:` holds the position of every room
//! of the stream (`epoch.offset`, comma-separated, in the order of the
//! `room` parameters), so the browser's own reconnect (`Last-Event-ID`)
//! resumes each room where it stopped: no gap, no repeat, and a
//! `recovered` event saying so when the history no longer reaches back.
//! Message data is JSON encoded once per message per shard; only the short
//! `id:` line is per stream. Presence and notification events come when
//! asked for (`presence=1`, `notifications=1`); comment lines keep idle
//! streams alive through proxies.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use bytes::Bytes;
use herald_protocol::owner::{Joined, Stored};
use herald_protocol::wire::Body;
use herald_protocol::{DecodeLimits, Position, valid_room_name};
use serde_json::json;

use crate::http::{RequestHead, Response};
use crate::writer::{BYTES_PER_WRITE, Source};

/// The path of the endpoint.
pub(crate) const SSE_PATH: &str = "/sse";
/// The reconnect delay a browser is told to use (ms).
const RETRY_MS: u32 = 1000;

/// What a page asked for.
#[derive(Debug)]
pub(crate) struct SseRequest {
    pub(crate) rooms: Vec<Arc<str>>,
    pub(crate) presence: bool,
    pub(crate) notifications: bool,
    /// The token: `Authorization: Bearer`, else `?token=`, else the
    /// `herald_token` cookie.
    pub(crate) token: Option<String>,
    /// Positions to resume from, one per room (from `Last-Event-ID` or
    /// `?lastEventId=`).
    pub(crate) resume: Option<Vec<Position>>,
}

/// Reads an SSE request; the error is the answer to send.
pub(crate) fn parse_request(head: &RequestHead<'_>, max_rooms: usize, max_name: usize) -> Result<SseRequest, Response> {
    let bad = |message: &str| Response::error(400, "bad_request", message);
    let mut rooms: Vec<Arc<str>> = Vec::new();
    let mut presence = false;
    let mut notifications = false;
    let mut query_token = None;
    let mut query_resume = None;
    for (name, raw) in head.query_params() {
        let value = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| bad("query parameters must be UTF-8"))?;
        match name {
            "room" => {
                if !valid_room_name(&value, max_name) {
                    return Err(Response::error(400, "invalid_room_name", "invalid room name"));
                }
                if !rooms.iter().any(|r| **r == *value) {
                    rooms.push(Arc::from(value.as_ref()));
                }
            }
            "presence" => presence = matches!(value.as_ref(), "1" | "true"),
            "notifications" => notifications = matches!(value.as_ref(), "1" | "true"),
            "token" => query_token = Some(value.into_owned()),
            "lastEventId" => query_resume = Some(value.into_owned()),
            _ => {}
        }
    }
    if rooms.is_empty() && !notifications {
        return Err(bad("name at least one room (?room=...) or ask for notifications"));
    }
    if rooms.len() > max_rooms {
        return Err(Response::error(
            400,
            "too_many_rooms",
            "more rooms than a connection may hold",
        ));
    }
    let token = head
        .bearer()
        .map(str::to_owned)
        .or(query_token)
        .or_else(|| head.cookie("herald_token").map(str::to_owned));
    let resume = head
        .last_event_id
        .map(str::to_owned)
        .or(query_resume)
        .and_then(|id| parse_positions(&id, rooms.len()));
    Ok(SseRequest {
        rooms,
        presence,
        notifications,
        token,
        resume,
    })
}

/// `epoch.offset` per room, comma-separated.
pub(crate) fn encode_id(positions: impl Iterator<Item = Position>) -> String {
    let mut id = String::with_capacity(40);
    for (i, p) in positions.enumerate() {
        if i > 0 {
            id.push(',');
        }
        id.push_str(&p.epoch.to_string());
        id.push('.');
        id.push_str(&p.offset.to_string());
    }
    id
}

/// The positions an id holds, if it holds exactly `n` of them.
pub(crate) fn parse_positions(id: &str, n: usize) -> Option<Vec<Position>> {
    if id.len() > 64 * n.max(1) {
        return None;
    }
    let positions: Vec<Position> = id
        .split(',')
        .map(|p| {
            let (e, o) = p.split_once('.')?;
            Some(Position {
                epoch: e.parse().ok()?,
                offset: o.parse().ok()?,
            })
        })
        .collect::<Option<_>>()?;
    (positions.len() == n).then_some(positions)
}

/// The head of a stream's answer; `extra` are CORS lines.
pub(crate) fn response_head(extra: &[std::borrow::Cow<'static, str>]) -> Vec<u8> {
    let mut head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n\
X-Accel-Buffering: no\r\nConnection: close\r\n"
        .to_vec();
    for line in extra {
        head.extend_from_slice(line.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(format!("\r\nretry: {RETRY_MS}\n: herald\n\n").as_bytes());
    head
}

/// A delivered frame as an SSE event, built once per frame per shard.
#[derive(Debug, Clone)]
pub(crate) enum Event {
    /// A message: the stream adds its own `id:` line before `data`
    /// (volatile messages have offset 0 and no id).
    Message { epoch: u64, offset: u64, data: Bytes },
    /// Presence, with `event: presence`.
    Presence(Bytes),
    /// A notification, with `event: notification`.
    Notification(Bytes),
    /// Nothing for SSE (typing, frames that do not decode).
    Skip,
}

/// Converts a frame the node encoded into the event SSE streams send.
pub(crate) fn event_for_frame(frame: &[u8]) -> Event {
    let Ok(f) = herald_protocol::decode(frame, &DecodeLimits::SERVER_TO_CLIENT) else {
        return Event::Skip;
    };
    match f.body_type() {
        Body::Message => {
            let Some(m) = f.body_as_message() else {
                return Event::Skip;
            };
            let payload = m.payload().map(|p| p.bytes()).unwrap_or_default();
            Event::Message {
                epoch: m.epoch(),
                offset: m.offset(),
                data: message_data(
                    m.room(),
                    m.epoch(),
                    m.offset(),
                    m.publisher().unwrap_or_default(),
                    m.timestamp_ms(),
                    m.content_type(),
                    payload,
                ),
            }
        }
        Body::PresenceJoin | Body::PresenceLeave => {
            let (kind, room, user) = match (f.body_as_presence_join(), f.body_as_presence_leave()) {
                (Some(j), _) => ("join", j.room(), j.user()),
                (_, Some(l)) => ("leave", l.room(), l.user()),
                _ => return Event::Skip,
            };
            let v = json!({"room": room, "user": user, "type": kind});
            Event::Presence(event_bytes(Some("presence"), &v))
        }
        Body::Notification => {
            let Some(n) = f.body_as_notification() else {
                return Event::Skip;
            };
            let data = n.data().map(|d| String::from_utf8_lossy(d.bytes()).into_owned());
            let v = json!({
                "id": n.id(),
                "kind": n.kind(),
                "title": n.title(),
                "body": n.body(),
                "data": data,
                "created_ms": n.created_ms(),
            });
            Event::Notification(event_bytes(Some("notification"), &v))
        }
        _ => Event::Skip,
    }
}

/// The `data:` part of a message event (with its ending blank line).
pub(crate) fn message_data(
    room: &str,
    epoch: u64,
    offset: u64,
    publisher: &str,
    timestamp_ms: u64,
    content_type: Option<&str>,
    payload: &[u8],
) -> Bytes {
    let mut v = json!({
        "room": room,
        "epoch": epoch,
        "offset": offset,
        "publisher": publisher,
        "timestamp_ms": timestamp_ms,
    });
    if let Some(ct) = content_type {
        v["content_type"] = json!(ct);
    }
    match std::str::from_utf8(payload) {
        Ok(text) => v["data"] = json!(text),
        Err(_) => v["data_b64"] = json!(base64::engine::general_purpose::STANDARD.encode(payload)),
    }
    event_bytes(None, &v)
}

/// The data part of a stored message's event.
pub(crate) fn stored_data(room: &str, epoch: u64, m: &Stored) -> Bytes {
    message_data(
        room,
        epoch,
        m.offset,
        &m.publisher,
        m.timestamp_ms,
        m.content_type.as_deref(),
        &m.payload,
    )
}

/// `event: NAME` (if any) and `data: JSON`, ending the event. JSON has no
/// raw newlines, so one `data:` line carries it.
fn event_bytes(event: Option<&str>, v: &serde_json::Value) -> Bytes {
    let mut out = Vec::with_capacity(128);
    if let Some(e) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(e.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    let _ = serde_json::to_writer(&mut out, v);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// One room of a stream.
#[derive(Debug)]
struct SseRoom {
    name: Arc<str>,
    position: Position,
    /// A resume position was asked for: report `recovered = false`.
    recovering: bool,
}

/// A queued event: a stream's own `id:` line (empty for events without
/// one) and the shared rest.
#[derive(Debug)]
struct Queued {
    /// The room of a message in a conflated room (a newer one replaces it).
    conflate: Option<Arc<str>>,
    id: Bytes,
    data: Bytes,
}

impl Queued {
    fn len(&self) -> usize {
        self.id.len() + self.data.len()
    }
}

/// What became of an event handed to a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SseOutcome {
    /// Queued.
    Queued,
    /// Queued in place of an older message of its conflated room.
    Replaced,
    /// Not for this stream (another room, an old offset, presence not
    /// asked for).
    Skipped,
    /// A volatile message that did not fit: dropped, the stream goes on.
    DroppedVolatile,
    /// The stream is over its limit: it now closes as a slow consumer.
    SlowConsumer,
}

/// An SSE stream as its shard holds it (boxed in the connection's link).
#[derive(Debug)]
pub(crate) struct SseLink {
    pub(crate) user: Arc<str>,
    /// When the token expires (unix seconds), if it does.
    pub(crate) expires_at: Option<u64>,
    rooms: Vec<SseRoom>,
    pub(crate) presence: bool,
    pub(crate) notifications: bool,
    queue: VecDeque<Queued>,
    queued_bytes: usize,
    /// When the next keep-alive comment is due.
    pub(crate) next_heartbeat: Instant,
    /// The final event is queued: close once it is written.
    pub(crate) closing: bool,
    /// Closed while its socket was full: dropped at the connection's
    /// deadline unless the page reads by then.
    pub(crate) stuck: bool,
}

impl SseLink {
    pub(crate) fn new(user: Arc<str>, expires_at: Option<u64>, req: &SseRequest, next_heartbeat: Instant) -> Self {
        let rooms = req
            .rooms
            .iter()
            .enumerate()
            .map(|(i, name)| SseRoom {
                name: name.clone(),
                position: req.resume.as_ref().map_or(Position::default(), |r| r[i]),
                recovering: req.resume.as_ref().is_some_and(|r| r[i].epoch != 0),
            })
            .collect();
        Self {
            user,
            expires_at,
            rooms,
            presence: req.presence,
            notifications: req.notifications,
            queue: VecDeque::new(),
            queued_bytes: 0,
            next_heartbeat,
            closing: false,
            stuck: false,
        }
    }

    /// The rooms, with where to resume each from (None: a plain join).
    pub(crate) fn rooms(&self) -> impl Iterator<Item = (&Arc<str>, Option<Position>)> {
        self.rooms
            .iter()
            .map(|r| (&r.name, (r.position.epoch != 0).then_some(r.position)))
    }

    /// Every room's name, leaving them all (the stream is closing).
    pub(crate) fn take_rooms(&mut self) -> Vec<Arc<str>> {
        std::mem::take(&mut self.rooms).into_iter().map(|r| r.name).collect()
    }

    fn id_line(&self) -> Bytes {
        let id = encode_id(self.rooms.iter().map(|r| r.position));
        let mut line = Vec::with_capacity(id.len() + 5);
        line.extend_from_slice(b"id: ");
        line.extend_from_slice(id.as_bytes());
        line.push(b'\n');
        Bytes::from(line)
    }

    fn push(&mut self, q: Queued, limit: usize) -> SseOutcome {
        if self.closing {
            return SseOutcome::Skipped;
        }
        let mut replaced = false;
        if let Some(room) = &q.conflate {
            // A conflated room keeps one message waiting: the newest, at
            // the end (its id holds every room's latest position).
            if let Some(i) = self.queue.iter().position(|x| x.conflate.as_deref() == Some(room))
                && let Some(old) = self.queue.remove(i)
            {
                self.queued_bytes -= old.len();
                replaced = true;
            }
        }
        if self.queued_bytes + q.len() > limit {
            self.close_with("slow_consumer", "the stream fell too far behind");
            return SseOutcome::SlowConsumer;
        }
        self.queued_bytes += q.len();
        self.queue.push_back(q);
        if replaced {
            SseOutcome::Replaced
        } else {
            SseOutcome::Queued
        }
    }

    /// A message of `room` at (epoch, offset), its data built once per
    /// shard. Old offsets are skipped (a replay already held them).
    pub(crate) fn message(
        &mut self,
        room: &str,
        epoch: u64,
        offset: u64,
        data: &Bytes,
        conflate: bool,
        limit: usize,
    ) -> SseOutcome {
        let Some(i) = self.rooms.iter().position(|r| *r.name == *room) else {
            return SseOutcome::Skipped;
        };
        let r = &mut self.rooms[i];
        if offset != 0 {
            if r.position.epoch == epoch && offset <= r.position.offset {
                return SseOutcome::Skipped;
            }
            r.position = Position { epoch, offset };
        }
        if offset == 0 && self.queued_bytes + data.len() > limit {
            // Volatile (no offset): best effort, never a reason to close.
            return SseOutcome::DroppedVolatile;
        }
        let conflate = (conflate && offset != 0).then(|| r.name.clone());
        let id = if offset == 0 { Bytes::new() } else { self.id_line() };
        self.push(
            Queued {
                conflate,
                id,
                data: data.clone(),
            },
            limit,
        )
    }

    /// A presence or notification event (already whole).
    pub(crate) fn event(&mut self, event: &Bytes, limit: usize) -> SseOutcome {
        self.push(
            Queued {
                conflate: None,
                id: Bytes::new(),
                data: event.clone(),
            },
            limit,
        )
    }

    /// The owner's answer to a join: the replay (which the limit does not
    /// cut: the owner already fitted it to half the outbound limit), a
    /// `recovered` event when the resume could not be complete, and the
    /// presence snapshot when asked for.
    pub(crate) fn joined(&mut self, room: &str, joined: &Joined) {
        let Some(i) = self.rooms.iter().position(|r| *r.name == *room) else {
            return;
        };
        let (epoch, offset, recovered, replay) = (joined.epoch, joined.offset, joined.recovered, &joined.history);
        let name = self.rooms[i].name.clone();
        if let Some(p) = joined.presence.as_ref().filter(|_| self.presence) {
            let users: Vec<&str> = p.users.iter().map(|u| &**u).collect();
            let v = json!({"room": &*name, "type": "snapshot", "users": users, "count": p.count});
            self.push(
                Queued {
                    conflate: None,
                    id: Bytes::new(),
                    data: event_bytes(Some("presence"), &v),
                },
                usize::MAX,
            );
        }
        let resumed = self.rooms[i].recovering;
        let v = json!({"room": &*name, "epoch": epoch, "offset": offset, "resumed": resumed, "recovered": resumed && recovered});
        self.push(
            Queued {
                conflate: None,
                id: Bytes::new(),
                data: event_bytes(Some("subscribed"), &v),
            },
            usize::MAX,
        );
        if resumed && !recovered {
            // Messages may be missing: the page refetches its state.
            let v = json!({"room": &*name, "recovered": false, "epoch": epoch, "offset": offset});
            self.push(
                Queued {
                    conflate: None,
                    id: Bytes::new(),
                    data: event_bytes(Some("recovered"), &v),
                },
                usize::MAX,
            );
        }
        self.rooms[i].recovering = false;
        for m in replay {
            let data = stored_data(&name, epoch, m);
            self.message(&name, epoch, m.offset, &data, false, usize::MAX);
        }
        // Whatever the replay held, the stream now stands at the room's
        // position: what comes next is live.
        let r = &mut self.rooms[i];
        if r.position.epoch != epoch || r.position.offset < offset {
            r.position = Position { epoch, offset };
        }
    }

    /// A join the owner refused.
    pub(crate) fn refused(&mut self, room: &str, code: &str, message: &str) {
        let v = json!({"room": room, "code": code, "message": message});
        let e = event_bytes(Some("refused"), &v);
        self.push(
            Queued {
                conflate: None,
                id: Bytes::new(),
                data: e,
            },
            usize::MAX,
        );
    }

    /// A keep-alive comment.
    pub(crate) fn heartbeat(&mut self, next: Instant) {
        self.next_heartbeat = next;
        if self.queue.is_empty() {
            self.queue.push_back(Queued {
                conflate: None,
                id: Bytes::new(),
                data: Bytes::from_static(b": heartbeat\n\n"),
            });
            self.queued_bytes += 13;
        }
    }

    /// Queues the final event (past the limit: it must get out) and stops
    /// taking others.
    pub(crate) fn close_with(&mut self, code: &str, reason: &str) {
        if self.closing {
            return;
        }
        // What is waiting is dropped: the page reconnects and resumes from
        // the last id it received.
        self.queue.clear();
        self.queued_bytes = 0;
        let v = json!({"code": code, "reason": reason});
        let e = event_bytes(Some("close"), &v);
        self.queued_bytes += e.len();
        self.queue.push_back(Queued {
            conflate: None,
            id: Bytes::new(),
            data: e,
        });
        self.closing = true;
    }

    /// Bytes waiting to be written.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Gives back queue capacity after a burst.
    pub(crate) fn release_idle_memory(&mut self) {
        if self.queue.is_empty() && self.queue.capacity() > 0 {
            self.queue = VecDeque::new();
        }
    }
}

impl Source for SseLink {
    fn take_batch(&mut self, buf: &mut Vec<u8>) -> usize {
        buf.clear();
        let mut n = 0;
        while buf.len() < BYTES_PER_WRITE {
            let Some(q) = self.queue.pop_front() else { break };
            self.queued_bytes -= q.len();
            buf.extend_from_slice(&q.id);
            buf.extend_from_slice(&q.data);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::http::parse_head;

    fn request(query: &str, extra: &str) -> SseRequest {
        let raw = format!("GET /sse?{query} HTTP/1.1\r\nHost: h\r\n{extra}\r\n");
        let head = parse_head(raw.as_bytes()).unwrap().unwrap();
        parse_request(&head, 4, 128).unwrap()
    }

    fn drain(link: &mut SseLink) -> String {
        let mut buf = Vec::new();
        let mut all = String::new();
        while link.take_batch(&mut buf) > 0 {
            all.push_str(std::str::from_utf8(&buf).unwrap());
        }
        all
    }

    #[test]
    fn requests_name_rooms_and_a_token_from_three_places() {
        let r = request("room=chat%3Aa&room=dash:b&presence=1&token=t1", "");
        assert_eq!(r.rooms.len(), 2);
        assert_eq!(&*r.rooms[0], "chat:a");
        assert!(r.presence && !r.notifications);
        assert_eq!(r.token.as_deref(), Some("t1"));
        let r = request(
            "room=a:b",
            "Authorization: Bearer t2\r\nCookie: x=1; herald_token=t3\r\n",
        );
        assert_eq!(r.token.as_deref(), Some("t2"), "the header first");
        let r = request("room=a:b", "Cookie: x=1; herald_token=t3\r\n");
        assert_eq!(r.token.as_deref(), Some("t3"));
        let r = request("room=a:b&room=c:d", "Last-Event-ID: 7.3,8.0\r\n");
        assert_eq!(
            r.resume,
            Some(vec![Position { epoch: 7, offset: 3 }, Position { epoch: 8, offset: 0 }])
        );
        let r = request("room=a:b", "Last-Event-ID: 7.3,8.0\r\n");
        assert_eq!(r.resume, None, "an id for other rooms is no resume");
        for bad in ["", "room=bad%20name", "room=a&room=b&room=c&room=d&room=e"] {
            let raw = format!("GET /sse?{bad} HTTP/1.1\r\nHost: h\r\n\r\n");
            let head = parse_head(raw.as_bytes()).unwrap().unwrap();
            assert!(parse_request(&head, 4, 128).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_carry_every_rooms_position_and_old_offsets_are_skipped() {
        let req = request("room=a:x&room=b:y", "Last-Event-ID: 5.2,5.0\r\n");
        let mut link = SseLink::new(Arc::from("ann"), None, &req, Instant::now());
        let data = Bytes::from_static(b"data: {}\n\n");
        assert_eq!(link.message("a:x", 5, 2, &data, false, 1 << 20), SseOutcome::Skipped);
        assert_eq!(link.message("a:x", 5, 3, &data, false, 1 << 20), SseOutcome::Queued);
        assert_eq!(link.message("b:y", 5, 1, &data, false, 1 << 20), SseOutcome::Queued);
        assert_eq!(link.message("c:z", 5, 1, &data, false, 1 << 20), SseOutcome::Skipped);
        let out = drain(&mut link);
        assert_eq!(out, "id: 5.3,5.0\ndata: {}\n\nid: 5.3,5.1\ndata: {}\n\n");
        assert_eq!(
            parse_positions("5.3,5.1", 2).unwrap()[1],
            Position { epoch: 5, offset: 1 }
        );
    }

    #[test]
    fn a_conflated_room_keeps_only_its_newest_waiting_message() {
        let req = request("room=dash:a&room=dash:b", "");
        let mut link = SseLink::new(Arc::from("ann"), None, &req, Instant::now());
        let d = |n: u64| Bytes::from(format!("data: {n}\n\n"));
        for n in 1..=5 {
            link.message("dash:a", 1, n, &d(n), true, 1 << 20);
        }
        link.message("dash:b", 1, 1, &d(100), true, 1 << 20);
        let out = drain(&mut link);
        assert_eq!(out, "id: 1.5,0.0\ndata: 5\n\nid: 1.5,1.1\ndata: 100\n\n");
    }

    #[test]
    fn over_the_limit_the_stream_ends_with_a_close_event() {
        let req = request("room=a:x", "");
        let mut link = SseLink::new(Arc::from("ann"), None, &req, Instant::now());
        let big = Bytes::from(vec![b'x'; 600]);
        assert_eq!(link.message("a:x", 1, 1, &big, false, 1000), SseOutcome::Queued);
        assert_eq!(link.message("a:x", 1, 2, &big, false, 1000), SseOutcome::SlowConsumer);
        assert!(link.closing);
        assert_eq!(link.message("a:x", 1, 3, &big, false, 1000), SseOutcome::Skipped);
        let out = drain(&mut link);
        assert!(
            out.starts_with("event: close\ndata: {\"code\":\"slow_consumer\""),
            "{out}"
        );
        assert_eq!(link.queued_bytes(), 0);
    }

    #[test]
    fn a_join_replays_history_and_says_when_it_could_not_recover() {
        let req = request("room=a:x", "Last-Event-ID: 9.4\r\n");
        let mut link = SseLink::new(Arc::from("ann"), None, &req, Instant::now() + Duration::from_secs(15));
        let m = Stored {
            offset: 7,
            publisher: Arc::from("bob"),
            timestamp_ms: 1,
            payload: Bytes::from_static(b"\xff\x00"),
            content_type: None,
        };
        let joined = Joined {
            epoch: 10,
            offset: 7,
            recovered: false,
            history: vec![m],
            presence: None,
        };
        link.joined("a:x", &joined);
        let out = drain(&mut link);
        assert!(out.starts_with("event: subscribed\ndata: {"), "{out}");
        assert!(out.contains("event: recovered\ndata: {\"epoch\":10"), "{out}");
        assert!(out.contains("id: 10.7\ndata: {"), "{out}");
        assert!(
            out.contains("\"data_b64\":\"/wA=\""),
            "binary payloads in base64: {out}"
        );
    }

    #[test]
    fn frames_become_events_once() {
        let frame = herald_protocol::with_encoder(|e| {
            e.message(&herald_protocol::MessageRef {
                room: "chat:a",
                epoch: 3,
                offset: 9,
                publisher: "bob",
                timestamp_ms: 5,
                payload: b"hi \"there\"\n",
                content_type: None,
                volatile: false,
            })
        });
        let Event::Message {
            epoch, offset, data, ..
        } = event_for_frame(&frame)
        else {
            panic!("a message");
        };
        assert_eq!((epoch, offset), (3, 9));
        let text = std::str::from_utf8(&data).unwrap();
        assert!(text.starts_with("data: {") && text.ends_with("}\n\n"));
        assert_eq!(text.matches('\n').count(), 2, "one data line: {text}");
        let v: serde_json::Value = serde_json::from_str(&text[6..text.len() - 2]).unwrap();
        assert_eq!(v["data"], "hi \"there\"\n");
        assert_eq!(v["publisher"], "bob");
    }
}
