//! The Redis-facing layer of the cluster: key names, the Lua scripts that
//! keep a room's offsets, epoch, history and presence consistent, the calls
//! that run them, and the parsing of every reply.
//!
//! Everything here is async over the `redis` crate's aio connections (a
//! `ConnectionManager` or a `MultiplexedConnection`); the bridge runs it on
//! a current-thread runtime in its own thread. Parsing is separate from I/O
//! and never panics: a reply of an unexpected shape is a
//! [`RedisError::Protocol`], an unreadable stream entry is skipped.
//!
//! Key layout (standalone Redis instances, sharded by room on the client
//! side with [`room_instance`]; a room's keys share the hash tag `{room}`):
//! - `herald:{R}:m` hash: `e` epoch, `o` last message offset.
//! - `herald:{R}:s` stream: a message with offset `o` has the ID `o-0`;
//!   every other entry (volatile, presence, typing) gets `<last offset>-*`,
//!   so it sorts after the message it follows and never takes an offset.
//!   Offsets are therefore dense: the stream holds every message from
//!   `covered_from` to the last offset.
//! - `herald:{R}:k` zset: idempotency keys (`publisher \0 key`, score =
//!   offset), the newest `dedup_limit` kept.
//! - `herald:{R}:pn` hash: `node \0 user` -> 1, and `node` -> how many users
//!   that node has in the room; `herald:{R}:pu` hash: `user` -> how many
//!   nodes hold the user (HLEN = distinct users cluster-wide).
//! - `herald:node:{N}:alive` (PX expiry), `herald:nodes` (set of node ids),
//!   `herald:node:{N}:rooms` (rooms where N has presence).
//! - `herald:persist` stream: a copy of every durable message for the
//!   storage consumer group `storage`.
//!
//! Epochs: a room's epoch (Redis `TIME` in microseconds) is created only
//! when both its meta and its stream are missing; a missing meta is
//! restored from the stream's last entry. A meta created without a message
//! expires 24 h after the room's last activity (follow, volatile, presence,
//! typing re-arm it, together with the stream); the first publish makes
//! both persistent.

// used by the bridge (lead)
#![allow(dead_code)]

use std::sync::LazyLock;

use bytes::Bytes;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{Cmd, ErrorKind, Pipeline, Script, ServerErrorKind, Value};

/// What a Redis call can fail with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RedisError {
    /// The connection or the server failed the command.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The reply did not have the expected shape.
    #[error("unexpected redis reply: {0}")]
    Protocol(String),
}

type Result<T> = std::result::Result<T, RedisError>;

/// A reply of unexpected shape, shown in part (it may hold payloads).
fn protocol(what: &str, v: &Value) -> RedisError {
    let mut shown = format!("{what}: {v:?}");
    if shown.len() > 300 {
        let mut end = 300;
        while !shown.is_char_boundary(end) {
            end -= 1;
        }
        shown.truncate(end);
        shown.push_str("...");
    }
    RedisError::Protocol(shown)
}

// ---------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------

/// The set of node ids that have sent a heartbeat and were not reaped.
pub(crate) const NODES_KEY: &str = "herald:nodes";
/// The stream of durable messages for the storage consumers.
pub(crate) const PERSIST_STREAM: &str = "herald:persist";
/// The consumer group that writes [`PERSIST_STREAM`] to storage.
pub(crate) const PERSIST_GROUP: &str = "storage";
/// Users returned by [`follow`] at most (the count is exact regardless).
pub(crate) const PRESENCE_SAMPLE: u64 = 100;
/// [`read_range`] returns at most this many messages per call, so one
/// script never holds Redis for long.
pub(crate) const RANGE_LIMIT_MAX: u64 = 1000;
/// `pn` fields [`reap`] removes per script call (one call is atomic and
/// blocks Redis while it runs).
const REAP_BUDGET: u64 = 1000;
/// Script calls per node for [`reap`] / [`reap_dead`] (a bound on the
/// loop: 10 000 × 1000 fields).
const REAP_CALLS_MAX: usize = 10_000;
/// XAUTOCLAIM calls per [`claim_persist`].
const CLAIM_CALLS_MAX: usize = 16;

fn room_key(room: &str, suffix: &str) -> String {
    format!("herald:{{{room}}}:{suffix}")
}

/// `herald:{R}:m`, the room's meta hash.
pub(crate) fn meta_key(room: &str) -> String {
    room_key(room, "m")
}

/// `herald:{R}:s`, the room's stream.
pub(crate) fn stream_key(room: &str) -> String {
    room_key(room, "s")
}

/// `herald:{R}:k`, the room's idempotency keys.
pub(crate) fn dedup_key(room: &str) -> String {
    room_key(room, "k")
}

/// `herald:{R}:pn`, which node holds which user in the room.
pub(crate) fn presence_nodes_key(room: &str) -> String {
    room_key(room, "pn")
}

/// `herald:{R}:pu`, on how many nodes each present user is.
pub(crate) fn presence_users_key(room: &str) -> String {
    room_key(room, "pu")
}

/// `herald:node:{N}:alive`, the node's liveness (expires unless renewed).
pub(crate) fn node_alive_key(node: &str) -> String {
    format!("herald:node:{{{node}}}:alive")
}

/// `herald:node:{N}:rooms`, the rooms in which the node has presence.
pub(crate) fn node_rooms_key(node: &str) -> String {
    format!("herald:node:{{{node}}}:rooms")
}

/// The room of a room stream key (`herald:{R}:s`).
pub(crate) fn room_of_stream_key(key: &str) -> Option<&str> {
    key.strip_prefix("herald:{")?.strip_suffix("}:s")
}

/// FNV-1a 64 of a room name: stable across processes and versions (as
/// `placement::shard_of`).
fn fnv1a(room: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in room.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The Redis instance (of `instances`) that holds `room`.
pub(crate) fn room_instance(room: &str, instances: usize) -> usize {
    (fnv1a(room) % instances.max(1) as u64) as usize
}

/// Notice streams per instance (`notify` in lua/common.lua writes them).
pub(crate) const NOTICE_PARTITIONS: u32 = 64;

/// The notice partition of `room`: the low bits of its FNV-1a 64, which the
/// scripts compute too.
pub(crate) fn notice_partition(room: &str) -> u32 {
    (fnv1a(room) % u64::from(NOTICE_PARTITIONS)) as u32
}

pub(crate) fn notice_key(partition: u32) -> String {
    format!("herald:n:{partition}")
}

/// New notices of one partition: the rooms that got entries, once each,
/// and the ID to read after next time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Notices {
    pub(crate) partition: u32,
    pub(crate) last_id: StreamId,
    pub(crate) rooms: Vec<String>,
    /// The read returned as many as it was allowed: more wait.
    pub(crate) full: bool,
}

/// Reads the notice partitions after the given IDs (blocking up to
/// `block_ms` when given and nothing is there).
pub(crate) async fn xread_notices<C: ConnectionLike>(
    conn: &mut C,
    partitions: &[(u32, StreamId)],
    count: usize,
    block_ms: Option<u64>,
) -> Result<Vec<Notices>> {
    if partitions.is_empty() {
        return Ok(Vec::new());
    }
    let mut c = redis::cmd("XREAD");
    c.arg("COUNT").arg(count.max(1));
    if let Some(ms) = block_ms {
        c.arg("BLOCK").arg(ms);
    }
    c.arg("STREAMS");
    for (p, _) in partitions {
        c.arg(notice_key(*p));
    }
    for (_, id) in partitions {
        c.arg(format_id(*id));
    }
    let reply: Value = c.query_async(conn).await?;
    let mut out = Vec::new();
    for (key, entries) in stream_pairs(reply, "XREAD notices")? {
        let partition = bytes_of(&key)
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|k| k.strip_prefix("herald:n:"))
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| protocol("XREAD notice key", &key))?;
        let items = array(entries).ok_or_else(|| RedisError::Protocol("XREAD notices: not an array".into()))?;
        let full = items.len() >= count.max(1);
        let mut notices = Notices {
            partition,
            last_id: (0, 0),
            rooms: Vec::new(),
            full,
        };
        for item in items {
            let Some((id, fields)) = split_entry(item) else {
                continue;
            };
            notices.last_id = id;
            if let Some(room) = Fields::parse(fields).and_then(|mut f| f.string("r"))
                && !notices.rooms.contains(&room)
            {
                notices.rooms.push(room);
            }
        }
        if notices.last_id != (0, 0) {
            out.push(notices);
        }
    }
    Ok(out)
}

/// The last ID of each notice partition ((0, 0) for an empty one): where a
/// reader that starts to watch it begins.
pub(crate) async fn notice_heads<C: ConnectionLike>(conn: &mut C, partitions: &[u32]) -> Result<Vec<StreamId>> {
    if partitions.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for p in partitions {
        pipe.cmd("XREVRANGE")
            .arg(notice_key(*p))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1);
    }
    let replies: Vec<Value> = pipe.query_async(conn).await?;
    Ok(replies
        .into_iter()
        .map(|v| {
            array(v)
                .and_then(|a| a.into_iter().next())
                .and_then(split_entry)
                .map_or((0, 0), |(id, _)| id)
        })
        .collect())
}

// ---------------------------------------------------------------------------
// Scripts
// ---------------------------------------------------------------------------

macro_rules! lua {
    ($code:ident, $script:ident, $file:literal) => {
        const $code: &str = concat!(include_str!("lua/common.lua"), include_str!($file));
        static $script: LazyLock<Script> = LazyLock::new(|| Script::new($code));
    };
}

lua!(PUBLISH_LUA, PUBLISH, "lua/publish.lua");
lua!(FOLLOW_LUA, FOLLOW, "lua/follow.lua");
lua!(EVENT_LUA, EVENT, "lua/event.lua");
lua!(PRESENCE_LUA, PRESENCE, "lua/presence.lua");
lua!(REAP_LUA, REAP, "lua/reap.lua");
lua!(RANGE_LUA, RANGE, "lua/range.lua");

const SCRIPTS: [&str; 6] = [PUBLISH_LUA, FOLLOW_LUA, EVENT_LUA, PRESENCE_LUA, REAP_LUA, RANGE_LUA];

/// `EVALSHA <sha> <#keys> keys...`; the caller appends the arguments.
fn evalsha(script: &Script, keys: &[&str]) -> Cmd {
    let mut c = redis::cmd("EVALSHA");
    c.arg(script.get_hash()).arg(keys.len()).arg(keys);
    c
}

fn is_noscript(e: &redis::RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
}

/// Runs one EVALSHA; on NOSCRIPT (a restarted or flushed Redis) loads the
/// script and runs it again.
async fn eval<C: ConnectionLike>(conn: &mut C, script: &Script, cmd: &Cmd) -> Result<Value> {
    match cmd.query_async::<Value>(conn).await {
        Err(e) if is_noscript(&e) => {
            script.load_async(conn).await?;
            Ok(cmd.query_async::<Value>(conn).await?)
        }
        r => Ok(r?),
    }
}

/// Loads every Herald script (one round trip).
pub(crate) async fn load_scripts<C: ConnectionLike>(conn: &mut C) -> Result<()> {
    let mut pipe = redis::pipe();
    for code in SCRIPTS {
        pipe.cmd("SCRIPT").arg("LOAD").arg(code);
    }
    pipe.exec_async(conn).await?;
    Ok(())
}

/// Sends `pipe` and returns one reply per command, server errors included
/// as `Value::ServerError` (parse each with the matching `parse_*`).
/// Commands that failed with NOSCRIPT are sent again, once, after loading
/// the scripts; a retried publish then takes its offset after the others'
/// (only when a SCRIPT FLUSH or restart lands inside the batch).
///
/// `pipe` must not be atomic and must not hold `.ignore()`d commands.
pub(crate) async fn query_pipeline<C: ConnectionLike>(conn: &mut C, pipe: &mut Pipeline) -> Result<Vec<Value>> {
    if pipe.is_empty() {
        return Ok(Vec::new());
    }
    if pipe.is_transaction() {
        return Err(RedisError::Protocol(
            "query_pipeline: atomic pipelines are not supported".into(),
        ));
    }
    pipe.ignore_errors();
    let mut replies: Vec<Value> = pipe.query_async(conn).await?;
    if replies.len() != pipe.len() {
        return Err(RedisError::Protocol(format!(
            "{} replies for {} commands (ignored commands in the pipeline?)",
            replies.len(),
            pipe.len()
        )));
    }
    let retry: Vec<usize> = replies
        .iter()
        .enumerate()
        .filter(|(_, v)| matches!(v, Value::ServerError(e) if e.kind() == Some(ServerErrorKind::NoScript)))
        .map(|(i, _)| i)
        .collect();
    if retry.is_empty() {
        return Ok(replies);
    }
    load_scripts(conn).await?;
    let mut again = Pipeline::with_capacity(retry.len());
    again.ignore_errors();
    for (i, cmd) in pipe.cmd_iter().enumerate() {
        if retry.binary_search(&i).is_ok() {
            again.add_command(cmd.clone());
        }
    }
    let redone: Vec<Value> = again.query_async(conn).await?;
    if redone.len() != retry.len() {
        return Err(RedisError::Protocol(format!(
            "{} replies for {} retried commands",
            redone.len(),
            retry.len()
        )));
    }
    for (i, v) in retry.into_iter().zip(redone) {
        if let Some(slot) = replies.get_mut(i) {
            *slot = v;
        }
    }
    Ok(replies)
}

/// A server error inside a pipeline reply becomes an error.
fn check(v: Value) -> Result<Value> {
    match v {
        Value::ServerError(e) => Err(RedisError::Redis(e.into())),
        v => Ok(v),
    }
}

// ---------------------------------------------------------------------------
// Reply parsing helpers
// ---------------------------------------------------------------------------

/// A stream entry ID: (milliseconds part, sequence).
pub(crate) type StreamId = (u64, u64);

/// Formats an ID as Redis writes it.
pub(crate) fn format_id(id: StreamId) -> String {
    format!("{}-{}", id.0, id.1)
}

/// Parses `ms-seq`.
pub(crate) fn parse_id(b: &[u8]) -> Option<StreamId> {
    let s = std::str::from_utf8(b).ok()?;
    let (ms, seq) = s.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

fn bytes_of(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes()),
        _ => None,
    }
}

fn into_bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::VerbatimString { text, .. } => Some(text.into_bytes()),
        _ => None,
    }
}

fn into_string(v: Value) -> Option<String> {
    String::from_utf8(into_bytes(v)?).ok()
}

fn parse_u64(b: &[u8]) -> Option<u64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn u64_of(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        v => parse_u64(bytes_of(v)?),
    }
}

fn id_of(v: &Value) -> Option<StreamId> {
    parse_id(bytes_of(v)?)
}

/// The elements of an array (or RESP3 set) reply.
fn array(v: Value) -> Option<Vec<Value>> {
    match v {
        Value::Array(a) | Value::Set(a) => Some(a),
        _ => None,
    }
}

/// An array reply (the reply is formatted into the error only on failure:
/// it may hold payloads).
fn expect_array(v: Value, what: &str) -> Result<Vec<Value>> {
    match check(v)? {
        Value::Array(a) | Value::Set(a) => Ok(a),
        other => Err(protocol(what, &other)),
    }
}

/// An array reply of a fixed length.
fn tuple<const N: usize>(v: Value, what: &str) -> Result<[Value; N]> {
    <[Value; N]>::try_from(expect_array(v, what)?).map_err(|a| protocol(what, &Value::Array(a)))
}

/// A stream entry's fields, in order.
#[derive(Debug, Default)]
struct Fields(Vec<(Vec<u8>, Vec<u8>)>);

impl Fields {
    /// A flat `[name, value, ...]` array, or a RESP3 map; `None` for any
    /// other shape (a deleted entry is `Nil`).
    fn parse(v: Value) -> Option<Fields> {
        match v {
            Value::Array(a) => {
                if a.len() % 2 != 0 {
                    return None;
                }
                let mut out = Vec::with_capacity(a.len() / 2);
                let mut it = a.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    out.push((into_bytes(k)?, into_bytes(v)?));
                }
                Some(Fields(out))
            }
            Value::Map(m) => m
                .into_iter()
                .map(|(k, v)| Some((into_bytes(k)?, into_bytes(v)?)))
                .collect::<Option<Vec<_>>>()
                .map(Fields),
            _ => None,
        }
    }

    fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    fn take(&mut self, name: &str) -> Option<Vec<u8>> {
        self.0
            .iter_mut()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| std::mem::take(v))
    }

    fn string(&mut self, name: &str) -> Option<String> {
        String::from_utf8(self.take(name)?).ok()
    }

    fn u64(&self, name: &str) -> Option<u64> {
        parse_u64(self.get(name)?)
    }

    /// A timestamp: 0 when absent, `None` (malformed) when unreadable.
    fn timestamp(&self) -> Option<u64> {
        match self.get("ts") {
            None => Some(0),
            Some(b) => parse_u64(b),
        }
    }

    fn flag(&self, name: &str) -> Option<bool> {
        match self.get(name)? {
            b"1" => Some(true),
            b"0" => Some(false),
            _ => None,
        }
    }

    fn content_type(&mut self) -> Option<Option<String>> {
        match self.take("c") {
            None => Some(None),
            Some(b) => String::from_utf8(b).ok().map(Some),
        }
    }

    /// `N` and `M` ("shard:conn"); `None` unless both are present and valid.
    fn origin(&mut self) -> Option<Origin> {
        let member = Member::parse(self.get("M")?)?;
        Some(Origin {
            node: self.string("N")?,
            shard: member.shard,
            conn: member.conn,
        })
    }
}

/// `[id, fields]` of a stream entry; the fields value may be `Nil` (an
/// entry deleted while pending).
fn split_entry(v: Value) -> Option<(StreamId, Value)> {
    let [id, fields] = <[Value; 2]>::try_from(array(v)?).ok()?;
    Some((id_of(&id)?, fields))
}

// ---------------------------------------------------------------------------
// Stream entries
// ---------------------------------------------------------------------------

/// A connection on a node: the shard and the connection's id there
/// (written as `M` = "shard:conn").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Member {
    pub(crate) shard: u32,
    pub(crate) conn: u64,
}

impl Member {
    fn encode(self) -> String {
        format!("{}:{}", self.shard, self.conn)
    }

    fn parse(b: &[u8]) -> Option<Member> {
        let (shard, conn) = std::str::from_utf8(b).ok()?.split_once(':')?;
        Some(Member {
            shard: shard.parse().ok()?,
            conn: conn.parse().ok()?,
        })
    }
}

/// Where a volatile, presence or typing entry came from, so that node can
/// leave out the connection that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) node: String,
    pub(crate) shard: u32,
    pub(crate) conn: u64,
}

/// A durable message as the room stream holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamMessage {
    pub(crate) epoch: u64,
    pub(crate) offset: u64,
    pub(crate) publisher: String,
    pub(crate) timestamp_ms: u64,
    pub(crate) payload: Bytes,
    pub(crate) content_type: Option<String>,
}

/// One entry of a room stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamEntry {
    pub(crate) id: StreamId,
    pub(crate) kind: EntryKind,
}

/// What a room stream entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EntryKind {
    /// `t=m`: a message with an offset (the ID's ms part).
    Message(StreamMessage),
    /// `t=v`: a volatile message (no offset, not in history reads).
    Volatile {
        epoch: u64,
        publisher: String,
        timestamp_ms: u64,
        payload: Bytes,
        content_type: Option<String>,
        origin: Option<Origin>,
    },
    /// `t=p`: the user's first join / last leave cluster-wide; `count` is
    /// the number of distinct users present after it.
    Presence {
        epoch: u64,
        user: String,
        joined: bool,
        count: u64,
        timestamp_ms: u64,
        origin: Option<Origin>,
    },
    /// `t=y`: typing started (`active`) or stopped.
    Typing {
        epoch: u64,
        user: String,
        active: bool,
        timestamp_ms: u64,
        origin: Option<Origin>,
    },
    /// `t=f`: a frame for the connections of a `user:U` room's user (a live
    /// notification); `t=x`: their disconnection (`frame` empty). `node`
    /// sent it.
    UserFrame {
        frame: Bytes,
        disconnect: bool,
        timestamp_ms: u64,
        node: String,
    },
}

/// A room stream entry from its ID and fields; `None` when unknown or
/// malformed.
fn parse_entry(id: StreamId, fields: Value) -> Option<StreamEntry> {
    let mut f = Fields::parse(fields)?;
    let epoch = f.u64("e")?;
    let timestamp_ms = f.timestamp()?;
    let kind = match f.get("t")? {
        b"m" => EntryKind::Message(StreamMessage {
            epoch,
            offset: id.0,
            publisher: f.string("u")?,
            timestamp_ms,
            payload: Bytes::from(f.take("d")?),
            content_type: f.content_type()?,
        }),
        b"v" => EntryKind::Volatile {
            epoch,
            publisher: f.string("u")?,
            timestamp_ms,
            payload: Bytes::from(f.take("d")?),
            content_type: f.content_type()?,
            origin: f.origin(),
        },
        b"p" => EntryKind::Presence {
            epoch,
            joined: f.flag("a")?,
            count: f.u64("n")?,
            user: f.string("u")?,
            timestamp_ms,
            origin: f.origin(),
        },
        b"y" => EntryKind::Typing {
            epoch,
            active: f.flag("a")?,
            user: f.string("u")?,
            timestamp_ms,
            origin: f.origin(),
        },
        kind @ (b"f" | b"x") => {
            let disconnect = kind == b"x";
            EntryKind::UserFrame {
                disconnect,
                frame: Bytes::from(f.take("d").unwrap_or_default()),
                timestamp_ms,
                node: f.string("N")?,
            }
        }
        _ => return None,
    };
    Some(StreamEntry { id, kind })
}

/// Parses an array of `[id, fields]` entries, skipping (and counting) the
/// unreadable ones; returns the last ID seen, readable or not.
fn parse_entries(items: Vec<Value>) -> (Vec<StreamEntry>, Option<StreamId>, usize) {
    let mut out = Vec::with_capacity(items.len());
    let mut last = None;
    let mut skipped = 0;
    for item in items {
        match split_entry(item) {
            Some((id, fields)) => {
                last = Some(id);
                match parse_entry(id, fields) {
                    Some(e) => out.push(e),
                    None => skipped += 1,
                }
            }
            None => skipped += 1,
        }
    }
    (out, last, skipped)
}

// ---------------------------------------------------------------------------
// Publish
// ---------------------------------------------------------------------------

/// One durable message to publish.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Publish<'a> {
    pub(crate) room: &'a str,
    pub(crate) publisher: &'a str,
    pub(crate) payload: &'a [u8],
    /// `None` (or empty) for none.
    pub(crate) content_type: Option<&'a str>,
    /// `None` (or empty) for none; keys are per publisher.
    pub(crate) idempotency_key: Option<&'a str>,
    pub(crate) timestamp_ms: u64,
    /// Approximate bound on the room stream (`MAXLEN ~`); 0 = no trim.
    pub(crate) maxlen: u64,
    /// Idempotency keys kept per room (the newest); 0 = keys are ignored.
    pub(crate) dedup_limit: u64,
    /// Also append to [`PERSIST_STREAM`] for the storage consumers.
    pub(crate) persist: bool,
}

/// Where a published message landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Published {
    pub(crate) epoch: u64,
    pub(crate) offset: u64,
    /// The idempotency key was seen: `offset` is the first publish's, and
    /// nothing was written.
    pub(crate) duplicate: bool,
}

/// The EVALSHA of one publish, to add to a pipeline
/// (`pipe.add_command(publish_cmd(..))`; run it with [`query_pipeline`] and
/// read its reply with [`parse_published`]).
pub(crate) fn publish_cmd(p: &Publish<'_>) -> Cmd {
    let mut c = evalsha(
        &PUBLISH,
        &[
            &meta_key(p.room),
            &stream_key(p.room),
            &dedup_key(p.room),
            PERSIST_STREAM,
        ],
    );
    c.arg(p.room)
        .arg(p.publisher)
        .arg(p.payload)
        .arg(p.content_type.unwrap_or(""))
        .arg(p.idempotency_key.unwrap_or(""))
        .arg(p.timestamp_ms)
        .arg(p.maxlen)
        .arg(p.dedup_limit)
        .arg(if p.persist { "1" } else { "0" });
    c
}

/// The reply of [`publish_cmd`].
pub(crate) fn parse_published(v: Value) -> Result<Published> {
    let [e, o, d] = tuple(v, "publish")?;
    match (u64_of(&e), u64_of(&o), u64_of(&d)) {
        (Some(epoch), Some(offset), Some(dup)) => Ok(Published {
            epoch,
            offset,
            duplicate: dup == 1,
        }),
        _ => Err(RedisError::Protocol(format!("publish: [{e:?}, {o:?}, {d:?}]"))),
    }
}

/// Publishes one message (see [`publish_cmd`] to batch many).
pub(crate) async fn publish<C: ConnectionLike>(conn: &mut C, p: &Publish<'_>) -> Result<Published> {
    parse_published(eval(conn, &PUBLISH, &publish_cmd(p)).await?)
}

// ---------------------------------------------------------------------------
// Follow
// ---------------------------------------------------------------------------

/// A room's head, read atomically when a node starts following it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) epoch: u64,
    pub(crate) last_offset: u64,
    /// The stream's last ID, or `(last_offset, 0)` when it is empty or
    /// missing: read entries strictly after it.
    pub(crate) stream_last_id: StreamId,
    /// Distinct users present cluster-wide.
    pub(crate) presence_count: u64,
    /// Up to [`PRESENCE_SAMPLE`] of them.
    pub(crate) presence_sample: Vec<String>,
}

pub(crate) fn follow_cmd(room: &str) -> Cmd {
    let mut c = evalsha(
        &FOLLOW,
        &[
            &meta_key(room),
            &stream_key(room),
            &dedup_key(room),
            &presence_users_key(room),
        ],
    );
    c.arg(PRESENCE_SAMPLE);
    c
}

pub(crate) fn parse_head(v: Value) -> Result<Head> {
    let [e, o, id, n, sample] = tuple(v, "follow")?;
    let (Some(epoch), Some(last_offset), Some(stream_last_id), Some(presence_count)) =
        (u64_of(&e), u64_of(&o), id_of(&id), u64_of(&n))
    else {
        return Err(RedisError::Protocol(format!(
            "follow: [{e:?}, {o:?}, {id:?}, {n:?}, ..]"
        )));
    };
    let sample = expect_array(sample, "follow sample")?;
    Ok(Head {
        epoch,
        last_offset,
        stream_last_id,
        presence_count,
        presence_sample: sample.into_iter().filter_map(into_string).collect(),
    })
}

/// Reads a room's head, creating its epoch if it has none (see the module
/// docs), and re-arms the expiry of a room without messages.
pub(crate) async fn follow<C: ConnectionLike>(conn: &mut C, room: &str) -> Result<Head> {
    parse_head(eval(conn, &FOLLOW, &follow_cmd(room)).await?)
}

// ---------------------------------------------------------------------------
// Volatile messages and typing
// ---------------------------------------------------------------------------

/// A volatile message: in the stream for live followers, never in history.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Volatile<'a> {
    pub(crate) room: &'a str,
    pub(crate) publisher: &'a str,
    pub(crate) payload: &'a [u8],
    pub(crate) content_type: Option<&'a str>,
    pub(crate) timestamp_ms: u64,
    pub(crate) node: &'a str,
    pub(crate) member: Member,
    pub(crate) maxlen: u64,
}

/// A typing indicator.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Typing<'a> {
    pub(crate) room: &'a str,
    pub(crate) user: &'a str,
    pub(crate) active: bool,
    pub(crate) timestamp_ms: u64,
    pub(crate) node: &'a str,
    pub(crate) member: Member,
    pub(crate) maxlen: u64,
}

fn event_cmd(room: &str, maxlen: u64) -> Cmd {
    let mut c = evalsha(&EVENT, &[&meta_key(room), &stream_key(room), &dedup_key(room)]);
    c.arg(maxlen);
    c
}

/// The EVALSHA of a volatile message (reply: [`parse_entry_id`]).
pub(crate) fn volatile_cmd(v: &Volatile<'_>) -> Cmd {
    let mut c = event_cmd(v.room, v.maxlen);
    c.arg("t").arg("v").arg("u").arg(v.publisher).arg("d").arg(v.payload);
    if let Some(ct) = v.content_type.filter(|ct| !ct.is_empty()) {
        c.arg("c").arg(ct);
    }
    c.arg("ts")
        .arg(v.timestamp_ms)
        .arg("N")
        .arg(v.node)
        .arg("M")
        .arg(v.member.encode());
    c
}

/// The EVALSHA of a typing indicator (reply: [`parse_entry_id`]).
pub(crate) fn typing_cmd(t: &Typing<'_>) -> Cmd {
    let mut c = event_cmd(t.room, t.maxlen);
    c.arg("t")
        .arg("y")
        .arg("u")
        .arg(t.user)
        .arg("a")
        .arg(if t.active { "1" } else { "0" })
        .arg("ts")
        .arg(t.timestamp_ms)
        .arg("N")
        .arg(t.node)
        .arg("M")
        .arg(t.member.encode());
    c
}

/// A frame for a user's connections on every node following `room`
/// (`user:U`), or their disconnection.
pub(crate) fn user_frame_cmd(
    room: &str,
    frame: &[u8],
    disconnect: bool,
    timestamp_ms: u64,
    node: &str,
    maxlen: u64,
) -> Cmd {
    let mut c = event_cmd(room, maxlen);
    c.arg("t")
        .arg(if disconnect { "x" } else { "f" })
        .arg("d")
        .arg(frame)
        .arg("ts")
        .arg(timestamp_ms)
        .arg("N")
        .arg(node);
    c
}

/// The ID of an added entry.
pub(crate) fn parse_entry_id(v: Value) -> Result<StreamId> {
    let v = check(v)?;
    id_of(&v).ok_or_else(|| protocol("entry id", &v))
}

/// Adds a volatile message after the room's last message. Creates the
/// room's epoch (like [`follow`]) if it has none, so a room that outlives
/// its 24 h expiry keeps one.
pub(crate) async fn add_volatile<C: ConnectionLike>(conn: &mut C, v: &Volatile<'_>) -> Result<StreamId> {
    parse_entry_id(eval(conn, &EVENT, &volatile_cmd(v)).await?)
}

/// Adds a typing indicator (as [`add_volatile`]).
pub(crate) async fn add_typing<C: ConnectionLike>(conn: &mut C, t: &Typing<'_>) -> Result<StreamId> {
    parse_entry_id(eval(conn, &EVENT, &typing_cmd(t)).await?)
}

// ---------------------------------------------------------------------------
// Presence
// ---------------------------------------------------------------------------

/// A node-level presence transition: the node's first connection of `user`
/// in `room` (join) or its last (leave).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Presence<'a> {
    pub(crate) room: &'a str,
    pub(crate) node: &'a str,
    pub(crate) user: &'a str,
    /// The connection that caused it, if any.
    pub(crate) member: Option<Member>,
    pub(crate) timestamp_ms: u64,
    pub(crate) maxlen: u64,
}

/// The result of a presence transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PresenceChange {
    /// Distinct users present cluster-wide after it.
    pub(crate) count: u64,
    /// A presence event was written (the user's first join or last leave
    /// cluster-wide).
    pub(crate) event: bool,
}

pub(crate) fn presence_cmd(p: &Presence<'_>, join: bool) -> Cmd {
    let mut c = evalsha(
        &PRESENCE,
        &[
            &meta_key(p.room),
            &stream_key(p.room),
            &dedup_key(p.room),
            &presence_nodes_key(p.room),
            &presence_users_key(p.room),
            &node_rooms_key(p.node),
        ],
    );
    c.arg(if join { "1" } else { "0" })
        .arg(p.node)
        .arg(p.user)
        .arg(p.room)
        .arg(p.timestamp_ms)
        .arg(p.maxlen)
        .arg(p.member.map(Member::encode).unwrap_or_default());
    c
}

pub(crate) fn parse_presence(v: Value) -> Result<PresenceChange> {
    let [n, e] = tuple(v, "presence")?;
    match (u64_of(&n), u64_of(&e)) {
        (Some(count), Some(event)) => Ok(PresenceChange {
            count,
            event: event == 1,
        }),
        _ => Err(RedisError::Protocol(format!("presence: [{n:?}, {e:?}]"))),
    }
}

/// The node's first connection of `user` in `room`.
pub(crate) async fn presence_join<C: ConnectionLike>(conn: &mut C, p: &Presence<'_>) -> Result<PresenceChange> {
    parse_presence(eval(conn, &PRESENCE, &presence_cmd(p, true)).await?)
}

/// The node's last connection of `user` in `room` went away.
pub(crate) async fn presence_leave<C: ConnectionLike>(conn: &mut C, p: &Presence<'_>) -> Result<PresenceChange> {
    parse_presence(eval(conn, &PRESENCE, &presence_cmd(p, false)).await?)
}

/// Up to `max` present users (random ones when there are more) and the
/// exact count, without fetching the whole hash.
pub(crate) async fn presence_snapshot<C: ConnectionLike>(
    conn: &mut C,
    room: &str,
    max: u64,
) -> Result<(Vec<String>, u64)> {
    let key = presence_users_key(room);
    let mut pipe = redis::pipe();
    pipe.cmd("HLEN").arg(&key);
    if max > 0 {
        pipe.cmd("HRANDFIELD").arg(&key).arg(max);
    }
    let replies: Vec<Value> = pipe.query_async(conn).await?;
    let mut it = replies.into_iter();
    let count = it
        .next()
        .ok_or_else(|| RedisError::Protocol("presence snapshot: no reply".into()))?;
    let count = u64_of(&count).ok_or_else(|| protocol("HLEN", &count))?;
    let users = match it.next() {
        None | Some(Value::Nil) => Vec::new(),
        Some(v) => expect_array(v, "HRANDFIELD")?
            .into_iter()
            .filter_map(into_string)
            .collect(),
    };
    Ok((users, count))
}

// ---------------------------------------------------------------------------
// Nodes: liveness and reaping
// ---------------------------------------------------------------------------

/// Marks `node` alive for `ttl_ms` and registers it in [`NODES_KEY`].
pub(crate) async fn heartbeat<C: ConnectionLike>(conn: &mut C, node: &str, ttl_ms: u64) -> Result<()> {
    let mut pipe = redis::pipe();
    pipe.cmd("SET")
        .arg(node_alive_key(node))
        .arg("1")
        .arg("PX")
        .arg(ttl_ms.max(1))
        .cmd("SADD")
        .arg(NODES_KEY)
        .arg(node);
    pipe.exec_async(conn).await?;
    Ok(())
}

/// How a reap call ended.
enum Reaped {
    Done,
    Alive,
}

/// Runs the reap script until the node is forgotten (or found alive, when
/// `only_if_dead`); returns the `pn` fields removed.
async fn reap_node<C: ConnectionLike>(
    conn: &mut C,
    node: &str,
    timestamp_ms: u64,
    maxlen: u64,
    only_if_dead: bool,
) -> Result<(u64, Reaped)> {
    let mut c = evalsha(&REAP, &[&node_rooms_key(node), NODES_KEY, &node_alive_key(node)]);
    c.arg(node)
        .arg(timestamp_ms)
        .arg(maxlen)
        .arg(if only_if_dead { "1" } else { "0" })
        .arg(REAP_BUDGET);
    let mut removed = 0;
    for _ in 0..REAP_CALLS_MAX {
        let [n, state] = tuple(eval(conn, &REAP, &c).await?, "reap")?;
        let Some(n) = u64_of(&n) else {
            return Err(protocol("reap count", &n));
        };
        removed += n;
        match state {
            Value::Int(1) => return Ok((removed, Reaped::Done)),
            Value::Int(-1) => return Ok((removed, Reaped::Alive)),
            Value::Int(0) => {}
            other => return Err(protocol("reap state", &other)),
        }
    }
    Err(RedisError::Protocol(format!(
        "reap of {node}: not done after {REAP_CALLS_MAX} calls"
    )))
}

/// Removes `node`'s presence from every room (leave events for users no
/// other node holds), then forgets the node (also its alive key).
/// Idempotent; any node may run it. Returns the `pn` fields removed.
pub(crate) async fn reap<C: ConnectionLike>(conn: &mut C, node: &str, timestamp_ms: u64, maxlen: u64) -> Result<u64> {
    Ok(reap_node(conn, node, timestamp_ms, maxlen, false).await?.0)
}

/// Reaps every registered node whose alive key has expired (each one is
/// checked again inside the script, so a node that just came back is
/// left alone). Returns the reaped node ids.
pub(crate) async fn reap_dead<C: ConnectionLike>(conn: &mut C, timestamp_ms: u64, maxlen: u64) -> Result<Vec<String>> {
    let nodes: Value = redis::cmd("SMEMBERS").arg(NODES_KEY).query_async(conn).await?;
    let nodes: Vec<String> = expect_array(nodes, "SMEMBERS")?
        .into_iter()
        .filter_map(into_string)
        .collect();
    if nodes.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for n in &nodes {
        pipe.cmd("EXISTS").arg(node_alive_key(n));
    }
    let alive: Vec<Value> = pipe.query_async(conn).await?;
    let mut reaped = Vec::new();
    for (node, alive) in nodes.into_iter().zip(alive) {
        if matches!(alive, Value::Int(0))
            && let (_, Reaped::Done) = reap_node(conn, &node, timestamp_ms, maxlen, true).await?
        {
            reaped.push(node);
        }
    }
    Ok(reaped)
}

// ---------------------------------------------------------------------------
// History reads
// ---------------------------------------------------------------------------

/// A read of messages by offset from a room stream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RangeQuery<'a> {
    pub(crate) room: &'a str,
    /// Nothing is returned unless this is the room's current epoch.
    pub(crate) epoch: u64,
    /// Offsets strictly greater than this.
    pub(crate) after: u64,
    /// Offsets strictly less than this; 0 = no bound.
    pub(crate) before: u64,
    /// At most this many (and at most [`RANGE_LIMIT_MAX`]).
    pub(crate) limit: u64,
    /// The newest `limit` of the range rather than the oldest.
    pub(crate) newest: bool,
}

/// Messages of a room stream, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RangePage {
    /// The room's current epoch (0 if the room has none).
    pub(crate) epoch: u64,
    pub(crate) last_offset: u64,
    pub(crate) messages: Vec<StreamMessage>,
    /// The stream holds every message from this offset on (older ones are
    /// only in storage).
    pub(crate) covered_from: u64,
    /// The stream holds more messages of the range, past the returned ones
    /// in the direction read (older for `newest`, newer otherwise).
    pub(crate) more: bool,
    /// Unreadable entries left out.
    pub(crate) skipped: usize,
}

pub(crate) fn range_cmd(q: &RangeQuery<'_>) -> Cmd {
    let mut c = evalsha(&RANGE, &[&meta_key(q.room), &stream_key(q.room), &dedup_key(q.room)]);
    c.arg(q.epoch)
        .arg(q.after)
        .arg(q.before)
        .arg(q.limit.min(RANGE_LIMIT_MAX))
        .arg(if q.newest { "1" } else { "0" });
    c
}

pub(crate) fn parse_range(v: Value) -> Result<RangePage> {
    let [e, o, cov, more, entries] = tuple(v, "read_range")?;
    let epoch = match bytes_of(&e) {
        Some(b"") => Some(0),
        _ => u64_of(&e),
    };
    let (Some(epoch), Some(last_offset), Some(covered_from), Some(more)) =
        (epoch, u64_of(&o), u64_of(&cov), u64_of(&more))
    else {
        return Err(RedisError::Protocol(format!(
            "read_range: [{e:?}, {o:?}, {cov:?}, {more:?}, ..]"
        )));
    };
    let (entries, _, mut skipped) = parse_entries(expect_array(entries, "read_range entries")?);
    let mut messages = Vec::with_capacity(entries.len());
    for e in entries {
        match e.kind {
            EntryKind::Message(m) => messages.push(m),
            _ => skipped += 1,
        }
    }
    Ok(RangePage {
        epoch,
        last_offset,
        messages,
        covered_from,
        more: more == 1,
        skipped,
    })
}

/// Reads messages by offset (one script, one round trip: an XRANGE with
/// COUNT, then exact-ID lookups if non-message entries crowded it out).
/// Restores a missing meta from the stream, never creates an epoch.
pub(crate) async fn read_range<C: ConnectionLike>(conn: &mut C, q: &RangeQuery<'_>) -> Result<RangePage> {
    parse_range(eval(conn, &RANGE, &range_cmd(q)).await?)
}

// ---------------------------------------------------------------------------
// Blocking reads
// ---------------------------------------------------------------------------

/// A connection for blocking reads: no response timeout (the default
/// 500 ms would fail any longer `XREAD BLOCK`), and not shared with other
/// commands, which a blocked read would stall.
pub(crate) async fn blocking_connection(client: &redis::Client) -> Result<MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    Ok(client.get_multiplexed_async_connection_with_config(&config).await?)
}

/// `CLIENT ID` of the connection (for [`unblock`]).
pub(crate) async fn client_id<C: ConnectionLike>(conn: &mut C) -> Result<u64> {
    let v: Value = redis::cmd("CLIENT").arg("ID").query_async(conn).await?;
    u64_of(&v).ok_or_else(|| protocol("CLIENT ID", &v))
}

/// Wakes the connection `client_id` from a blocking read (which then
/// returns nothing). False if it was not blocked.
pub(crate) async fn unblock<C: ConnectionLike>(conn: &mut C, client_id: u64) -> Result<bool> {
    let v: Value = redis::cmd("CLIENT")
        .arg("UNBLOCK")
        .arg(client_id)
        .arg("TIMEOUT")
        .query_async(conn)
        .await?;
    match v {
        Value::Int(n) => Ok(n == 1),
        v => Err(protocol("CLIENT UNBLOCK", &v)),
    }
}

/// What [`xread`] read from one room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoomEntries {
    pub(crate) room: String,
    pub(crate) entries: Vec<StreamEntry>,
    /// The last ID read, skipped entries included: read after it next.
    pub(crate) last_id: StreamId,
    /// Unreadable entries left out.
    pub(crate) skipped: usize,
}

/// `XREAD COUNT count [BLOCK ms] STREAMS <room streams> <ids>`: entries
/// strictly after each room's ID. `block_ms` `None` does not block;
/// `Some(0)` blocks until an entry arrives or [`unblock`]. Use a
/// [`blocking_connection`] when blocking.
pub(crate) async fn xread<C: ConnectionLike, S: AsRef<str>>(
    conn: &mut C,
    streams: &[(S, StreamId)],
    count: usize,
    block_ms: Option<u64>,
) -> Result<Vec<RoomEntries>> {
    if streams.is_empty() {
        return Ok(Vec::new());
    }
    let mut c = redis::cmd("XREAD");
    c.arg("COUNT").arg(count.max(1));
    if let Some(ms) = block_ms {
        c.arg("BLOCK").arg(ms);
    }
    c.arg("STREAMS");
    for (room, _) in streams {
        c.arg(stream_key(room.as_ref()));
    }
    for (_, id) in streams {
        c.arg(format_id(*id));
    }
    let reply: Value = c.query_async(conn).await?;
    parse_xread(reply)
}

/// The `[[key, entries]...]` (or RESP3 map) reply of XREAD; `Nil` when the
/// block timed out or was unblocked.
fn stream_pairs(v: Value, what: &str) -> Result<Vec<(Value, Value)>> {
    match v {
        Value::Nil => Ok(Vec::new()),
        Value::Map(m) => Ok(m),
        Value::Array(items) => items
            .into_iter()
            .map(|item| {
                let [k, e] = tuple(item, what)?;
                Ok((k, e))
            })
            .collect(),
        v => Err(protocol(what, &v)),
    }
}

fn parse_xread(v: Value) -> Result<Vec<RoomEntries>> {
    let mut out = Vec::new();
    for (key, entries) in stream_pairs(v, "XREAD")? {
        let room = bytes_of(&key)
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(room_of_stream_key)
            .map(str::to_owned)
            .ok_or_else(|| protocol("XREAD key", &key))?;
        let (entries, last, skipped) = parse_entries(expect_array(entries, "XREAD entries")?);
        if skipped > 0 {
            tracing::warn!(room, skipped, "unreadable room stream entries skipped");
        }
        if let Some(last_id) = last {
            out.push(RoomEntries {
                room,
                entries,
                last_id,
                skipped,
            });
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// The storage consumer group
// ---------------------------------------------------------------------------

/// A durable message waiting in [`PERSIST_STREAM`] for storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PersistEntry {
    pub(crate) room: String,
    pub(crate) epoch: u64,
    pub(crate) offset: u64,
    pub(crate) publisher: String,
    pub(crate) timestamp_ms: u64,
    pub(crate) payload: Bytes,
    pub(crate) content_type: Option<String>,
}

/// Entries read or claimed from [`PERSIST_STREAM`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PersistBatch {
    pub(crate) entries: Vec<(StreamId, PersistEntry)>,
    /// Pending IDs whose entry is gone or unreadable: acknowledge them
    /// ([`ack_persist`]) so they stop coming back.
    pub(crate) dropped: Vec<StreamId>,
}

fn parse_persist_entry(fields: Value) -> Option<PersistEntry> {
    let mut f = Fields::parse(fields)?;
    Some(PersistEntry {
        room: f.string("r")?,
        epoch: f.u64("e")?,
        offset: f.u64("o")?,
        publisher: f.string("u")?,
        timestamp_ms: f.timestamp()?,
        payload: Bytes::from(f.take("d")?),
        content_type: f.content_type()?,
    })
}

fn parse_persist_entries(v: Value, batch: &mut PersistBatch) -> Result<()> {
    for item in expect_array(v, "persist entries")? {
        let [id, fields] = tuple(item, "persist entry")?;
        let Some(id) = id_of(&id) else {
            return Err(protocol("persist entry id", &id));
        };
        let deleted = matches!(fields, Value::Nil);
        match parse_persist_entry(fields) {
            Some(e) => batch.entries.push((id, e)),
            None => {
                if !deleted {
                    tracing::warn!(id = %format_id(id), "unreadable persist entry");
                }
                batch.dropped.push(id);
            }
        }
    }
    Ok(())
}

/// Creates the [`PERSIST_GROUP`] group (and the stream); already existing
/// is fine.
pub(crate) async fn ensure_group<C: ConnectionLike>(conn: &mut C) -> Result<()> {
    let r: redis::RedisResult<Value> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(PERSIST_STREAM)
        .arg(PERSIST_GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Reads for `consumer`: new entries (`pending` false; `block_ms` as in
/// [`xread`]) or the consumer's own pending ones (`pending` true, never
/// blocks).
pub(crate) async fn read_persist<C: ConnectionLike>(
    conn: &mut C,
    consumer: &str,
    count: usize,
    block_ms: Option<u64>,
    pending: bool,
) -> Result<PersistBatch> {
    let mut c = redis::cmd("XREADGROUP");
    c.arg("GROUP")
        .arg(PERSIST_GROUP)
        .arg(consumer)
        .arg("COUNT")
        .arg(count.max(1));
    if let (Some(ms), false) = (block_ms, pending) {
        c.arg("BLOCK").arg(ms);
    }
    c.arg("STREAMS")
        .arg(PERSIST_STREAM)
        .arg(if pending { "0" } else { ">" });
    let reply: Value = c.query_async(conn).await?;
    let mut batch = PersistBatch::default();
    for (_, entries) in stream_pairs(reply, "XREADGROUP")? {
        parse_persist_entries(entries, &mut batch)?;
    }
    Ok(batch)
}

/// Acknowledges and deletes entries (XACK + XDEL in one round trip);
/// returns how many were acknowledged.
pub(crate) async fn ack_persist<C: ConnectionLike>(conn: &mut C, ids: &[StreamId]) -> Result<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let ids: Vec<String> = ids.iter().map(|id| format_id(*id)).collect();
    let mut pipe = redis::pipe();
    pipe.cmd("XACK")
        .arg(PERSIST_STREAM)
        .arg(PERSIST_GROUP)
        .arg(&ids)
        .cmd("XDEL")
        .arg(PERSIST_STREAM)
        .arg(&ids);
    let replies: Vec<Value> = pipe.query_async(conn).await?;
    let acked = replies.first().and_then(u64_of);
    acked.ok_or_else(|| RedisError::Protocol(format!("XACK: {replies:?}")))
}

/// Claims for `consumer` up to `count` entries pending (in any consumer)
/// for at least `min_idle_ms` (XAUTOCLAIM, following the cursor a bounded
/// number of times).
pub(crate) async fn claim_persist<C: ConnectionLike>(
    conn: &mut C,
    consumer: &str,
    min_idle_ms: u64,
    count: usize,
) -> Result<PersistBatch> {
    let mut batch = PersistBatch::default();
    let mut cursor = String::from("0-0");
    for _ in 0..CLAIM_CALLS_MAX {
        let got = batch.entries.len() + batch.dropped.len();
        if got >= count {
            break;
        }
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(PERSIST_STREAM)
            .arg(PERSIST_GROUP)
            .arg(consumer)
            .arg(min_idle_ms)
            .arg(&cursor)
            .arg("COUNT")
            .arg(count - got)
            .query_async(conn)
            .await?;
        let mut parts = expect_array(reply, "XAUTOCLAIM")?.into_iter();
        let (Some(next), Some(entries)) = (parts.next(), parts.next()) else {
            return Err(RedisError::Protocol("XAUTOCLAIM: fewer than 2 elements".into()));
        };
        // (A third element lists IDs whose entries were deleted; Redis 7
        // has already removed them from the pending list.)
        parse_persist_entries(entries, &mut batch)?;
        let Some(next) = id_of(&next) else {
            return Err(protocol("XAUTOCLAIM cursor", &next));
        };
        if next == (0, 0) {
            break;
        }
        cursor = format_id(next);
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use redis::aio::MultiplexedConnection;

    use super::*;
    use crate::cluster::test_redis::RedisServer;

    fn msg<'a>(room: &'a str, publisher: &'a str, payload: &'a [u8]) -> Publish<'a> {
        Publish {
            room,
            publisher,
            payload,
            content_type: None,
            idempotency_key: None,
            timestamp_ms: 1_700_000_000_000,
            maxlen: 0,
            dedup_limit: 100,
            persist: false,
        }
    }

    fn volatile<'a>(room: &'a str, payload: &'a [u8]) -> Volatile<'a> {
        Volatile {
            room,
            publisher: "vp",
            payload,
            content_type: Some("text/plain"),
            timestamp_ms: 5,
            node: "node-a",
            member: Member { shard: 3, conn: 42 },
            maxlen: 0,
        }
    }

    fn presence<'a>(room: &'a str, node: &'a str, user: &'a str) -> Presence<'a> {
        Presence {
            room,
            node,
            user,
            member: Some(Member { shard: 1, conn: 7 }),
            timestamp_ms: 9,
            maxlen: 0,
        }
    }

    async fn cmd_value(conn: &mut MultiplexedConnection, args: &[&str]) -> Value {
        let mut c = redis::cmd(args[0]);
        for a in &args[1..] {
            c.arg(*a);
        }
        c.query_async(conn).await.expect("redis command")
    }

    async fn int(conn: &mut MultiplexedConnection, args: &[&str]) -> i64 {
        match cmd_value(conn, args).await {
            Value::Int(n) => n,
            v => panic!("{args:?}: {v:?}"),
        }
    }

    async fn all_entries(conn: &mut MultiplexedConnection, room: &str) -> Vec<StreamEntry> {
        let got = xread(conn, &[(room, (0, 0))], 10_000, None).await.unwrap();
        assert!(got.iter().all(|r| r.skipped == 0), "{got:?}");
        got.into_iter().flat_map(|r| r.entries).collect()
    }

    fn presence_events(entries: &[StreamEntry]) -> Vec<(String, bool, u64)> {
        entries
            .iter()
            .filter_map(|e| match &e.kind {
                EntryKind::Presence {
                    user, joined, count, ..
                } => Some((user.clone(), *joined, *count)),
                _ => None,
            })
            .collect()
    }

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn fields(kv: &[&str]) -> Value {
        Value::Array(kv.iter().map(|s| bulk(s)).collect())
    }

    // -- without Redis ------------------------------------------------------

    #[test]
    fn room_instance_is_fnv1a_and_stable() {
        // The same pins as placement::shard_of.
        assert_eq!(room_instance("chat:lobby", 4), 1);
        assert_eq!(room_instance("chat:lobby", 7), 4);
        assert_eq!(room_instance("anything", 1), 0);
        assert_eq!(room_instance("anything", 0), 0);
        assert_eq!(
            room_instance("chat:lobby", 7),
            crate::placement::shard_of("chat:lobby", 7)
        );
    }

    #[test]
    fn keys_share_the_room_hash_tag() {
        assert_eq!(meta_key("a:b"), "herald:{a:b}:m");
        assert_eq!(stream_key("a:b"), "herald:{a:b}:s");
        assert_eq!(dedup_key("a:b"), "herald:{a:b}:k");
        assert_eq!(presence_nodes_key("a:b"), "herald:{a:b}:pn");
        assert_eq!(presence_users_key("a:b"), "herald:{a:b}:pu");
        assert_eq!(node_alive_key("n1"), "herald:node:{n1}:alive");
        assert_eq!(node_rooms_key("n1"), "herald:node:{n1}:rooms");
        assert_eq!(room_of_stream_key("herald:{we}ird}:s"), Some("we}ird"));
        assert_eq!(room_of_stream_key("herald:{r}:m"), None);
        assert_eq!(parse_id(b"12-3"), Some((12, 3)));
        assert_eq!(parse_id(b"12"), None);
        assert_eq!(parse_id(b"-1-3"), None);
        assert_eq!(format_id((7, 0)), "7-0");
    }

    #[test]
    fn entries_of_every_kind_parse() {
        let m = parse_entry(
            (5, 0),
            fields(&["t", "m", "e", "77", "u", "al", "d", "hi", "c", "text/plain", "ts", "10"]),
        )
        .unwrap();
        assert_eq!(
            m.kind,
            EntryKind::Message(StreamMessage {
                epoch: 77,
                offset: 5,
                publisher: "al".into(),
                timestamp_ms: 10,
                payload: Bytes::from_static(b"hi"),
                content_type: Some("text/plain".into()),
            })
        );
        let v = parse_entry(
            (5, 1),
            fields(&["t", "v", "e", "77", "u", "al", "d", "", "N", "n1", "M", "2:9"]),
        )
        .unwrap();
        let EntryKind::Volatile {
            origin, content_type, ..
        } = v.kind
        else {
            panic!("{v:?}")
        };
        assert_eq!(content_type, None);
        assert_eq!(
            origin,
            Some(Origin {
                node: "n1".into(),
                shard: 2,
                conn: 9
            })
        );
        let p = parse_entry((5, 2), fields(&["t", "p", "e", "77", "u", "bo", "a", "0", "n", "3"])).unwrap();
        assert!(matches!(
            p.kind,
            EntryKind::Presence {
                joined: false,
                count: 3,
                origin: None,
                ..
            }
        ));
        let y = parse_entry(
            (5, 3),
            fields(&["t", "y", "e", "77", "u", "bo", "a", "1", "N", "n1", "M", "x"]),
        )
        .unwrap();
        // A malformed member drops the origin, not the entry.
        assert!(matches!(
            y.kind,
            EntryKind::Typing {
                active: true,
                origin: None,
                ..
            }
        ));
        for bad in [
            fields(&["t", "z", "e", "1", "u", "a", "d", "x"]),
            fields(&["t", "m", "u", "a", "d", "x"]),
            fields(&["t", "m", "e", "x1", "u", "a", "d", "x"]),
            fields(&["t", "m", "e", "1", "u", "a"]),
            fields(&["t", "p", "e", "1", "u", "a", "a", "2", "n", "1"]),
            fields(&["t", "m", "e", "1", "u", "a", "d", "x", "ts", "soon"]),
            fields(&["t", "m", "e"]),
            Value::Nil,
            Value::Int(3),
            Value::Array(vec![Value::Nil, Value::Nil]),
        ] {
            assert_eq!(parse_entry((1, 0), bad.clone()), None, "{bad:?}");
        }
    }

    #[test]
    fn replies_of_any_shape_never_panic() {
        let shapes = vec![
            Value::Nil,
            Value::Okay,
            Value::Int(-1),
            bulk("x"),
            Value::Array(vec![]),
            Value::Array(vec![Value::Nil; 5]),
            Value::Array(vec![bulk("1"), Value::Int(-4), bulk("1-x"), Value::Nil, Value::Int(2)]),
            Value::Array(vec![Value::Array(vec![bulk("k"), Value::Nil])]),
            Value::Array(vec![Value::Array(vec![
                bulk("herald:{r}:s"),
                Value::Array(vec![Value::Nil]),
            ])]),
            Value::Map(vec![(Value::Nil, Value::Nil)]),
            Value::Double(1.5),
        ];
        for v in shapes {
            let _ = parse_published(v.clone());
            let _ = parse_head(v.clone());
            let _ = parse_presence(v.clone());
            let _ = parse_range(v.clone());
            let _ = parse_entry_id(v.clone());
            let _ = parse_xread(v.clone());
            if let Value::Array(a) = v.clone() {
                let _ = parse_entries(a);
            }
            let _ = parse_persist_entries(v.clone(), &mut PersistBatch::default());
            let _ = Fields::parse(v);
        }
        assert!(matches!(
            parse_published(Value::Array(vec![bulk("1"), Value::Int(-4), Value::Int(0)])),
            Err(RedisError::Protocol(_))
        ));
        // XREAD: an unreadable entry is skipped, its ID still advances.
        let got = parse_xread(Value::Array(vec![Value::Array(vec![
            bulk("herald:{r}:s"),
            Value::Array(vec![
                Value::Array(vec![bulk("4-1"), fields(&["t", "q"])]),
                Value::Array(vec![bulk("nonsense"), fields(&["t", "q"])]),
            ]),
        ])]))
        .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].last_id, got[0].skipped, got[0].entries.len()), ((4, 1), 2, 0));
    }

    // -- against redis-server -----------------------------------------------

    #[tokio::test]
    async fn every_room_entry_leaves_a_notice_in_the_partition_rust_computes() {
        let server = RedisServer::start();
        let mut conn = server.conn().await;
        let rooms: Vec<String> = (0..40).map(|i| format!("chat:room-{i}/x@y.z_{i}")).collect();
        let mut heads = notice_heads(&mut conn, &(0..NOTICE_PARTITIONS).collect::<Vec<_>>())
            .await
            .unwrap();
        assert!(heads.iter().all(|h| *h == (0, 0)), "empty partitions start at 0-0");
        for room in &rooms {
            publish(&mut conn, &msg(room, "ann", b"x")).await.unwrap();
        }
        // A typing event (another script) notifies too.
        add_typing(
            &mut conn,
            &Typing {
                room: &rooms[0],
                user: "ann",
                active: true,
                timestamp_ms: 1,
                node: "n1",
                member: Member { shard: 0, conn: 1 },
                maxlen: 100,
            },
        )
        .await
        .unwrap();
        let parts: Vec<(u32, StreamId)> = (0..NOTICE_PARTITIONS).map(|p| (p, (0, 0))).collect();
        let notices = xread_notices(&mut conn, &parts, 1000, None).await.unwrap();
        let mut seen = 0;
        for n in &notices {
            assert!(!n.full);
            for room in &n.rooms {
                assert_eq!(notice_partition(room), n.partition, "{room}");
                seen += 1;
            }
        }
        assert_eq!(seen, rooms.len(), "one notice per room (repeats folded)");
        // Reading after the heads finds nothing new.
        heads = notice_heads(&mut conn, &(0..NOTICE_PARTITIONS).collect::<Vec<_>>())
            .await
            .unwrap();
        let after: Vec<(u32, StreamId)> = (0..NOTICE_PARTITIONS).zip(heads).collect();
        assert!(xread_notices(&mut conn, &after, 10, None).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn offsets_are_dense_and_ordered_across_two_connections() {
        let server = RedisServer::start();
        let run = |mut conn: MultiplexedConnection, who: &'static str| async move {
            let mut offsets = Vec::new();
            for round in 0..10 {
                let payloads: Vec<String> = (0..20).map(|i| format!("{who}-{}", round * 20 + i)).collect();
                let mut pipe = redis::pipe();
                for p in &payloads {
                    pipe.add_command(publish_cmd(&msg("race", who, p.as_bytes())));
                }
                for r in query_pipeline(&mut conn, &mut pipe).await.unwrap() {
                    let published = parse_published(r).unwrap();
                    assert!(!published.duplicate);
                    offsets.push(published.offset);
                }
            }
            offsets
        };
        let (a, b) = tokio::join!(run(server.conn().await, "a"), run(server.conn().await, "b"));
        assert!(a.windows(2).all(|w| w[0] < w[1]), "{a:?}");
        assert!(b.windows(2).all(|w| w[0] < w[1]), "{b:?}");
        let mut all: Vec<u64> = a.iter().chain(&b).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (1..=400).collect::<Vec<u64>>());

        let mut conn = server.conn().await;
        let head = follow(&mut conn, "race").await.unwrap();
        assert_eq!((head.last_offset, head.stream_last_id), (400, (400, 0)));
        let page = read_range(
            &mut conn,
            &RangeQuery {
                room: "race",
                epoch: head.epoch,
                after: 0,
                before: 0,
                limit: 1000,
                newest: false,
            },
        )
        .await
        .unwrap();
        assert_eq!(page.messages.len(), 400);
        for m in &page.messages {
            // Each message is where its publisher was told it is.
            let (who, n) = std::str::from_utf8(&m.payload).unwrap().split_once('-').unwrap();
            let n: usize = n.parse().unwrap();
            let mine = if who == "a" { &a } else { &b };
            assert_eq!(mine[n], m.offset);
            assert_eq!(m.publisher, who);
        }
    }

    #[tokio::test]
    async fn idempotency_key_returns_the_first_position_and_writes_nothing() {
        let server = RedisServer::start();
        let mut conn = server.conn().await;
        let keyed = |payload: &'static [u8], publisher: &'static str| Publish {
            idempotency_key: Some("k1"),
            persist: true,
            ..msg("idem", publisher, payload)
        };
        let first = publish(&mut conn, &keyed(b"one", "al")).await.unwrap();
        assert_eq!((first.offset, first.duplicate), (1, false));
        assert_eq!(publish(&mut conn, &msg("idem", "al", b"two")).await.unwrap().offset, 2);
        let again = publish(&mut conn, &keyed(b"different", "al")).await.unwrap();
        assert_eq!(
            again,
            Published {
                duplicate: true,
                ..first
            }
        );
        assert_eq!(int(&mut conn, &["XLEN", "herald:{idem}:s"]).await, 2);
        assert_eq!(int(&mut conn, &["XLEN", PERSIST_STREAM]).await, 1);
        // Keys are per publisher.
        let other = publish(&mut conn, &keyed(b"one", "bo")).await.unwrap();
        assert_eq!((other.offset, other.duplicate), (3, false));
    }

    #[tokio::test]
    async fn the_dedup_set_keeps_the_newest_keys_only() {
        let server = RedisServer::start();
        let mut conn = server.conn().await;
        let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
        for k in &keys {
            let p = Publish {
                idempotency_key: Some(k),
                dedup_limit: 5,
                ..msg("dd", "al", b"x")
            };
            publish(&mut conn, &p).await.unwrap();
        }
        assert_eq!(int(&mut conn, &["ZCARD", "herald:{dd}:k"]).await, 5);
        let with = |k: &'static str| Publish {
            idempotency_key: Some(k),
            dedup_limit: 5,
            ..msg("dd", "al", b"x")
        };
        let newest = publish(&mut conn, &with("k19")).await.unwrap();
        assert_eq!((newest.offset, newest.duplicate), (20, true));
        let forgotten = publish(&mut conn, &with("k0")).await.unwrap();
        assert_eq!((forgotten.offset, forgotten.duplicate), (21, false));
        assert_eq!(int(&mut conn, &["ZCARD", "herald:{dd}:k"]).await, 5);
    }

    #[tokio::test]
    async fn maxlen_trims_and_read_range_reports_what_the_stream_covers() {
        let server = RedisServer::start();
        let mut conn = server.conn().await;
        // Small stream nodes, so `MAXLEN ~ 20` trims at a small scale.
        cmd_value(&mut conn, &["CONFIG", "SET", "stream-node-max-entries", "8"]).await;
        let mut epoch = 0;
        for o in 1..=100u64 {
            let payload = format!("m{o}");
            let p = publish(
                &mut conn,
                &Publish {
                    maxlen: 20,
                    ..msg("trim", "al", payload.as_bytes())
                },
            )
            .await
            .unwrap();
            assert_eq!(p.offset, o);
            epoch = p.epoch;
            add_volatile(
                &mut conn,
                &Volatile {
                    maxlen: 20,
                    ..volatile("trim", b"v")
                },
            )
            .await
            .unwrap();
        }
        let len = int(&mut conn, &["XLEN", "herald:{trim}:s"]).await;
        assert!((20..=40).contains(&len), "{len}");
        let first = xread(&mut conn, &[("trim", (0, 0))], 1, None).await.unwrap();
        let first = &first[0].entries[0];
        let expect_covered = match first.kind {
            EntryKind::Message(_) => first.id.0,
            _ => first.id.0 + 1,
        };
        assert!(expect_covered > 50, "{first:?}");
        let q = RangeQuery {
            room: "trim",
            epoch,
            after: 0,
            before: 0,
            limit: 5,
            newest: false,
        };
        let offsets = |page: &RangePage| page.messages.iter().map(|m| m.offset).collect::<Vec<_>>();

        let oldest = read_range(&mut conn, &q).await.unwrap();
        assert_eq!((oldest.epoch, oldest.last_offset), (epoch, 100));
        assert_eq!(oldest.covered_from, expect_covered);
        assert_eq!(
            offsets(&oldest),
            (expect_covered..expect_covered + 5).collect::<Vec<_>>()
        );
        assert!(oldest.more);
        for m in &oldest.messages {
            assert_eq!(m.payload, Bytes::from(format!("m{}", m.offset)));
            assert_eq!(
                (m.epoch, m.timestamp_ms, m.content_type.as_deref()),
                (epoch, 1_700_000_000_000, None)
            );
        }

        let newest = read_range(&mut conn, &RangeQuery { newest: true, ..q }).await.unwrap();
        assert_eq!(offsets(&newest), vec![96, 97, 98, 99, 100]);
        assert!(newest.more);

        let window = RangeQuery {
            after: 90,
            before: 95,
            limit: 100,
            ..q
        };
        let page = read_range(&mut conn, &window).await.unwrap();
        assert_eq!(offsets(&page), vec![91, 92, 93, 94]);
        assert!(!page.more);
        let page = read_range(&mut conn, &RangeQuery { newest: true, ..window })
            .await
            .unwrap();
        assert_eq!(offsets(&page), vec![91, 92, 93, 94]);

        let page = read_range(&mut conn, &RangeQuery { after: 98, ..q }).await.unwrap();
        assert_eq!((offsets(&page), page.more), (vec![99, 100], false));
        let page = read_range(&mut conn, &RangeQuery { after: 100, ..q }).await.unwrap();
        assert_eq!((offsets(&page), page.more), (vec![], false));

        // Another epoch: nothing, but the current epoch is reported.
        let page = read_range(&mut conn, &RangeQuery { epoch: epoch + 1, ..q })
            .await
            .unwrap();
        assert_eq!((page.epoch, page.messages.len()), (epoch, 0));
        // An unknown room.
        let page = read_range(&mut conn, &RangeQuery { room: "nope", ..q }).await.unwrap();
        assert_eq!((page.epoch, page.last_offset, page.covered_from), (0, 0, 1));
    }

    #[tokio::test]
    async fn read_range_finds_messages_past_a_crowd_of_other_entries() {
        let server = RedisServer::start();
        let mut conn = server.conn().await;
        let epoch = publish(&mut conn, &msg("crowd", "al", b"1")).await.unwrap().epoch;
        for _ in 0..100 {
            add_volatile(&mut conn, &volatile("crowd", b"v")).await.unwrap();
        }
        for p in [b"2", b"3"] {
            publish(&mut conn, &msg("crowd", "al", p)).await.unwrap();
        }
        let typing = Typing {
            room: "crowd",
            user: "bo",
            active: true,
            timestamp_ms: 1,
            node: "n",
            member: Member { shard: 0, conn: 1 },
            maxlen: 0,
        };
        add_typing(&mut conn, &typing).await.unwrap();
        let q = RangeQuery {
            room: "crowd",
            epoch,
            after: 0,
            before: 0,
            limit: 3,
            newest: false,
        };
        let page = read_range(&mut conn, &q).await.unwrap();
        let got: Vec<_> = page.messages.iter().map(|m| (m.offset, m.payload.clone())).collect();
        assert_eq!(
            got,
            vec![(1, Bytes::from("1")), (2, Bytes::from("2")), (3, Bytes::from("3"))]
        );
        assert_eq!((page.covered_from, page.more, page.skipped), (1, false, 0));
        let page = read_range(&mut conn, &RangeQuery { limit: 2, ..q }).await.unwrap();
        assert_eq!(page.messages.len(), 2);
        assert!(page.more);
    }

    #[tokio::test]
    async fn follow_creates_the_epoch_once() {
        let server = RedisServer::start();
        let mut conn = server.conn().await;
        let head = follow(&mut conn, "f").await.unwrap();
        assert!(head.epoch > 1_600_000_000_000_000, "{head:?}");
        assert_eq!(
            (head.last_offset, head.stream_last_id, head.presence_count),
            (0, (0, 0), 0)
        );
        assert!(head.presence_sample.is_empty());
        // Joins to random names do not leak keys: the meta expires.
        let ttl = int(&mut conn, &["TTL", "herald:{f}:m"]).await;
        assert!((86_000..=86_400).contains(&ttl), "{ttl}");
        assert_eq!(follow(&mut conn, "f").await.unwrap(), head);
        // Entries before the first message: `0-*`, and the stream expires too.
        assert_eq!(add_volatile(&mut conn, &volatile("f", b"v")).await.unwrap(), (0, 1));
        let ttl = int(&mut conn, &["TTL", "herald:{f}:s"]).await;
        assert!((86_000..=86_400).contains(&ttl), "{ttl}");

        let p = publish(&mut conn, &msg("f", "al", b"x")).await.unwrap();
        assert_eq!((p.epoch, p.offset), (head.epoch, 1));
        assert_eq!(int(&mut conn, &["TTL", "herald:{f}:m"]).await, -1);
        assert_eq!(int(&mut conn, &["TTL", "herald:{f}:s"]).await, -1);
        let id = add_volatile(&mut conn, &volatile("f", b"v")).await.unwrap();
        assert_eq!(id, (1, 1));
        let head = follow(&mut conn, "f").await.unwrap();
        assert_eq!((head.last_offset, head.stream_last_id), (1, (1, 1)));
    }

    #[tokio::test]
    async fn a_lost_meta_is_restored_from_the_stream_with_the_same_epoch() {
        let server = RedisServer::start();
        let mut conn = server.conn().await;
        let mut epoch = 0;
        for _ in 0..3 {
            epoch = publish(&mut conn, &msg("lost", "al", b"x")).await.unwrap().epoch;
        }
        add_volatile(&mut conn, &volatile("lost", b"v")).await.unwrap();
        cmd_value(&mut conn, &["DEL", "herald:{lost}:m"]).await;
        let head = follow(&mut conn, "lost").await.unwrap();
        assert_eq!((head.epoch, head.last_offset, head.stream_last_id), (epoch, 3, (3, 1)));
        assert_eq!(int(&mut conn, &["TTL", "herald:{lost}:m"]).await, -1);
        let p = publish(&mut conn, &msg("lost", "al", b"x")).await.unwrap();
        assert_eq!((p.epoch, p.offset), (epoch, 4));
        // Publishing restores it too.
        cmd_value(&mut conn, &["DEL", "herald:{lost}:m"]).await;
        let p = publish(&mut conn, &msg("lost", "al", b"x")).await.unwrap();
        assert_eq!((p.epoch, p.offset), (epoch, 5));
        // A lost stream: the meta continues, history starts after it.
        cmd_value(&mut conn, &["DEL", "herald:{lost}:s"]).await;
        let head = follow(&mut conn, "lost").await.unwrap();
        assert_eq!((head.epoch, head.last_offset, head.stream_last_id), (epoch, 5, (5, 0)));
        let p = publish(&mut conn, &msg("lost", "al", b"x")).await.unwrap();
        assert_eq!((p.epoch, p.offset), (epoch, 6));
        let q = RangeQuery {
            room: "lost",
            epoch,
            after: 0,
            before: 0,
            limit: 10,
            newest: false,
        };
        let page = read_range(&mut conn, &q).await.unwrap();
        assert_eq!((page.covered_from, page.messages.len()), (6, 1));
        // A meta behind its stream (never written so by the scripts):
        // publishing continues after the stream's top.
        cmd_value(&mut conn, &["HSET", "herald:{lost}:m", "o", "2"]).await;
        let p = publish(&mut conn, &msg("lost", "al", b"x")).await.unwrap();
        assert_eq!((p.epoch, p.offset), (epoch, 7));
        assert_eq!(follow(&mut conn, "lost").await.unwrap().last_offset, 7);
    }

    #[tokio::test]
    async fn losing_meta_and_stream_starts_a_new_epoch() {
        let server = RedisServer::start();
        let mut conn = server.conn().await;
        let keyed = Publish {
            idempotency_key: Some("k"),
            ..msg("gone", "al", b"x")
        };
        let old = publish(&mut conn, &keyed).await.unwrap();
        publish(&mut conn, &msg("gone", "al", b"y")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
        cmd_value(&mut conn, &["DEL", "herald:{gone}:m", "herald:{gone}:s"]).await;
        let head = follow(&mut conn, "gone").await.unwrap();
        assert!(head.epoch > old.epoch, "{head:?} {old:?}");
        assert_eq!((head.last_offset, head.stream_last_id), (0, (0, 0)));
        // The old epoch's idempotency keys went with it.
        let p = publish(&mut conn, &keyed).await.unwrap();
        assert_eq!((p.epoch, p.offset, p.duplicate), (head.epoch, 1, false));
    }

    #[tokio::test]
    async fn xread_maps_keys_to_rooms_and_parses_every_kind() {
        let server = RedisServer::start();
        let mut conn = server.conn().await;
        let h1 = follow(&mut conn, "r1").await.unwrap();
        let h2 = follow(&mut conn, "r2").await.unwrap();
        let p = Publish {
            content_type: Some("application/json"),
            ..msg("r1", "al", b"{}")
        };
        publish(&mut conn, &p).await.unwrap();
        add_volatile(&mut conn, &volatile("r2", b"\x00\xffbin")).await.unwrap();
        presence_join(&mut conn, &presence("r1", "node-b", "bo")).await.unwrap();
        let typing = Typing {
            room: "r2",
            user: "cy",
            active: false,
            timestamp_ms: 12,
            node: "node-c",
            member: Member {
                shard: 4,
                conn: u64::MAX,
            },
            maxlen: 0,
        };
        add_typing(&mut conn, &typing).await.unwrap();
        // An entry these scripts never write.
        cmd_value(&mut conn, &["XADD", "herald:{r2}:s", "0-*", "t", "zz"]).await;

        let streams = [
            ("r1".to_owned(), h1.stream_last_id),
            ("r2".to_owned(), h2.stream_last_id),
        ];
        let mut got = xread(&mut conn, &streams, 100, None).await.unwrap();
        got.sort_by(|a, b| a.room.cmp(&b.room));
        assert_eq!(got.len(), 2);
        let (r1, r2) = (&got[0], &got[1]);
        assert_eq!((r1.room.as_str(), r1.last_id, r1.skipped), ("r1", (1, 1), 0));
        assert_eq!((r2.room.as_str(), r2.last_id, r2.skipped), ("r2", (0, 3), 1));
        let epoch = h1.epoch;
        assert_eq!(
            r1.entries,
            vec![
                StreamEntry {
                    id: (1, 0),
                    kind: EntryKind::Message(StreamMessage {
                        epoch,
                        offset: 1,
                        publisher: "al".into(),
                        timestamp_ms: 1_700_000_000_000,
                        payload: Bytes::from_static(b"{}"),
                        content_type: Some("application/json".into()),
                    }),
                },
                StreamEntry {
                    id: (1, 1),
                    kind: EntryKind::Presence {
                        epoch,
                        user: "bo".into(),
                        joined: true,
                        count: 1,
                        timestamp_ms: 9,
                        origin: Some(Origin {
                            node: "node-b".into(),
                            shard: 1,
                            conn: 7
                        }),
                    },
                },
            ]
        );
        assert_eq!(
            r2.entries,
            vec![
                StreamEntry {
                    id: (0, 1),
                    kind: EntryKind::Volatile {
                        epoch: h2.epoch,
                        publisher: "vp".into(),
                        timestamp_ms: 5,
                        payload: Bytes::from_static(b"\x00\xffbin"),
                        content_type: Some("text/plain".into()),
                        origin: Some(Origin {
                            node: "node-a".into(),
                            shard: 3,
                            conn: 42
                        }),
                    },
                },
                StreamEntry {
                    id: (0, 2),
                    kind: EntryKind::Typing {
                        epoch: h2.epoch,
                        user: "cy".into(),
                        active: false,
                        timestamp_ms: 12,
                        origin: Some(Origin {
                            node: "node-c".into(),
                            shard: 4,
                            conn: u64::MAX
                        }),
                    },
                },
            ]
        );
        // After the last IDs: nothing (and COUNT bounds each stream).
        let next = [("r1", r1.last_id), ("r2", r2.last_id)];
        assert!(xread(&mut conn, &next, 100, None).await.unwrap().is_empty());
        let one = xread(&mut conn, &streams, 1, None).await.unwrap();
        assert!(one.iter().all(|r| r.entries.len() == 1));
    }

    #[tokio::test]
    async fn a_blocked_xread_wakes_on_an_entry_or_on_client_unblock() {
        let server = RedisServer::start();
        let client = server.client();
        let mut reader = blocking_connection(&client).await.unwrap();
        let mut commands = server.conn().await;
        let id = client_id(&mut reader).await.unwrap();
        let head = follow(&mut commands, "blk").await.unwrap();
        let streams = [("blk", head.stream_last_id)];

        // Longer than the default 500 ms response timeout, shorter than the block.
        let started = std::time::Instant::now();
        let (read, _) = tokio::join!(xread(&mut reader, &streams, 10, Some(10_000)), async {
            tokio::time::sleep(Duration::from_millis(700)).await;
            publish(&mut commands, &msg("blk", "al", b"wake")).await.unwrap();
        });
        let read = read.unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].last_id, (1, 0));
        assert!(started.elapsed() < Duration::from_secs(5));

        let started = std::time::Instant::now();
        let streams = [("blk", read[0].last_id)];
        let (read, unblocked) = tokio::join!(xread(&mut reader, &streams, 10, Some(10_000)), async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            unblock(&mut commands, id).await.unwrap()
        });
        assert!(unblocked);
        assert!(read.unwrap().is_empty());
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!unblock(&mut commands, id).await.unwrap());
    }

    #[tokio::test]
    async fn presence_events_come_from_the_cluster_wide_first_join_and_last_leave() {
        let server = RedisServer::start();
        let mut conn = server.conn().await;
        let change = |count, event| PresenceChange { count, event };
        let join = presence_join(&mut conn, &presence("p", "n1", "al")).await.unwrap();
        assert_eq!(join, change(1, true));
        // Again on the same node: no change.
        assert_eq!(
            presence_join(&mut conn, &presence("p", "n1", "al")).await.unwrap(),
            change(1, false)
        );
        assert_eq!(
            presence_join(&mut conn, &presence("p", "n2", "al")).await.unwrap(),
            change(1, false)
        );
        assert_eq!(
            presence_join(&mut conn, &presence("p", "n1", "bo")).await.unwrap(),
            change(2, true)
        );
        assert_eq!(
            presence_leave(&mut conn, &presence("p", "n1", "al")).await.unwrap(),
            change(2, false)
        );
        assert_eq!(
            presence_leave(&mut conn, &presence("p", "n2", "al")).await.unwrap(),
            change(1, true)
        );
        assert_eq!(
            presence_leave(&mut conn, &presence("p", "n2", "al")).await.unwrap(),
            change(1, false)
        );

        assert_eq!(
            presence_snapshot(&mut conn, "p", 10).await.unwrap(),
            (vec!["bo".to_owned()], 1)
        );
        assert_eq!(presence_snapshot(&mut conn, "p", 0).await.unwrap(), (vec![], 1));
        let head = follow(&mut conn, "p").await.unwrap();
        assert_eq!((head.presence_count, head.presence_sample), (1, vec!["bo".to_owned()]));

        let entries = all_entries(&mut conn, "p").await;
        assert_eq!(
            presence_events(&entries),
            vec![("al".into(), true, 1), ("bo".into(), true, 2), ("al".into(), false, 1)]
        );
        // A node's rooms set holds the rooms where it has users.
        assert_eq!(int(&mut conn, &["SISMEMBER", "herald:node:{n1}:rooms", "p"]).await, 1);
        assert_eq!(int(&mut conn, &["EXISTS", "herald:node:{n2}:rooms"]).await, 0);

        for i in 0..150 {
            presence_join(&mut conn, &presence("big", "n1", &format!("u{i}")))
                .await
                .unwrap();
        }
        let (users, count) = presence_snapshot(&mut conn, "big", 20).await.unwrap();
        assert_eq!((users.len(), count), (20, 150));
        let head = follow(&mut conn, "big").await.unwrap();
        assert_eq!(
            (head.presence_sample.len() as u64, head.presence_count),
            (PRESENCE_SAMPLE, 150)
        );
    }

    #[tokio::test]
    async fn reaping_a_dead_node_removes_its_users_with_leave_events() {
        let server = RedisServer::start();
        let mut conn = server.conn().await;
        heartbeat(&mut conn, "n1", 100).await.unwrap();
        heartbeat(&mut conn, "n2", 60_000).await.unwrap();
        for (room, node, user) in [
            ("A", "n1", "al"),
            ("A", "n1", "bo"),
            ("A", "n2", "bo"),
            ("B", "n1", "cy"),
        ] {
            presence_join(&mut conn, &presence(room, node, user)).await.unwrap();
        }
        assert!(reap_dead(&mut conn, 1, 0).await.unwrap().is_empty());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(reap_dead(&mut conn, 1, 0).await.unwrap(), vec!["n1".to_owned()]);

        assert_eq!(
            presence_snapshot(&mut conn, "A", 10).await.unwrap(),
            (vec!["bo".to_owned()], 1)
        );
        assert_eq!(presence_snapshot(&mut conn, "B", 10).await.unwrap().1, 0);
        let a = all_entries(&mut conn, "A").await;
        assert_eq!(
            presence_events(&a),
            vec![("al".into(), true, 1), ("bo".into(), true, 2), ("al".into(), false, 1)]
        );
        let EntryKind::Presence { origin, .. } = &a[a.len() - 1].kind else {
            panic!("{a:?}")
        };
        assert_eq!(*origin, None);
        let b = all_entries(&mut conn, "B").await;
        assert_eq!(
            presence_events(&b),
            vec![("cy".into(), true, 1), ("cy".into(), false, 0)]
        );
        assert_eq!(int(&mut conn, &["EXISTS", "herald:node:{n1}:rooms"]).await, 0);
        assert_eq!(int(&mut conn, &["SISMEMBER", NODES_KEY, "n1"]).await, 0);
        assert_eq!(int(&mut conn, &["HLEN", "herald:{A}:pn"]).await, 2); // n2's bo and its count

        // Idempotent.
        assert!(reap_dead(&mut conn, 1, 0).await.unwrap().is_empty());
        assert_eq!(reap(&mut conn, "n1", 1, 0).await.unwrap(), 0);
        assert_eq!(all_entries(&mut conn, "A").await.len(), a.len());

        // An explicit reap of a live node (its own shutdown).
        assert_eq!(reap(&mut conn, "n2", 1, 0).await.unwrap(), 1);
        assert_eq!(presence_snapshot(&mut conn, "A", 10).await.unwrap().1, 0);
        assert_eq!(
            int(
                &mut conn,
                &["EXISTS", "herald:node:{n2}:alive", "herald:{A}:pn", "herald:{A}:pu"]
            )
            .await,
            0
        );
        assert_eq!(int(&mut conn, &["SCARD", NODES_KEY]).await, 0);
    }

    #[tokio::test]
    async fn reap_works_in_slices_and_escapes_the_node_id() {
        let server = RedisServer::start();
        let mut conn = server.conn().await;
        // `n*` must not match `n2`'s fields.
        for i in 0..2500 {
            presence_join(&mut conn, &presence("many", "n*", &format!("u{i}")))
                .await
                .unwrap();
        }
        presence_join(&mut conn, &presence("many", "n2", "u0")).await.unwrap();
        presence_join(&mut conn, &presence("many", "n2", "z")).await.unwrap();
        assert_eq!(reap(&mut conn, "n*", 1, 0).await.unwrap(), 2500);
        assert_eq!(presence_snapshot(&mut conn, "many", 10).await.unwrap().1, 2);
    }

    #[tokio::test]
    async fn persisted_messages_are_read_once_claimed_and_acked() {
        let server = RedisServer::start();
        let mut conn = server.conn().await;
        ensure_group(&mut conn).await.unwrap();
        ensure_group(&mut conn).await.unwrap();
        for i in 0..12u64 {
            let p = Publish {
                persist: i % 6 != 5,
                content_type: Some("text/plain"),
                ..msg("dur", "al", b"payload")
            };
            publish(&mut conn, &p).await.unwrap();
        }
        let c1 = read_persist(&mut conn, "c1", 4, None, false).await.unwrap();
        let c2 = read_persist(&mut conn, "c2", 100, Some(10), false).await.unwrap();
        assert_eq!((c1.entries.len(), c2.entries.len()), (4, 6));
        assert!(c1.dropped.is_empty() && c2.dropped.is_empty());
        let mut offsets: Vec<u64> = c1.entries.iter().chain(&c2.entries).map(|(_, e)| e.offset).collect();
        offsets.sort_unstable();
        assert_eq!(offsets, vec![1, 2, 3, 4, 5, 7, 8, 9, 10, 11]);
        let (_, e) = &c1.entries[0];
        assert_eq!(
            (e.room.as_str(), e.publisher.as_str(), e.content_type.as_deref()),
            ("dur", "al", Some("text/plain"))
        );
        assert_eq!(
            (e.payload.as_ref(), e.timestamp_ms),
            (&b"payload"[..], 1_700_000_000_000)
        );
        assert!(
            read_persist(&mut conn, "c1", 10, None, false)
                .await
                .unwrap()
                .entries
                .is_empty()
        );
        assert_eq!(read_persist(&mut conn, "c1", 10, None, true).await.unwrap(), c1);

        let c2_ids: Vec<StreamId> = c2.entries.iter().map(|(id, _)| *id).collect();
        assert_eq!(ack_persist(&mut conn, &c2_ids).await.unwrap(), 6);
        assert!(
            claim_persist(&mut conn, "c2", 60_000, 100)
                .await
                .unwrap()
                .entries
                .is_empty()
        );
        tokio::time::sleep(Duration::from_millis(60)).await;
        let claimed = claim_persist(&mut conn, "c2", 50, 100).await.unwrap();
        assert_eq!(claimed.entries, c1.entries);
        assert!(
            read_persist(&mut conn, "c1", 10, None, true)
                .await
                .unwrap()
                .entries
                .is_empty()
        );
        let ids: Vec<StreamId> = claimed.entries.iter().map(|(id, _)| *id).collect();
        assert_eq!(ack_persist(&mut conn, &ids).await.unwrap(), 4);
        assert_eq!(int(&mut conn, &["XLEN", PERSIST_STREAM]).await, 0);
        assert!(
            read_persist(&mut conn, "c2", 10, None, true)
                .await
                .unwrap()
                .entries
                .is_empty()
        );
        assert_eq!(ack_persist(&mut conn, &[]).await.unwrap(), 0);

        // A pending entry deleted behind the group's back comes back as dropped.
        publish(
            &mut conn,
            &Publish {
                persist: true,
                ..msg("dur", "al", b"x")
            },
        )
        .await
        .unwrap();
        let got = read_persist(&mut conn, "c1", 10, None, false).await.unwrap();
        let id = format_id(got.entries[0].0);
        cmd_value(&mut conn, &["XDEL", PERSIST_STREAM, &id]).await;
        let pending = read_persist(&mut conn, "c1", 10, None, true).await.unwrap();
        assert_eq!((pending.entries.len(), &pending.dropped), (0, &vec![got.entries[0].0]));
        assert_eq!(ack_persist(&mut conn, &pending.dropped).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn scripts_are_reloaded_after_script_flush() {
        let server = RedisServer::start();
        let mut conn = server.conn().await;
        assert_eq!(publish(&mut conn, &msg("ns", "al", b"x")).await.unwrap().offset, 1);
        cmd_value(&mut conn, &["SCRIPT", "FLUSH"]).await;
        assert_eq!(publish(&mut conn, &msg("ns", "al", b"x")).await.unwrap().offset, 2);
        cmd_value(&mut conn, &["SCRIPT", "FLUSH"]).await;
        let mut pipe = redis::pipe();
        for _ in 0..3 {
            pipe.add_command(publish_cmd(&msg("ns", "al", b"x")));
        }
        pipe.add_command(follow_cmd("ns"));
        pipe.cmd("XLEN").arg(stream_key("ns"));
        let replies = query_pipeline(&mut conn, &mut pipe).await.unwrap();
        assert_eq!(replies.len(), 5);
        let mut it = replies.into_iter();
        for o in 3..=5 {
            assert_eq!(parse_published(it.next().unwrap()).unwrap().offset, o);
        }
        assert_eq!(parse_head(it.next().unwrap()).unwrap().last_offset, 5);
        // XLEN ran in the first pass, before the retried publishes.
        assert_eq!(it.next(), Some(Value::Int(2)));
        // A server error stays with its command.
        let mut pipe = redis::pipe();
        pipe.add_command(publish_cmd(&msg("ns", "al", b"x")));
        pipe.cmd("INCR").arg(stream_key("ns"));
        let replies = query_pipeline(&mut conn, &mut pipe).await.unwrap();
        assert_eq!(parse_published(replies[0].clone()).unwrap().offset, 6);
        assert!(matches!(parse_published(replies[1].clone()), Err(RedisError::Redis(_))));
    }

    #[tokio::test]
    async fn offsets_survive_kill_9_and_restart() {
        let mut server = RedisServer::start();
        let mut conn = server.conn().await;
        let mut epoch = 0;
        for _ in 0..5 {
            epoch = publish(&mut conn, &msg("aof", "al", b"x")).await.unwrap().epoch;
        }
        server.kill9();
        assert!(publish(&mut conn, &msg("aof", "al", b"x")).await.is_err());
        server.restart();
        let mut conn = server.conn().await;
        let p = publish(&mut conn, &msg("aof", "al", b"x")).await.unwrap();
        assert_eq!((p.epoch, p.offset), (epoch, 6));
        let head = follow(&mut conn, "aof").await.unwrap();
        assert_eq!((head.epoch, head.last_offset), (epoch, 6));
    }
}
