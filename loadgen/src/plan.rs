//! What a run does, fixed before it starts and shared by every worker: who
//! connects where, who is in which room, and which connection publishes
//! each scheduled message. Everything derives from the plan and the seed,
//! so workers agree without talking and a run can be repeated exactly.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::schedule::{Step, mix};
use crate::target::{Kind, Target};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    Connect,
    Fanout,
    Chat,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub scenario: Scenario,
    pub targets: Vec<Target>,
    pub source_ips: Vec<IpAddr>,
    pub workers: usize,
    /// Connections over all workers. Fanout: subscribers, then publishers.
    /// Chat: users; the last `churners` of them churn.
    pub connections: usize,
    /// Connections opened per second over all workers (open loop); 0 = as
    /// fast as the window allows.
    pub connect_rate: f64,
    /// Handshakes in progress at once, per worker.
    pub connect_window: usize,
    pub connect_timeout: Duration,
    pub rooms: usize,
    pub subscribers: usize,
    pub publishers: usize,
    pub rooms_per_user: usize,
    pub churners: usize,
    /// Leave+join operations per second over all churners.
    pub churn_rate: f64,
    /// Fraction of chat publishes preceded by a typing indicator.
    pub typing: f64,
    pub payload: usize,
    pub seed: u64,
    pub room_prefix: String,
    pub drain: Duration,
    pub steps: Vec<Step>,
    /// Connect scenario: how long to hold the connections.
    pub hold: Duration,
    pub keep_up: f64,
    /// Stop at the first step the target does not keep up with (rate steps);
    /// phases of a scenario file all run.
    pub stop_on_fail: bool,
    /// Fanout: target indexes the subscribers are spread over (empty: all
    /// targets). The k-th member of a room goes to entry `k mod len`, so
    /// every room has members on every listed target.
    #[serde(default)]
    pub subscribers_on: Vec<usize>,
    /// Fanout: target indexes the publishers are spread over (empty: all
    /// targets); publisher p goes to entry `p mod len`.
    #[serde(default)]
    pub publishers_on: Vec<usize>,
    /// Worker index; set per worker.
    pub index: usize,
}

/// Where a delivery went, seen from its publisher: to a connection on the
/// publisher's own target, or on another one (through the cluster).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Locality {
    SameNode,
    CrossNode,
}

impl Plan {
    pub fn is_mine(&self, g: usize) -> bool {
        g % self.workers.max(1) == self.index
    }

    /// Index into `targets` of the node connection `g` talks to:
    /// - a fanout subscriber by its rank in its room (subscriber g is member
    ///   g / rooms of room g mod rooms), round robin over `subscribers_on`
    ///   (default: every target), so each room has members on every listed
    ///   target whatever the number of rooms;
    /// - fanout publisher p round robin over `publishers_on` (default: every
    ///   target);
    /// - connect and chat connections: g mod n.
    pub fn target_of(&self, g: usize) -> usize {
        let n = self.targets.len().max(1);
        let pick = |list: &[usize], k: usize| if list.is_empty() { k % n } else { list[k % list.len()] };
        match self.scenario {
            Scenario::Fanout if g < self.subscribers => pick(&self.subscribers_on, g / self.rooms.max(1)),
            Scenario::Fanout => pick(&self.publishers_on, g - self.subscribers),
            Scenario::Connect | Scenario::Chat => g % n,
        }
    }

    /// Whether a delivery from connection `publisher` to connection
    /// `receiver` stayed on one node.
    pub fn locality(&self, receiver: usize, publisher: usize) -> Locality {
        if self.target_of(receiver) == self.target_of(publisher) {
            Locality::SameNode
        } else {
            Locality::CrossNode
        }
    }

    /// How many of connections `range` go to each target.
    pub fn per_target(&self, range: std::ops::Range<usize>) -> Vec<usize> {
        let mut n = vec![0; self.targets.len().max(1)];
        for g in range {
            n[self.target_of(g)] += 1;
        }
        n
    }

    /// Whether connection `g` is an SSE stream: on sse:// runs, every
    /// connection but fanout's publishers, which send over WebSocket.
    pub fn is_stream(&self, g: usize) -> bool {
        self.targets.first().is_some_and(|t| t.kind == Kind::Sse)
            && match self.scenario {
                Scenario::Connect => true,
                Scenario::Fanout => g < self.subscribers,
                Scenario::Chat => false,
            }
    }

    /// Rooms connection `g` joins when it connects.
    pub fn rooms_of(&self, g: usize) -> Vec<u32> {
        match self.scenario {
            // A stream must name a room; a WebSocket connection held idle
            // joins none.
            Scenario::Connect if self.is_stream(g) => vec![(g % self.rooms.max(1)) as u32],
            Scenario::Connect => Vec::new(),
            Scenario::Fanout if g < self.subscribers => vec![(g % self.rooms) as u32],
            Scenario::Fanout => Vec::new(),
            Scenario::Chat => {
                let want = self.rooms_per_user.clamp(1, self.rooms);
                let mut rooms: Vec<u32> = Vec::with_capacity(want);
                let mut j = 0u64;
                while rooms.len() < want {
                    let r = (mix(self.seed, (g as u64) << 16 | j) % self.rooms as u64) as u32;
                    if !rooms.contains(&r) {
                        rooms.push(r);
                    }
                    j += 1;
                }
                rooms
            }
        }
    }

    /// Chat users who stay in their rooms (their deliveries are counted).
    pub fn is_stable(&self, g: usize) -> bool {
        match self.scenario {
            Scenario::Chat => g < self.connections.saturating_sub(self.churners),
            _ => true,
        }
    }

    /// Stable members of each room (chat), for choosing speakers.
    pub fn members(&self) -> Vec<Vec<u32>> {
        let mut m = vec![Vec::new(); self.rooms];
        if self.scenario == Scenario::Chat {
            for g in 0..self.connections {
                if self.is_stable(g) {
                    for r in self.rooms_of(g) {
                        m[r as usize].push(g as u32);
                    }
                }
            }
        }
        m
    }

    /// Room and publishing connection of message `id` (`None`: a chat room
    /// with no stable member has nobody to speak).
    pub fn publisher_of(&self, id: u64, members: &[Vec<u32>]) -> Option<(u32, usize)> {
        match self.scenario {
            Scenario::Connect => None,
            Scenario::Fanout => {
                let room = (id % self.rooms as u64) as u32;
                Some((room, self.subscribers + room as usize % self.publishers.max(1)))
            }
            Scenario::Chat => {
                let room = (mix(self.seed ^ 0xC4A7, id) % self.rooms as u64) as u32;
                let m = members.get(room as usize)?;
                if m.is_empty() {
                    return None;
                }
                let who = m[(mix(self.seed ^ 0x5EED, id) % m.len() as u64) as usize];
                Some((room, who as usize))
            }
        }
    }
}

#[cfg(test)]
pub(crate) fn test_plan(scenario: Scenario) -> Plan {
    Plan {
        scenario,
        targets: Vec::new(),
        source_ips: Vec::new(),
        workers: 3,
        connections: 60,
        connect_rate: 0.0,
        connect_window: 64,
        connect_timeout: Duration::from_secs(5),
        rooms: 7,
        subscribers: 50,
        publishers: 10,
        rooms_per_user: 3,
        churners: 10,
        churn_rate: 0.0,
        typing: 0.0,
        payload: 64,
        seed: 42,
        room_prefix: "chat:lg-".into(),
        drain: Duration::from_secs(1),
        steps: Vec::new(),
        hold: Duration::ZERO,
        keep_up: 0.99,
        stop_on_fail: true,
        subscribers_on: Vec::new(),
        publishers_on: Vec::new(),
        index: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_split_connections_exactly_once() {
        let mut p = test_plan(Scenario::Fanout);
        let mut owners = vec![0; p.connections];
        for w in 0..p.workers {
            p.index = w;
            for (g, o) in owners.iter_mut().enumerate() {
                if p.is_mine(g) {
                    *o += 1;
                }
            }
        }
        assert!(owners.iter().all(|&o| o == 1));
    }

    #[test]
    fn fanout_rooms_have_one_publisher_each() {
        let p = test_plan(Scenario::Fanout);
        for id in 0..100 {
            let (room, g) = p.publisher_of(id, &[]).unwrap();
            assert_eq!(room as u64, id % 7);
            assert!(g >= p.subscribers && g < p.connections);
            assert_eq!(p.publisher_of(id + 7, &[]).unwrap().1, g, "a room keeps its publisher");
        }
        assert_eq!(p.rooms_of(3), vec![3]);
        assert!(p.rooms_of(55).is_empty());
    }

    #[test]
    fn sse_runs_stream_to_readers_and_publish_over_websocket() {
        let sse = vec![Target::parse("sse://127.0.0.1:1").unwrap()];
        let mut p = test_plan(Scenario::Fanout);
        p.targets = sse.clone();
        assert!(p.is_stream(0) && p.is_stream(49));
        assert!(!p.is_stream(50), "publishers are WebSocket connections");
        assert_eq!(p.rooms_of(10), vec![3]);
        let mut c = test_plan(Scenario::Connect);
        c.targets = sse;
        assert!(c.is_stream(59));
        assert_eq!(c.rooms_of(9), vec![2], "stream g holds room g mod rooms");
        c.targets = vec![Target::parse("ws://127.0.0.1:1").unwrap()];
        assert!(!c.is_stream(0));
        assert!(c.rooms_of(9).is_empty(), "held WebSocket connections join nothing");
    }

    fn targets(n: usize) -> Vec<Target> {
        (0..n)
            .map(|i| Target::parse(&format!("ws://127.0.0.1:{}/ws", 9000 + i)).unwrap())
            .collect()
    }

    #[test]
    fn fanout_spreads_every_room_over_the_subscriber_targets() {
        // 10 rooms and 2 targets: by connection number, every room's
        // members would sit on one target (g and g mod 10 have the same
        // parity). By rank in the room, each room gets half on each.
        let mut p = test_plan(Scenario::Fanout);
        (p.rooms, p.subscribers, p.publishers, p.connections) = (10, 100, 4, 104);
        p.targets = targets(2);
        for room in 0..10 {
            let on: Vec<usize> = (room..100).step_by(10).map(|g| p.target_of(g)).collect();
            assert_eq!(on, [0, 1, 0, 1, 0, 1, 0, 1, 0, 1], "room {room}");
        }
        assert_eq!(p.per_target(0..100), [50, 50]);
        // Publishers round robin over every target by default...
        assert_eq!(p.per_target(100..104), [2, 2]);
        // ... or only where --publishers-on says.
        p.publishers_on = vec![1];
        assert_eq!(p.per_target(100..104), [0, 4]);
        assert!((100..104).all(|g| p.target_of(g) == 1));
        // Subscribers on a chosen subset, in its order.
        p.targets = targets(3);
        p.subscribers_on = vec![2, 0];
        assert_eq!(p.per_target(0..100), [50, 0, 50]);
        assert_eq!((p.target_of(3), p.target_of(13), p.target_of(23)), (2, 0, 2));
        // Uneven: 3 targets, rooms of 10 (4, 3, 3 per room).
        p.subscribers_on.clear();
        assert_eq!(p.per_target(0..100), [40, 30, 30]);
    }

    #[test]
    fn locality_compares_the_receivers_target_with_the_publishers() {
        let mut p = test_plan(Scenario::Fanout);
        (p.rooms, p.subscribers, p.publishers, p.connections) = (2, 8, 1, 9);
        p.targets = targets(2);
        p.publishers_on = vec![0];
        let publisher = 8;
        // Room 0: subscribers 0, 2, 4, 6 on targets 0, 1, 0, 1.
        let sides: Vec<Locality> = [0, 2, 4, 6].iter().map(|&g| p.locality(g, publisher)).collect();
        use Locality::{CrossNode, SameNode};
        assert_eq!(sides, [SameNode, CrossNode, SameNode, CrossNode]);
        p.publishers_on = vec![1];
        assert_eq!(p.locality(0, publisher), CrossNode);
        assert_eq!(p.locality(2, publisher), SameNode);
        // One target: everything is same-node.
        p.targets = targets(1);
        p.publishers_on.clear();
        assert!((0..8).all(|g| p.locality(g, publisher) == SameNode));
    }

    #[test]
    fn connect_and_chat_go_round_robin_by_connection_number() {
        for scenario in [Scenario::Connect, Scenario::Chat] {
            let mut p = test_plan(scenario);
            p.targets = targets(3);
            // Fanout's lists do not apply to them.
            p.subscribers_on = vec![1];
            let on: Vec<usize> = (0..7).map(|g| p.target_of(g)).collect();
            assert_eq!(on, [0, 1, 2, 0, 1, 2, 0]);
            assert_eq!(p.per_target(0..60), [20, 20, 20]);
        }
        // A plan with no target (unit tests) still answers.
        assert_eq!(test_plan(Scenario::Fanout).target_of(5), 0);
    }

    #[test]
    fn chat_speakers_are_stable_members_and_seeded() {
        let p = test_plan(Scenario::Chat);
        let members = p.members();
        for id in 0..500 {
            let (room, g) = p.publisher_of(id, &members).unwrap();
            assert!(p.is_stable(g));
            assert!(p.rooms_of(g).contains(&room));
        }
        let rooms = p.rooms_of(5);
        assert_eq!(rooms.len(), 3);
        assert_eq!(rooms, p.rooms_of(5), "same seed, same rooms");
        let mut other = p.clone();
        other.seed = 43;
        assert!((0..60).any(|g| other.rooms_of(g) != p.rooms_of(g)));
    }
}
