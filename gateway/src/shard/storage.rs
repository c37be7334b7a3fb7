//! The shard's side of the storage service (notifications and analytics;
//! the rooms' log store lives inside `rooms`): what sessions ask becomes a
//! storage job, and what the service answers goes back to the session or
//! HTTP request that waits, or, for a stored notification, on to its
//! user's connections on every shard.
//!
//! A session's jobs always name the session's own user, never one taken
//! from a frame, and answers find their session by key and generation: a
//! slot reused by another user never receives its predecessor's inbox.

use std::sync::Arc;

use herald_protocol::ErrorCode;
use herald_protocol::wire;
use herald_storage::NotificationRecord;

use super::Shard;
use crate::api::{Api, store_refusal};
use crate::conns::ConnKey;
use crate::link::{HttpState, Link};
use crate::mesh::{Origin, Request};
use crate::store::{ReadJob, StoreAnswer, StoreDone, WriteJob};
use crate::{analytics, notify};

/// Unacknowledged analytics events a shard gathers before it writes them
/// as one job (it also writes them at the end of every read pass).
const MAX_EVENTS_BATCH: usize = 1024;
/// Requests of one session that may wait for the storage service at once.
const MAX_JOBS_PER_SESSION: u16 = 32;

/// A session's request for the storage service.
enum Job {
    Read(ReadJob),
    Write(WriteJob),
}

impl Shard {
    // ---- what sessions ask for ------------------------------------------------

    /// The authenticated user of the session in `slot`.
    fn session_user(&mut self, slot: usize) -> Option<Arc<str>> {
        self.peer_mut(slot).and_then(|p| p.user().cloned())
    }

    /// Hands a session's request to the storage service: refused with
    /// `Overloaded` when the session already has [`MAX_JOBS_PER_SESSION`]
    /// waiting (one connection must not fill the queue every session
    /// shares) or the queue is full, `Unavailable` if the service stopped.
    fn submit(&mut self, slot: usize, request_id: u32, job: Job) {
        let Some(peer) = self.peer_mut(slot) else { return };
        if !peer.start_store_job(MAX_JOBS_PER_SESSION) {
            let message = "too many requests of this connection wait for storage; retry shortly";
            peer.session.reply_error(request_id, ErrorCode::Overloaded, message);
            return;
        }
        let sent = match job {
            Job::Read(job) => self.store.read(job),
            Job::Write(job) => self.store.write(job),
        };
        if let Err(e) = sent
            && let Some(peer) = self.peer_mut(slot)
        {
            peer.finish_store_job();
            let (code, message) = store_refusal(&e);
            peer.session.reply_error(request_id, code, message);
        }
    }

    /// A session was accepted: it gets its user's unread count, unasked
    /// (a `NotificationsPage` with request id 0 and no notifications).
    ///
    /// Best effort: a client that misses it can ask with a query. This
    /// shard keeps at most its share of a quarter of the storage read
    /// queue in unread counts, so a reconnect storm leaves room for the
    /// history reads of the sessions' resumes.
    pub(super) fn send_unread(&mut self, key: ConnKey, user: Arc<str>) {
        let shards = self.mesh.shards().max(1);
        let max_in_flight = (self.shared.config.storage.read_queue / 4 / shards).max(1);
        if self.unread_in_flight >= max_in_flight {
            tracing::debug!(shard = self.id, "unread count not asked: too many in flight");
            return;
        }
        let origin = self.conn_origin(key, 0, 0);
        match self.store.read(ReadJob::Unread { origin, user }) {
            Ok(()) => self.unread_in_flight += 1,
            Err(e) => tracing::debug!(shard = self.id, error = %e, "unread count not asked"),
        }
    }

    /// `NotificationsQuery`: a page of the session's own notifications.
    pub(super) fn notifications_query(
        &mut self,
        slot: usize,
        key: ConnKey,
        request_id: u32,
        q: &wire::NotificationsQueryT,
    ) {
        // A page with request id 0 is the unread count; a query that wants
        // no answer has nothing to do.
        if request_id == 0 {
            return;
        }
        let Some(user) = self.session_user(slot) else { return };
        let job = ReadJob::Notifications {
            origin: self.conn_origin(key, request_id, 0),
            user,
            before_id: q.before_id,
            limit: (q.limit as usize).clamp(1, notify::MAX_PAGE),
            unread_only: q.unread_only,
        };
        self.submit(slot, request_id, Job::Read(job));
    }

    /// `NotificationsMarkRead`: marks the session's own notifications.
    pub(super) fn mark_read(&mut self, slot: usize, key: ConnKey, request_id: u32, m: wire::NotificationsMarkReadT) {
        let ids = m.ids.unwrap_or_default();
        let Some(user) = self.session_user(slot) else { return };
        let Some(peer) = self.peer_mut(slot) else { return };
        if ids.len() > notify::MAX_MARK_IDS {
            let message = format!("at most {} ids per request", notify::MAX_MARK_IDS);
            peer.session.reply_error(request_id, ErrorCode::BadRequest, &message);
            return;
        }
        if ids.is_empty() && m.up_to == 0 {
            // Nothing to mark.
            peer.session.reply(request_id, ErrorCode::Ok, None);
            return;
        }
        let job = WriteJob::MarkRead {
            origin: self.conn_origin(key, request_id, 0),
            user,
            ids,
            up_to: m.up_to,
            all: false,
        };
        self.submit(slot, request_id, Job::Write(job));
    }

    /// `AnalyticsEvent`, stamped with the node's time. Acknowledged ones
    /// (request id ≠ 0) are written on their own and answered once stored;
    /// the others join this shard's batch.
    pub(super) fn analytics_event(&mut self, slot: usize, key: ConnKey, request_id: u32, e: wire::AnalyticsEventT) {
        let event = match analytics::from_frame(e, crate::unix_ms()) {
            Ok(event) => event,
            Err(why) => {
                if let Some(peer) = self.peer_mut(slot) {
                    peer.session
                        .reply_error(request_id, ErrorCode::BadRequest, &why.to_string());
                }
                return;
            }
        };
        if request_id == 0 {
            self.events_batch.push(event);
            if self.events_batch.len() >= MAX_EVENTS_BATCH {
                self.flush_events();
            }
            return;
        }
        let job = WriteJob::Events {
            origin: Some(self.conn_origin(key, request_id, 0)),
            events: vec![event],
        };
        self.submit(slot, request_id, Job::Write(job));
    }

    /// Writes the unacknowledged events gathered since the last flush, as
    /// one job. Nobody waits for them: if the queue is full they are lost
    /// (and counted as refused by the storage metrics).
    pub(super) fn flush_events(&mut self) {
        if self.events_batch.is_empty() {
            return;
        }
        let events = std::mem::take(&mut self.events_batch);
        let n = events.len();
        if self.store.write(WriteJob::Events { origin: None, events }).is_err() {
            tracing::debug!(
                shard = self.id,
                events = n,
                "analytics events dropped: storage queue full"
            );
        }
    }

    // ---- what the storage service answers ---------------------------------------

    /// Takes every answer the storage service has for this shard.
    pub(super) fn poll_store_answers(&mut self) {
        while let Some(done) = self.store.poll_done() {
            self.store_done(done);
        }
    }

    fn store_done(&mut self, StoreDone { origin, answer }: StoreDone) {
        if matches!(answer, StoreAnswer::Unread(_)) {
            self.unread_in_flight = self.unread_in_flight.saturating_sub(1);
        }
        match origin {
            Origin::Http { conn, .. } => match answer {
                StoreAnswer::Notified(Ok(record)) => self.notification_stored(conn, &record),
                other => self.finish_http(conn, Api::stored(other)),
            },
            Origin::Conn { conn, request_id, .. } => self.session_answer(conn, request_id, answer),
        }
    }

    /// A notification is stored: now it goes live, to its user's
    /// connections on every shard, and the request that made it is
    /// answered when they all counted. It goes live even if that request's
    /// connection went away: it exists.
    fn notification_stored(&mut self, conn: ConnKey, record: &NotificationRecord) {
        let shards = self.mesh.shards();
        if self.http_waiting(conn) {
            self.api.notifying(conn, record.id, shards);
        }
        let frame = notify::live_frame(record);
        let origin = Origin::Http {
            shard: self.id as u32,
            conn,
        };
        for shard in 0..shards {
            let request = Request::NotifyUser {
                origin,
                user: record.user.clone(),
                frame: frame.clone(),
            };
            self.mesh.request(shard, request);
        }
        self.send_user_elsewhere(&record.user, frame, false);
    }

    /// Whether `conn` is an HTTP connection waiting for its answer.
    fn http_waiting(&self, conn: ConnKey) -> bool {
        let Some(slot) = self.conns.slot_of(conn) else {
            return false;
        };
        matches!(self.conns.get(slot).map(|c| &c.link), Some(Link::Http(h)) if h.state == HttpState::Waiting)
    }

    fn session_answer(&mut self, conn: ConnKey, request_id: u32, answer: StoreAnswer) {
        // Gone, or its slot now holds another connection: nobody to tell.
        let Some(slot) = self.conns.slot_of(conn) else { return };
        // A page must never be what closes a session as a slow consumer.
        let budget = self.shared.config.session.limits.max_outbound_bytes / 2;
        let Some(peer) = self.peer_mut(slot) else { return };
        if matches!(
            answer,
            StoreAnswer::Page(_) | StoreAnswer::Marked(_) | StoreAnswer::EventsStored(_)
        ) {
            peer.finish_store_job();
        }
        let session = &mut peer.session;
        match answer {
            StoreAnswer::Page(Ok(page)) => {
                let _ = session.send(notify::page_frame(request_id, &notify::fit(page, budget)), false);
            }
            StoreAnswer::Unread(Ok(unread)) => {
                let _ = session.send(notify::unread_frame(unread), false);
            }
            StoreAnswer::Marked(Ok(_)) | StoreAnswer::EventsStored(Ok(_)) => {
                session.reply(request_id, ErrorCode::Ok, None);
            }
            StoreAnswer::Page(Err(e)) | StoreAnswer::Marked(Err(e)) | StoreAnswer::EventsStored(Err(e)) => {
                let (code, message) = store_refusal(&e);
                session.reply_error(request_id, code, message);
            }
            // The unread count is a courtesy; the client can still ask.
            StoreAnswer::Unread(Err(_)) => return,
            // Only HTTP requests ask for these.
            StoreAnswer::Notified(_) | StoreAnswer::Rollups(_) => return,
        }
        self.mark_write(slot);
    }
}
