//! HTTP on the client port: health, readiness, metrics and the server API
//! that backends call the way Socket.IO apps call `io.to(room).emit(...)`.
//!
//! Every `/api/` route needs `Authorization: Bearer <api key>`. Errors are
//! `{"error": {"code", "message"}}` with a fitting status. Requests that need
//! a room's owner or every shard answer when those shards reply; the
//! connection waits meanwhile (pipelined requests queue behind it).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use base64::Engine as _;
use bytes::Bytes;
use herald_protocol::wire::{self, BodyT};
use herald_protocol::{ErrorCode, Position, valid_room_name, with_encoder};
use serde::Deserialize;
use serde_json::json;

use crate::conn::State;
use crate::dispatch::shard_of;
use crate::http::{RequestHead, Response};
use crate::mesh::{Answer, ConnKey, Origin, Query, Refusal, RoomInfo, ShardMsg};
use crate::shard::Shard;

/// A request waiting for every shard.
#[derive(Debug)]
pub(crate) struct Gather {
    remaining: usize,
    rooms: Vec<RoomInfo>,
    count: u64,
    kind: GatherKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GatherKind {
    Rooms,
    Disconnect,
    Notify,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    room: String,
    data: Option<String>,
    data_b64: Option<String>,
    content_type: Option<String>,
    #[serde(default)]
    volatile: bool,
    idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NotifyBody {
    user: String,
    kind: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    body: String,
    /// Application data: any JSON value, delivered as its JSON text.
    #[serde(default)]
    data: Option<serde_json::Value>,
}

/// Longest `kind`, `title` or idempotency key; `body` and data share the
/// payload limit.
const MAX_SHORT_FIELD: usize = 256;

impl Shard {
    /// Answers an HTTP request now, or returns None when other shards will.
    pub(crate) fn api(&mut self, slot: usize, head: &RequestHead<'_>, body: &[u8]) -> Option<Response> {
        let path = head.path;
        let method = head.method;
        match (method, path) {
            ("GET", "/health") => return Some(Response::json(200, &json!({"status": "ok"}))),
            ("GET", "/ready") => {
                return Some(if self.shared.accepting.load(Relaxed) {
                    Response::json(200, &json!({"status": "ready"}))
                } else {
                    Response::json(503, &json!({"status": "draining"}))
                });
            }
            ("GET", "/metrics") => {
                let text = crate::stats::render(
                    &self.shared.config.node_id,
                    &self.shared.stats,
                    self.shared.accepting.load(Relaxed),
                );
                return Some(Response::text(200, "text/plain; version=0.0.4", text));
            }
            _ => {}
        }
        if !path.starts_with("/api/") {
            return Some(Response::error(404, "not_found", "no such route"));
        }
        if !self.api_key_ok(head) {
            return Some(Response::error(
                401,
                "unauthorized",
                "send Authorization: Bearer <api key>",
            ));
        }
        let key = self.key(slot)?;
        let origin = Origin::Http {
            shard: self.id,
            conn: key,
        };
        let max_name = self.shared.config.session.limits.max_room_name_bytes;
        let resp = match (method, path) {
            ("POST", "/api/publish") => self.api_publish(origin, body),
            ("POST", "/api/notify") => self.api_notify(origin, body),
            ("GET", "/api/rooms") => {
                self.gather(key, GatherKind::Rooms);
                for shard in 0..self.mesh.shards() {
                    self.mesh.send(shard, ShardMsg::ListRooms { origin });
                }
                Ok(())
            }
            ("GET", p) if p.starts_with("/api/presence/") => {
                let room = head.path_param("/api/presence/").unwrap_or_default();
                self.api_query(origin, &room, max_name, Query::Presence)
            }
            ("GET", p) if p.starts_with("/api/history/") => {
                let room = head.path_param("/api/history/").unwrap_or_default();
                let num = |name: &str| head.query_param(name).map(str::parse::<u64>).transpose();
                match (num("limit"), num("before"), num("after")) {
                    (Ok(limit), Ok(before), Ok(after)) => {
                        let max = self.shared.config.max_history();
                        let query = Query::History {
                            before: before.unwrap_or(0),
                            after: after.unwrap_or(0),
                            limit: (limit.unwrap_or(50) as usize).clamp(1, max),
                        };
                        self.api_query(origin, &room, max_name, query)
                    }
                    _ => Err(Response::error(
                        400,
                        "bad_request",
                        "limit, before and after must be unsigned integers",
                    )),
                }
            }
            ("POST", p) if p.starts_with("/api/disconnect/") => {
                let user: Arc<str> = Arc::from(head.path_param("/api/disconnect/").unwrap_or_default());
                if user.is_empty() {
                    Err(Response::error(400, "bad_request", "missing user id"))
                } else {
                    self.gather(key, GatherKind::Disconnect);
                    for shard in 0..self.mesh.shards() {
                        let user = user.clone();
                        self.mesh.send(shard, ShardMsg::DisconnectUser { origin, user });
                    }
                    Ok(())
                }
            }
            (_, "/api/publish" | "/api/notify" | "/api/rooms") => Err(Response::error(
                405,
                "method_not_allowed",
                "wrong method for this route",
            )),
            _ => Err(Response::error(404, "not_found", "no such route")),
        };
        match resp {
            Ok(()) => {
                if let Some(State::Http(h)) = self.conns.get_mut(slot).map(|c| &mut c.state) {
                    h.waiting = true;
                }
                None
            }
            Err(r) => Some(r),
        }
    }

    fn gather(&mut self, key: ConnKey, kind: GatherKind) {
        let g = Gather {
            remaining: self.mesh.shards(),
            rooms: Vec::new(),
            count: 0,
            kind,
        };
        self.gathers.insert(key, g);
    }

    fn api_key_ok(&self, head: &RequestHead<'_>) -> bool {
        let expected = self.shared.config.api_key.as_bytes();
        let Some(given) = head.bearer() else { return false };
        // Constant time in the key's content.
        let given = given.as_bytes();
        !expected.is_empty()
            && given.len() == expected.len()
            && given.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }

    fn api_publish(&mut self, origin: Origin, body: &[u8]) -> Result<(), Response> {
        let req: PublishBody = parse_json(body)?;
        let max_name = self.shared.config.session.limits.max_room_name_bytes;
        if !valid_room_name(&req.room, max_name) {
            return Err(Response::error(400, "invalid_room_name", "invalid room name"));
        }
        let payload = match (req.data, req.data_b64) {
            (Some(text), None) => Bytes::from(text),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map(Bytes::from)
                .map_err(|_| Response::error(400, "bad_request", "data_b64 is not valid base64"))?,
            _ => {
                return Err(Response::error(
                    400,
                    "bad_request",
                    "give exactly one of data (UTF-8 text) or data_b64",
                ));
            }
        };
        let max_payload = self.shared.config.session.limits.max_payload_bytes;
        if payload.len() > max_payload {
            let msg = format!("payload larger than {max_payload} bytes");
            return Err(Response::error(413, "payload_too_large", &msg));
        }
        if req.content_type.as_ref().is_some_and(|c| c.len() > MAX_SHORT_FIELD)
            || req.idempotency_key.as_ref().is_some_and(|k| k.len() > MAX_SHORT_FIELD)
        {
            return Err(Response::error(
                400,
                "bad_request",
                "content_type and idempotency_key are at most 256 bytes",
            ));
        }
        let room: Arc<str> = Arc::from(req.room);
        let owner = shard_of(&room, self.mesh.shards());
        self.mesh.send(
            owner,
            ShardMsg::Publish {
                origin,
                room,
                // The server API publishes as the empty user.
                user: Arc::from(""),
                payload,
                content_type: req.content_type,
                volatile: req.volatile,
                idempotency_key: req.idempotency_key,
                received: std::time::Instant::now(),
            },
        );
        Ok(())
    }

    fn api_notify(&mut self, origin: Origin, body: &[u8]) -> Result<(), Response> {
        let req: NotifyBody = parse_json(body)?;
        let room = format!("user:{}", req.user);
        let max_name = self.shared.config.session.limits.max_room_name_bytes;
        if req.user.is_empty() || !valid_room_name(&room, max_name) {
            return Err(Response::error(400, "bad_request", "invalid user id"));
        }
        if req.kind.len() > MAX_SHORT_FIELD || req.title.len() > MAX_SHORT_FIELD {
            return Err(Response::error(
                400,
                "bad_request",
                "kind and title are at most 256 bytes",
            ));
        }
        let data = req.data.map(|v| v.to_string().into_bytes());
        let max_payload = self.shared.config.session.limits.max_payload_bytes;
        if req.body.len() + data.as_ref().map_or(0, Vec::len) > max_payload {
            let msg = format!("body and data larger than {max_payload} bytes");
            return Err(Response::error(413, "payload_too_large", &msg));
        }
        let now = crate::unix_ms();
        let mut n = wire::NotificationT::default();
        n.id = now;
        n.kind = Some(req.kind);
        n.title = Some(req.title);
        n.body = Some(req.body);
        n.data = data;
        n.created_ms = now;
        let frame = with_encoder(|e| e.body(0, BodyT::Notification(Box::new(n))));
        let Origin::Http { conn, .. } = origin else {
            return Ok(());
        };
        self.gather(conn, GatherKind::Notify);
        let user: Arc<str> = Arc::from(req.user);
        for shard in 0..self.mesh.shards() {
            let (user, frame) = (user.clone(), frame.clone());
            self.mesh.send(shard, ShardMsg::NotifyUser { origin, user, frame });
        }
        Ok(())
    }

    fn api_query(&mut self, origin: Origin, room: &str, max_name: usize, query: Query) -> Result<(), Response> {
        if !valid_room_name(room, max_name) {
            return Err(Response::error(400, "invalid_room_name", "invalid room name"));
        }
        let room: Arc<str> = Arc::from(room);
        let owner = shard_of(&room, self.mesh.shards());
        self.mesh.send(owner, ShardMsg::Query { origin, room, query });
        Ok(())
    }

    fn finish(&mut self, conn: ConnKey, resp: &Response) {
        let Some(slot) = self.slot_of(conn) else { return };
        let keep_alive = matches!(self.conns.get(slot).map(|c| &c.state), Some(State::Http(h)) if h.keep_alive);
        self.respond(slot, resp, keep_alive);
        self.reparse(slot);
    }

    pub(crate) fn api_published(&mut self, conn: ConnKey, result: Result<Position, Refusal>) {
        let resp = match result {
            Ok(p) => Response::json(200, &json!({"epoch": p.epoch, "offset": p.offset})),
            Err(refusal) => refusal_response(refusal),
        };
        self.finish(conn, &resp);
    }

    pub(crate) fn api_answer(&mut self, conn: ConnKey, room: &str, answer: Answer) {
        let resp = match answer {
            Answer::NoRoom => Response::error(404, "not_found", "no such room"),
            Answer::Presence { users, count } => Response::json(
                200,
                &json!({
                    "room": room,
                    "count": count,
                    "users": users.iter().map(|u| &**u).collect::<Vec<&str>>(),
                    "truncated": (users.len() as u64) < count,
                }),
            ),
            Answer::History {
                epoch,
                messages,
                has_more,
            } => {
                let messages: Vec<serde_json::Value> = messages
                    .iter()
                    .map(|m| {
                        let mut v = json!({
                            "offset": m.offset,
                            "publisher": m.publisher,
                            "timestamp_ms": m.timestamp_ms,
                            "content_type": m.content_type,
                        });
                        match std::str::from_utf8(&m.payload) {
                            Ok(text) => v["data"] = json!(text),
                            Err(_) => {
                                v["data_b64"] = json!(base64::engine::general_purpose::STANDARD.encode(&m.payload));
                            }
                        }
                        v
                    })
                    .collect();
                Response::json(
                    200,
                    &json!({"room": room, "epoch": epoch, "messages": messages, "has_more": has_more}),
                )
            }
        };
        self.finish(conn, &resp);
    }

    pub(crate) fn api_rooms(&mut self, origin: Origin, rooms: Vec<RoomInfo>) {
        let Origin::Http { conn, .. } = origin else { return };
        let Some(g) = self.gathers.get_mut(&conn) else { return };
        g.rooms.extend(rooms);
        g.remaining -= 1;
        if g.remaining > 0 {
            return;
        }
        let Some(mut g) = self.gathers.remove(&conn) else {
            return;
        };
        g.rooms.sort_by(|a, b| a.name.cmp(&b.name));
        let rooms: Vec<serde_json::Value> = g
            .rooms
            .iter()
            .map(|r| {
                json!({
                    "room": &*r.name,
                    "epoch": r.epoch,
                    "offset": r.offset,
                    "subscribers": r.subscribers,
                    "users": r.users,
                })
            })
            .collect();
        self.finish(conn, &Response::json(200, &json!({"rooms": rooms})));
    }

    pub(crate) fn api_counted(&mut self, origin: Origin, count: u64) {
        let Origin::Http { conn, .. } = origin else { return };
        let Some(g) = self.gathers.get_mut(&conn) else { return };
        g.count += count;
        g.remaining -= 1;
        if g.remaining > 0 {
            return;
        }
        let Some(g) = self.gathers.remove(&conn) else { return };
        let body = match g.kind {
            GatherKind::Notify => json!({"online_connections": g.count}),
            GatherKind::Disconnect | GatherKind::Rooms => json!({"disconnected": g.count}),
        };
        self.finish(conn, &Response::json(200, &body));
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| Response::error(400, "bad_request", &format!("invalid JSON body: {e}")))
}

fn refusal_response((code, message): Refusal) -> Response {
    let status = match code {
        ErrorCode::Unavailable => 503,
        ErrorCode::Forbidden => 403,
        ErrorCode::NotFound => 404,
        ErrorCode::RoomFull => 409,
        _ => 400,
    };
    let name = wire::ErrorCode::variant_name(code).unwrap_or("error");
    Response::error(status, &to_snake(name), message)
}

fn to_snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, ch) in name.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}
