//! Server API routes kept by the storage service: notifications (store,
//! then deliver; page; mark read) and analytics (events, rollups). Each
//! hands the storage service one job; the request waits for its answer
//! (`Api::stored`, or, for a stored notification, its delivery first), or
//! is answered now when the job cannot be queued: never a false success.

use std::sync::Arc;

use bytes::Bytes;
use herald_protocol::owner::LogError;
use herald_protocol::{ErrorCode, valid_room_name};
use herald_storage::NotificationRecord;
use serde::Deserialize;
use serde_json::json;

use super::{ApiEnv, MAX_SHORT_FIELD, code_name, parse_json};
use crate::analytics::{self, BatchError};
use crate::http::{RequestHead, Response};
use crate::mesh::Origin;
use crate::notify;
use crate::store::{ReadJob, WriteJob};

pub(super) const NOTIFICATIONS_PREFIX: &str = "/api/notifications/";
pub(super) const READ_SUFFIX: &str = "/read";
pub(super) const EVENTS_PREFIX: &str = "/api/events/";
pub(super) const ROLLUPS_SUFFIX: &str = "/rollups";
/// The rollups read when a request gives no `from_ms`.
const DEFAULT_ROLLUP_RANGE_MS: u64 = 3600 * 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NotifyBody {
    user: String,
    kind: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    body: String,
    /// Application data: any JSON value, stored and delivered as its JSON
    /// text.
    #[serde(default)]
    data: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MarkReadBody {
    #[serde(default)]
    ids: Vec<u64>,
    #[serde(default)]
    up_to: u64,
    #[serde(default)]
    all: bool,
}

/// The answer when the storage service refuses or fails a job.
pub(super) fn store_error(e: &LogError) -> Response {
    let (code, message) = store_refusal(e);
    Response::error(503, &code_name(code), message).with_header("Retry-After: 1")
}

/// What a client is told when the storage service refuses a job (its
/// queue is full: nothing was done) or fails it (it may or may not be
/// durable, so it is not acknowledged).
pub(crate) fn store_refusal(e: &LogError) -> (ErrorCode, &'static str) {
    match e {
        LogError::Overloaded => (ErrorCode::Overloaded, "the node's storage queue is full; retry shortly"),
        LogError::Failed(_) => (ErrorCode::Unavailable, "storage is unavailable; retry with backoff"),
    }
}

/// The name between `prefix` and `suffix` of the path, percent-decoded.
fn path_between(path: &str, prefix: &str, suffix: &str) -> Option<String> {
    let raw = path.strip_prefix(prefix)?.strip_suffix(suffix)?;
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// The user id of a path, checked as `POST /api/notify` checks it.
fn user_of(path: &str, suffix: &str, max_name: usize) -> Result<Arc<str>, Response> {
    match path_between(path, NOTIFICATIONS_PREFIX, suffix) {
        Some(user) if !user.is_empty() && valid_room_name(&format!("user:{user}"), max_name) => Ok(Arc::from(user)),
        _ => Err(Response::error(400, "bad_request", "invalid user id")),
    }
}

/// A query parameter that must be an unsigned integer if present.
fn number(head: &RequestHead<'_>, name: &str) -> Result<Option<u64>, Response> {
    head.query_param(name)
        .map(str::parse::<u64>)
        .transpose()
        .map_err(|_| Response::error(400, "bad_request", &format!("{name} must be an unsigned integer")))
}

/// `POST /api/notify`: stored first; delivered live and answered once the
/// storage service has it (the shard does that, `shard/storage.rs`).
pub(super) fn notify(env: &mut ApiEnv<'_>, origin: Origin, body: &[u8]) -> Result<(), Response> {
    let req: NotifyBody = parse_json(body)?;
    let room = format!("user:{}", req.user);
    let max_name = env.shared.config.session.limits.max_room_name_bytes;
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
    let data = req.data.map(|v| v.to_string().into_bytes()).unwrap_or_default();
    let max_payload = env.shared.config.session.limits.max_payload_bytes;
    if req.body.len() + data.len() > max_payload {
        let msg = format!("body and data larger than {max_payload} bytes");
        return Err(Response::error(413, "payload_too_large", &msg));
    }
    let now = crate::unix_ms();
    let record = NotificationRecord {
        id: env.shared.notification_ids.next(now),
        user: Arc::from(req.user),
        kind: req.kind,
        title: req.title,
        body: req.body,
        data: Bytes::from(data),
        created_ms: now,
        read: false,
    };
    env.store
        .write(WriteJob::Notify { origin, record })
        .map_err(|e| store_error(&e))
}

/// `GET /api/notifications/{user}?unread_only=&before_id=&limit=`.
pub(super) fn notifications(env: &mut ApiEnv<'_>, origin: Origin, head: &RequestHead<'_>) -> Result<(), Response> {
    let max_name = env.shared.config.session.limits.max_room_name_bytes;
    let user = user_of(head.path, "", max_name)?;
    let unread_only = match head.query_param("unread_only") {
        None | Some("false" | "0") => false,
        Some("true" | "1") => true,
        Some(_) => return Err(Response::error(400, "bad_request", "unread_only is true or false")),
    };
    let before_id = number(head, "before_id")?.unwrap_or(0);
    let limit = number(head, "limit")?.unwrap_or(50).clamp(1, notify::MAX_PAGE as u64) as usize;
    let job = ReadJob::Notifications {
        origin,
        user,
        before_id,
        limit,
        unread_only,
    };
    env.store.read(job).map_err(|e| store_error(&e))
}

/// `POST /api/notifications/{user}/read` with `{"ids", "up_to", "all"}`.
pub(super) fn mark_read(
    env: &mut ApiEnv<'_>,
    origin: Origin,
    head: &RequestHead<'_>,
    body: &[u8],
) -> Result<(), Response> {
    let max_name = env.shared.config.session.limits.max_room_name_bytes;
    let user = user_of(head.path, READ_SUFFIX, max_name)?;
    let req: MarkReadBody = parse_json(body)?;
    if req.ids.len() > notify::MAX_MARK_IDS {
        let msg = format!("at most {} ids per request", notify::MAX_MARK_IDS);
        return Err(Response::error(400, "too_many_ids", &msg));
    }
    if req.ids.is_empty() && req.up_to == 0 && !req.all {
        // Nothing asked, nothing to store: answered now.
        return Err(Response::json(200, &json!({"marked": 0})));
    }
    let job = WriteJob::MarkRead {
        origin,
        user,
        ids: req.ids,
        up_to: req.up_to,
        all: req.all,
    };
    env.store.write(job).map_err(|e| store_error(&e))
}

/// `POST /api/events` with a JSON array of events: one write for all.
pub(super) fn events(env: &mut ApiEnv<'_>, origin: Origin, body: &[u8]) -> Result<(), Response> {
    let events = analytics::parse_batch(body, crate::unix_ms()).map_err(|e| match e {
        BatchError::Malformed(m) => Response::error(400, "bad_request", &m),
        BatchError::TooMany(n) => {
            let msg = format!("{n} events; at most {} per request", analytics::MAX_BATCH);
            Response::error(400, "too_many_events", &msg)
        }
        BatchError::Invalid { index, why } => Response::error(400, "invalid_event", &format!("event {index}: {why}")),
    })?;
    if events.is_empty() {
        // Answered now: nothing to store.
        return Err(Response::json(200, &json!({"stored": 0})));
    }
    let job = WriteJob::Events {
        origin: Some(origin),
        events,
    };
    env.store.write(job).map_err(|e| store_error(&e))
}

/// `GET /api/events/{name}/rollups?from_ms=&to_ms=`: the minutes starting
/// in `[from_ms, to_ms)`, by default the last hour.
pub(super) fn rollups(env: &mut ApiEnv<'_>, origin: Origin, head: &RequestHead<'_>) -> Result<(), Response> {
    let name = path_between(head.path, EVENTS_PREFIX, ROLLUPS_SUFFIX).unwrap_or_default();
    analytics::check_name(&name).map_err(|e| Response::error(400, "invalid_event", &e.to_string()))?;
    // Up to now, the current minute included.
    let to_ms = number(head, "to_ms")?.unwrap_or_else(|| crate::unix_ms() + 1);
    let from_ms = number(head, "from_ms")?.unwrap_or(to_ms.saturating_sub(DEFAULT_ROLLUP_RANGE_MS));
    if from_ms >= to_ms {
        return Err(Response::error(400, "bad_request", "from_ms must be below to_ms"));
    }
    if to_ms - from_ms > analytics::MAX_ROLLUP_RANGE_MS {
        return Err(Response::error(
            400,
            "range_too_large",
            "at most 7 days of rollups per request",
        ));
    }
    let job = ReadJob::Rollups {
        origin,
        name: Arc::from(name),
        from_ms,
        to_ms,
    };
    env.store.read(job).map_err(|e| store_error(&e))
}
