//! HTTP routes: health, readiness, metrics and the server API that backends
//! call the way Socket.IO apps call `io.to(room).emit(...)`.
//!
//! Every `/api/` route needs `Authorization: Bearer <api key>`. Errors are
//! `{"error": {"code", "message"}}` with a fitting status. Requests that need
//! a room's owner, every shard or the storage service (notifications and
//! analytics, `stored.rs`) are answered when those reply; the connection
//! waits meanwhile and reads nothing more.
//!
//! With an internal listener (`--internal-listen`), `/metrics` and `/api/`
//! are served there only; the public listener keeps `/ws`, `/health` and
//! `/ready`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use base64::Engine as _;
use bytes::Bytes;
use herald_protocol::owner::{Answer, Input, Query, Refusal, RoomInfo};
use herald_protocol::wire;
use herald_protocol::{ErrorCode, Position, valid_room_name};
use serde::Deserialize;
use serde_json::json;

use crate::analytics;
use crate::conns::{ConnKey, Listener};
use crate::http::{RequestHead, Response};
use crate::mesh::{Mesh, Origin, Request};
use crate::notify;
use crate::placement::{Placement, Placer};
use crate::shard::Shared;
use crate::store::{StoreAnswer, StoreLink};

mod stored;

pub(crate) use stored::store_refusal;
use stored::{EVENTS_PREFIX, NOTIFICATIONS_PREFIX, READ_SUFFIX, ROLLUPS_SUFFIX, store_error};

/// Longest `kind`, `title` or idempotency key; `body` and data share the
/// payload limit.
const MAX_SHORT_FIELD: usize = 256;

/// What became of a request.
#[derive(Debug)]
pub(crate) enum Routed {
    /// Answer this now.
    Answer(Response),
    /// Other shards work on it; the answer comes with their replies.
    Pending,
}

/// What a route needs from its shard.
#[derive(Debug)]
pub(crate) struct ApiEnv<'a> {
    pub(crate) shard: usize,
    pub(crate) shared: &'a Shared,
    pub(crate) mesh: &'a mut Mesh,
    pub(crate) placer: Placer,
    /// The storage service (notifications, analytics).
    pub(crate) store: &'a StoreLink,
    /// This shard's rooms (their log store reaches the cluster).
    pub(crate) rooms: &'a mut crate::rooms::Rooms,
}

impl ApiEnv<'_> {
    fn owner(&mut self, room: &str, input: Input<Origin>) {
        let Placement::Local(shard) = self.placer.place(room);
        self.mesh.request(shard, Request::Owner(input));
    }

    fn every_shard(&mut self, make: impl Fn() -> Request) {
        for shard in 0..self.mesh.shards() {
            self.mesh.request(shard, make());
        }
    }
}

/// A request waiting for every shard.
#[derive(Debug)]
struct Gather {
    remaining: usize,
    rooms: Vec<RoomInfo>,
    count: u64,
    kind: GatherKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GatherKind {
    Rooms,
    Disconnect,
    /// A stored notification on its way to the user's connections.
    Notify {
        id: u64,
    },
}

/// The server API's requests in progress on one shard.
#[derive(Debug, Default)]
pub(crate) struct Api {
    gathers: HashMap<ConnKey, Gather>,
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

/// Which routes a listener serves.
fn serves(listener: Listener, internal_exists: bool, path: &str) -> bool {
    let operator = path == "/metrics" || path.starts_with("/api/");
    match listener {
        Listener::Internal => true,
        Listener::Public => !(operator && internal_exists),
    }
}

impl Api {
    /// Routes one request from connection `conn` (accepted by `listener`).
    pub(crate) fn request(
        &mut self,
        env: &mut ApiEnv<'_>,
        conn: ConnKey,
        listener: Listener,
        head: &RequestHead<'_>,
        body: &[u8],
    ) -> Routed {
        let (method, path) = (head.method, head.path);
        let internal_exists = env.shared.config.internal_listen.is_some();
        if !serves(listener, internal_exists, path) {
            return Routed::Answer(Response::error(404, "not_found", "no such route on this listener"));
        }
        match (method, path) {
            ("GET", "/health") => return Routed::Answer(Response::json(200, &json!({"status": "ok"}))),
            ("GET", "/ready") => {
                let cluster_ready = env.shared.cluster.as_ref().is_none_or(|c| c.ready());
                return Routed::Answer(if !env.shared.accepting.load(Relaxed) {
                    Response::json(503, &json!({"status": "draining"}))
                } else if !cluster_ready {
                    // Clustered rooms would only refuse: send clients elsewhere.
                    Response::json(503, &json!({"status": "redis_unreachable"}))
                } else {
                    Response::json(200, &json!({"status": "ready"}))
                });
            }
            ("GET", "/metrics") => {
                let mut text = crate::stats::render(
                    &env.shared.config.node_id,
                    &env.shared.stats,
                    env.shared.accepting.load(Relaxed),
                );
                env.shared.storage_stats.render(&env.shared.config.node_id, &mut text);
                if let Some(cluster) = &env.shared.cluster {
                    cluster.render(&env.shared.config.node_id, &mut text);
                }
                return Routed::Answer(Response::text(200, "text/plain; version=0.0.4", text));
            }
            _ => {}
        }
        if !path.starts_with("/api/") {
            return Routed::Answer(Response::error(404, "not_found", "no such route"));
        }
        if !api_key_ok(&env.shared.config.api_key, head) {
            return Routed::Answer(Response::error(
                401,
                "unauthorized",
                "send Authorization: Bearer <api key>",
            ));
        }
        let origin = Origin::Http {
            shard: env.shard as u32,
            conn,
        };
        let max_name = env.shared.config.session.limits.max_room_name_bytes;
        // Ok: other threads (shards, the storage service) work on it; Err:
        // the answer to send now (an error, or a request with nothing to do).
        let routed = match (method, path) {
            ("POST", "/api/publish") => publish(env, origin, body),
            ("POST", "/api/notify") => stored::notify(env, origin, body),
            ("POST", "/api/events") => stored::events(env, origin, body),
            ("GET", p) if p.starts_with(EVENTS_PREFIX) && p.ends_with(ROLLUPS_SUFFIX) => {
                stored::rollups(env, origin, head)
            }
            ("POST", p) if p.starts_with(NOTIFICATIONS_PREFIX) && p.ends_with(READ_SUFFIX) => {
                stored::mark_read(env, origin, head, body)
            }
            ("GET", p) if p.starts_with(NOTIFICATIONS_PREFIX) && !p.ends_with(READ_SUFFIX) => {
                stored::notifications(env, origin, head)
            }
            ("GET", "/api/rooms") => {
                self.gather(env, conn, GatherKind::Rooms);
                env.every_shard(|| Request::Owner(Input::ListRooms { origin }));
                Ok(())
            }
            ("GET", p) if p.starts_with("/api/presence/") => {
                let room = head.path_param("/api/presence/").unwrap_or_default();
                query(env, origin, &room, max_name, Query::Presence)
            }
            ("GET", p) if p.starts_with("/api/history/") => {
                let room = head.path_param("/api/history/").unwrap_or_default();
                let num = |name: &str| head.query_param(name).map(str::parse::<u64>).transpose();
                match (num("limit"), num("before"), num("after")) {
                    (Ok(limit), Ok(before), Ok(after)) => {
                        let max = env.shared.config.max_history();
                        let q = Query::History {
                            before: before.unwrap_or(0),
                            after: after.unwrap_or(0),
                            limit: (limit.unwrap_or(50) as usize).clamp(1, max),
                        };
                        query(env, origin, &room, max_name, q)
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
                    self.gather(env, conn, GatherKind::Disconnect);
                    env.every_shard(|| Request::DisconnectUser {
                        origin,
                        user: user.clone(),
                    });
                    if env.shared.cluster.is_some() {
                        // Its connections on other nodes: through the
                        // user's room (the count answered is this node's).
                        let room: Arc<str> = Arc::from(format!("user:{user}"));
                        let keep = env.shared.config.namespace(&room).history.max(1_000) as u64;
                        env.rooms
                            .submit_cluster(herald_protocol::owner::ClusterRequest::UserFrame {
                                room,
                                frame: bytes::Bytes::new(),
                                disconnect: true,
                                keep,
                            });
                    }
                    Ok(())
                }
            }
            (_, p) if is_route(p) => Err(Response::error(
                405,
                "method_not_allowed",
                "wrong method for this route",
            )),
            _ => Err(Response::error(404, "not_found", "no such route")),
        };
        match routed {
            Ok(()) => Routed::Pending,
            Err(r) => Routed::Answer(r),
        }
    }

    fn gather(&mut self, env: &ApiEnv<'_>, conn: ConnKey, kind: GatherKind) {
        let g = Gather {
            remaining: env.mesh.shards(),
            rooms: Vec::new(),
            count: 0,
            kind,
        };
        self.gathers.insert(conn, g);
    }

    /// The answer to a publish.
    pub(crate) fn published(result: Result<Position, Refusal>) -> Response {
        match result {
            Ok(p) => Response::json(200, &json!({"epoch": p.epoch, "offset": p.offset})),
            Err(refusal) => refusal_response(refusal),
        }
    }

    /// The answer to a history or presence query.
    pub(crate) fn answer(room: &str, answer: Answer) -> Response {
        match answer {
            Answer::NoRoom => Response::error(404, "not_found", "no such room"),
            Answer::Unavailable => Response::error(503, "unavailable", "the room's log is behind; retry shortly"),
            Answer::Presence(p) => Response::json(
                200,
                &json!({
                    "room": room,
                    "count": p.count,
                    "users": p.users.iter().map(|u| &**u).collect::<Vec<&str>>(),
                    "truncated": (p.users.len() as u64) < p.count,
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
                            "publisher": &*m.publisher,
                            "timestamp_ms": m.timestamp_ms,
                            "content_type": m.content_type.as_deref(),
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
        }
    }

    /// One shard's rooms; the answer once every shard has replied.
    pub(crate) fn rooms(&mut self, conn: ConnKey, rooms: Vec<RoomInfo>) -> Option<Response> {
        let g = self.gathers.get_mut(&conn)?;
        g.rooms.extend(rooms);
        g.remaining -= 1;
        if g.remaining > 0 {
            return None;
        }
        let mut g = self.gathers.remove(&conn)?;
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
        Some(Response::json(200, &json!({"rooms": rooms})))
    }

    /// One shard's count; the answer once every shard has replied.
    pub(crate) fn counted(&mut self, conn: ConnKey, count: u64) -> Option<Response> {
        let g = self.gathers.get_mut(&conn)?;
        g.count += count;
        g.remaining -= 1;
        if g.remaining > 0 {
            return None;
        }
        let g = self.gathers.remove(&conn)?;
        let body = match g.kind {
            GatherKind::Notify { id } => json!({"id": id, "online_connections": g.count}),
            GatherKind::Disconnect | GatherKind::Rooms => json!({"disconnected": g.count}),
        };
        Some(Response::json(200, &body))
    }

    /// The notification `id` is stored and goes to every shard's
    /// connections of its user: the request of `conn` is answered with the
    /// count once they all have.
    pub(crate) fn notifying(&mut self, conn: ConnKey, id: u64, shards: usize) {
        let g = Gather {
            remaining: shards,
            rooms: Vec::new(),
            count: 0,
            kind: GatherKind::Notify { id },
        };
        self.gathers.insert(conn, g);
    }

    /// The answer to a notification or analytics request, once the storage
    /// service has done it (a stored notification goes through
    /// [`notifying`](Self::notifying) first).
    pub(crate) fn stored(answer: StoreAnswer) -> Response {
        let ok = |v: serde_json::Value| Response::json(200, &v);
        let result = match answer {
            // A stored one goes live first (`notifying`); only a failure
            // is answered here.
            StoreAnswer::Notified(r) => r.map(|n| ok(json!({"id": n.id, "online_connections": 0}))),
            StoreAnswer::Marked(r) => r.map(|n| ok(json!({"marked": n}))),
            StoreAnswer::EventsStored(r) => r.map(|n| ok(json!({"stored": n}))),
            StoreAnswer::Page(r) => r.map(|p| ok(notify::page_json(&p))),
            StoreAnswer::Unread(r) => r.map(|n| ok(json!({"unread": n}))),
            StoreAnswer::Rollups(r) => r.map(|rows| ok(analytics::rollups_json(&rows))),
        };
        result.unwrap_or_else(|e| store_error(&e))
    }

    /// The connection went away: its answers, if any come, are dropped.
    pub(crate) fn forget(&mut self, conn: ConnKey) {
        self.gathers.remove(&conn);
    }
}

/// Whether `path` is one of the server API's routes (for 405 answers).
fn is_route(path: &str) -> bool {
    matches!(path, "/api/publish" | "/api/notify" | "/api/rooms" | "/api/events")
        || path.starts_with(NOTIFICATIONS_PREFIX)
        || (path.starts_with(EVENTS_PREFIX) && path.ends_with(ROLLUPS_SUFFIX))
}

fn api_key_ok(expected: &str, head: &RequestHead<'_>) -> bool {
    let expected = expected.as_bytes();
    let Some(given) = head.bearer() else { return false };
    // Constant time in the key's content.
    let given = given.as_bytes();
    !expected.is_empty()
        && given.len() == expected.len()
        && given.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

fn publish(env: &mut ApiEnv<'_>, origin: Origin, body: &[u8]) -> Result<(), Response> {
    let req: PublishBody = parse_json(body)?;
    let max_name = env.shared.config.session.limits.max_room_name_bytes;
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
    let max_payload = env.shared.config.session.limits.max_payload_bytes;
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
    let input = Input::Publish {
        origin,
        room: room.clone(),
        // The server API publishes as the empty user.
        user: Arc::from(""),
        payload,
        content_type: req.content_type,
        volatile: req.volatile,
        idempotency_key: req.idempotency_key,
        from_server: true,
        received: std::time::Instant::now(),
    };
    env.owner(&room, input);
    Ok(())
}

fn query(env: &mut ApiEnv<'_>, origin: Origin, room: &str, max_name: usize, query: Query) -> Result<(), Response> {
    if !valid_room_name(room, max_name) {
        return Err(Response::error(400, "invalid_room_name", "invalid room name"));
    }
    let room: Arc<str> = Arc::from(room);
    env.owner(&room.clone(), Input::Query { origin, room, query });
    Ok(())
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| Response::error(400, "bad_request", &format!("invalid JSON body: {e}")))
}

fn refusal_response(r: Refusal) -> Response {
    let status = match r.code {
        ErrorCode::Unavailable | ErrorCode::Overloaded => 503,
        ErrorCode::Forbidden => 403,
        ErrorCode::NotFound => 404,
        ErrorCode::RoomFull => 409,
        _ => 400,
    };
    Response::error(status, &code_name(r.code), r.message)
}

/// An error code as the JSON answers and SSE events name it
/// (`room_full`).
pub(crate) fn code_name(code: ErrorCode) -> String {
    to_snake(wire::ErrorCode::variant_name(code).unwrap_or("error"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_routes_move_to_the_internal_listener_when_there_is_one() {
        for path in ["/metrics", "/api/publish", "/api/rooms"] {
            assert!(serves(Listener::Public, false, path));
            assert!(!serves(Listener::Public, true, path), "{path}");
            assert!(serves(Listener::Internal, true, path));
        }
        for path in ["/health", "/ready"] {
            assert!(serves(Listener::Public, true, path));
            assert!(serves(Listener::Internal, true, path));
        }
    }

    #[test]
    fn refusals_map_to_statuses_and_snake_case_codes() {
        let r = refusal_response(Refusal {
            code: ErrorCode::RoomFull,
            message: "room is full",
        });
        assert_eq!(r.status, 409);
        assert!(String::from_utf8_lossy(&r.body).contains("\"room_full\""));
        assert_eq!(to_snake("VolatileNotAllowed"), "volatile_not_allowed");
    }
}
