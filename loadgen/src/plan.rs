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
    /// Worker index; set per worker.
    pub index: usize,
}

impl Plan {
    pub fn is_mine(&self, g: usize) -> bool {
        g % self.workers.max(1) == self.index
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
