//! A peer: one Herald session with the identity it authenticated as and the
//! rooms it joined, whatever link carries it (WebSocket today). Fan-out and
//! the room owners deal with peers, never with sockets.

use std::sync::Arc;

use herald_protocol::ServerSession;

use crate::auth::Identity;

/// A room the peer joined or is joining. `attempt` tells the answers of a
/// join apart from those of an earlier join of the same room (unsubscribed
/// and subscribed again while the first answer was on its way).
#[derive(Debug)]
struct PeerRoom {
    room: Arc<str>,
    attempt: u32,
}

#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) session: ServerSession,
    identity: Option<Identity>,
    user: Option<Arc<str>>,
    rooms: Vec<PeerRoom>,
    next_attempt: u32,
    /// Requests of this session the storage service has not answered yet.
    store_jobs: u16,
}

impl Peer {
    pub(crate) fn new(session: ServerSession) -> Self {
        Self {
            session,
            identity: None,
            user: None,
            rooms: Vec::new(),
            next_attempt: 0,
            store_jobs: 0,
        }
    }

    /// Who the peer authenticated as (None until `Connect` was accepted).
    pub(crate) fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    pub(crate) fn user(&self) -> Option<&Arc<str>> {
        self.user.as_ref()
    }

    /// `Connect` was accepted as `identity`.
    pub(crate) fn authenticated(&mut self, identity: Identity) -> Arc<str> {
        let user: Arc<str> = Arc::from(identity.user.as_str());
        self.user = Some(user.clone());
        self.identity = Some(identity);
        user
    }

    /// When the peer's token expires (unix seconds), if it does.
    pub(crate) fn expires_at(&self) -> Option<u64> {
        self.identity.as_ref().and_then(|i| i.expires_at)
    }

    /// Starts joining `room` (again, if it already did): the room's shared
    /// name and the attempt its answer must carry.
    pub(crate) fn start_join(&mut self, room: &str) -> (Arc<str>, u32) {
        self.next_attempt = self.next_attempt.wrapping_add(1);
        let attempt = self.next_attempt;
        match self.rooms.iter_mut().find(|r| *r.room == *room) {
            Some(r) => {
                r.attempt = attempt;
                (r.room.clone(), attempt)
            }
            None => {
                let name: Arc<str> = Arc::from(room);
                self.rooms.push(PeerRoom {
                    room: name.clone(),
                    attempt,
                });
                (name, attempt)
            }
        }
    }

    /// The owner accepted join `attempt`; false if it is not the current
    /// one (the peer left or joined again since).
    pub(crate) fn join_answered(&self, room: &str, attempt: u32) -> bool {
        self.rooms.iter().any(|r| *r.room == *room && r.attempt == attempt)
    }

    /// The owner refused join `attempt`: the peer is not in the room. False
    /// if it is not the current attempt.
    pub(crate) fn join_refused(&mut self, room: &str, attempt: u32) -> bool {
        match self.rooms.iter().position(|r| *r.room == *room && r.attempt == attempt) {
            Some(i) => {
                self.rooms.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// Leaves `room`; its name if the peer had joined (or was joining) it.
    pub(crate) fn leave(&mut self, room: &str) -> Option<Arc<str>> {
        let i = self.rooms.iter().position(|r| *r.room == *room)?;
        Some(self.rooms.swap_remove(i).room)
    }

    /// The peer's room named `room`, if it joined it (answered or not).
    pub(crate) fn room(&self, room: &str) -> Option<&Arc<str>> {
        self.rooms.iter().find(|r| *r.room == *room).map(|r| &r.room)
    }

    /// Counts a request handed to the storage service; false (and not
    /// counted) when `max` are already waiting: one session must not fill
    /// the queue every session shares.
    pub(crate) fn start_store_job(&mut self, max: u16) -> bool {
        if self.store_jobs >= max {
            return false;
        }
        self.store_jobs += 1;
        true
    }

    /// A request counted by [`start_store_job`](Self::start_store_job) was
    /// answered (or never sent).
    pub(crate) fn finish_store_job(&mut self) {
        self.store_jobs = self.store_jobs.saturating_sub(1);
    }

    /// Every room, forgotten (the connection is going).
    pub(crate) fn take_rooms(&mut self) -> Vec<Arc<str>> {
        std::mem::take(&mut self.rooms).into_iter().map(|r| r.room).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use herald_protocol::ServerConfig;

    use super::*;

    fn peer() -> Peer {
        Peer::new(ServerSession::new(ServerConfig::default(), Instant::now()))
    }

    #[test]
    fn only_the_current_join_attempt_is_answered() {
        let mut p = peer();
        let (_, first) = p.start_join("chat:a");
        assert!(p.leave("chat:a").is_some());
        let (_, second) = p.start_join("chat:a");
        assert!(!p.join_answered("chat:a", first), "a stale answer");
        assert!(!p.join_refused("chat:a", first));
        assert!(p.join_answered("chat:a", second));
        assert!(p.room("chat:a").is_some());
        assert_eq!(p.take_rooms().len(), 1);
        assert!(p.room("chat:a").is_none());
    }

    #[test]
    fn storage_requests_in_flight_are_bounded() {
        let mut p = peer();
        assert!(p.start_store_job(2) && p.start_store_job(2));
        assert!(!p.start_store_job(2), "the third waits for an answer");
        p.finish_store_job();
        assert!(p.start_store_job(2));
        for _ in 0..5 {
            p.finish_store_job();
        }
        assert!(p.start_store_job(1), "never below zero");
    }

    #[test]
    fn a_refused_join_leaves_no_room() {
        let mut p = peer();
        let (_, a) = p.start_join("chat:a");
        assert!(p.join_refused("chat:a", a));
        assert!(p.leave("chat:a").is_none());
    }
}
