//! One worker: its share of the plan's connections on one [`Fleet`],
//! driven by the coordinator's commands, answering with [`Report`]s.
//! In-process (one worker) or in a child process (`--workers K`); the code
//! is the same.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::fleet::{Ev, Fleet, State};
use crate::hist::Latency;
use crate::locality::{Locality, Split};
use crate::plan::{Plan, Scenario};
use crate::schedule::mix;
use crate::target::Kind;
use crate::wire::{self, Stamp};

/// Coordinator → worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Command {
    /// Open this worker's connections on the plan's schedule from `start`.
    Open {
        start_unix_ns: u64,
    },
    /// Run step `index` of the plan from `start`.
    Step {
        index: usize,
        start_unix_ns: u64,
    },
    /// Keep the connections open (answering heartbeats) for the plan's hold.
    Hold,
    Finish,
}

/// Worker → coordinator. Histograms travel as `[value_us, count]` pairs.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Tick {
    /// Whole seconds since the run started.
    pub t: u64,
    pub connections: u64,
    pub sent: u64,
    pub delivered: u64,
    pub errors: u64,
    pub latency: Vec<(u64, u64)>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Connected {
    pub attempted: u64,
    pub ok: u64,
    pub failed: BTreeMap<String, u64>,
    pub latency: Vec<(u64, u64)>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StepResult {
    pub sent: u64,
    pub expected: u64,
    pub delivered: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// Deliveries of an earlier step's messages that arrived in this one.
    pub late: u64,
    /// Scheduled messages this worker did not send (reasons in `errors`):
    /// a step with any is not kept up.
    pub not_sent: u64,
    pub acks_ok: u64,
    /// Successful acks that carry no latency: their publish had been
    /// dropped from its connection's full in-flight table, or belonged to
    /// an earlier step. `ack_latency` counts `acks_ok - acks_untimed`.
    pub acks_untimed: u64,
    /// Publishes dropped from a full in-flight table (more than 4,096
    /// awaiting their ack on one connection).
    pub acks_untracked: u64,
    /// This step's publishes still awaiting their ack when the step ended
    /// (drain window included): their latency is in no histogram.
    pub acks_unanswered: u64,
    pub errors: BTreeMap<String, u64>,
    pub presence_events: u64,
    pub typing_events: u64,
    pub latency: Vec<(u64, u64)>,
    /// Publish→ack latency of each successful ack (µs): ack read time minus
    /// the publish's scheduled send time, open-loop like `latency`.
    pub ack_latency: Vec<(u64, u64)>,
    /// How late each publish left against its schedule (µs): the
    /// generator's own lag, already part of `latency`; shown so a report
    /// tells it apart from the target's.
    pub send_lag: Vec<(u64, u64)>,
    /// This worker's CPU time over the step (utime + stime, seconds).
    pub cpu_secs: f64,
    /// Last second's median vs the step's second second (backlog check).
    pub first_p50_us: u64,
    pub last_p50_us: u64,
    /// `expected`, `delivered` and `latency` again, split by whether the
    /// receiver was on its publisher's target (several targets).
    pub locality: Split,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Report {
    Connected(Connected),
    Tick(Tick),
    // Boxed: with its histograms a step result is several times the size
    // of the other reports.
    Step(Box<StepResult>),
    Held { alive: u64, dropped: BTreeMap<String, u64> },
    Fatal(String),
}

/// Messages sent per pass of the step loop before reading again: a
/// generator far behind its schedule still reads its subscribers every
/// 1,024 sends, which keeps what it has to read per pass (and the target's
/// queue to each of its subscribers) small.
const SEND_BATCH: u64 = 1024;
/// How far past a step's end the generator may still be sending its
/// schedule before it gives up on the rest.
const BEHIND_GRACE: Duration = Duration::from_secs(1);

pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The `Instant` at Unix time `ns` (in the past: now).
fn instant_at(ns: u64) -> Instant {
    Instant::now() + Duration::from_nanos(ns.saturating_sub(unix_ns()))
}

pub struct Worker<E: FnMut(Report)> {
    plan: Plan,
    fleet: Fleet,
    emit: E,
    /// Local connection index → global connection number.
    globals: Vec<usize>,
    members: Vec<Vec<u32>>,
    /// Per room: stable local members (deliveries expected per message).
    local_members: Vec<u32>,
    /// Per room, per target: the same members by the target they are on
    /// (how many of a message's deliveries stay on its publisher's node).
    local_members_on: Vec<Vec<u32>>,
    room_seq: Vec<u64>,
    /// Messages scheduled in earlier steps (ids are global across steps).
    id_base: u64,
    run_start_ns: u64,
    tick: Tick,
    tick_hist: Latency,
    /// Publish→ack latencies of the step being run.
    ack_hist: Latency,
    dropped: BTreeMap<String, u64>,
}

impl<E: FnMut(Report)> std::fmt::Debug for Worker<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("index", &self.plan.index)
            .finish_non_exhaustive()
    }
}

impl<E: FnMut(Report)> Worker<E> {
    pub fn new(plan: Plan, emit: E) -> Result<Self> {
        let presence = plan.scenario == Scenario::Chat;
        let fleet = Fleet::new(
            plan.targets.clone(),
            plan.source_ips.clone(),
            plan.room_prefix.clone(),
            plan.rooms,
            presence,
        )?;
        let members = plan.members();
        let mut local_members = vec![0u32; plan.rooms];
        let mut local_members_on = vec![vec![0u32; plan.targets.len().max(1)]; plan.rooms];
        for g in (0..plan.connections).filter(|&g| plan.is_mine(g) && plan.is_stable(g)) {
            let target = plan.target_of(g);
            for r in plan.rooms_of(g) {
                local_members[r as usize] += 1;
                local_members_on[r as usize][target] += 1;
            }
        }
        Ok(Self {
            room_seq: vec![0; plan.rooms],
            plan,
            fleet,
            emit,
            globals: Vec::new(),
            members,
            local_members,
            local_members_on,
            id_base: 0,
            run_start_ns: unix_ns(),
            tick: Tick::default(),
            tick_hist: Latency::new(),
            ack_hist: Latency::new(),
            dropped: BTreeMap::new(),
        })
    }

    pub fn handle(&mut self, cmd: Command) -> Result<bool> {
        match cmd {
            Command::Open { start_unix_ns } => {
                self.run_start_ns = start_unix_ns;
                let r = self.open(start_unix_ns)?;
                (self.emit)(Report::Connected(r));
            }
            Command::Step { index, start_unix_ns } => {
                let r = self.step(index, start_unix_ns)?;
                (self.emit)(Report::Step(Box::new(r)));
            }
            Command::Hold => {
                let until = Instant::now() + self.plan.hold;
                let mut scratch = StepResult::default();
                while Instant::now() < until {
                    self.fleet
                        .poll(Duration::from_millis(100).min(until - Instant::now()))?;
                    self.drain_events(&mut scratch, None, None);
                    self.maybe_tick();
                }
                let alive = self.fleet.alive() as u64;
                (self.emit)(Report::Held {
                    alive,
                    dropped: std::mem::take(&mut self.dropped),
                });
            }
            Command::Finish => {
                self.fleet.close_all();
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn open(&mut self, start_ns: u64) -> Result<Connected> {
        let start = instant_at(start_ns);
        let mine: Vec<usize> = (0..self.plan.connections).filter(|&g| self.plan.is_mine(g)).collect();
        let rate = self.plan.connect_rate;
        let due = move |g: usize| {
            if rate > 0.0 {
                start + Duration::from_secs_f64(g as f64 / rate)
            } else {
                start
            }
        };
        let mut result = Connected {
            attempted: mine.len() as u64,
            ..Connected::default()
        };
        let mut latency = Latency::new();
        let mut next = 0;
        let mut scratch = StepResult::default();
        loop {
            let now = Instant::now();
            while next < mine.len() && due(mine[next]) <= now && self.fleet.in_progress() < self.plan.connect_window {
                let g = mine[next];
                let rooms = self.plan.rooms_of(g);
                let target = self.plan.target_of(g);
                self.fleet
                    .open(g, target, g as u64, rooms, due(g), self.plan.is_stream(g));
                self.globals.push(g);
                next += 1;
            }
            if next == mine.len() && self.fleet.in_progress() == 0 {
                break;
            }
            // With the window full, the next connect waits for one in
            // flight to finish (an event), not for its due time: polling
            // with a zero timeout then would spin a core the target needs.
            if next < mine.len() && self.fleet.in_progress() < self.plan.connect_window {
                self.fleet.poll_until(due(mine[next]), Duration::from_millis(10))?;
            } else {
                self.fleet.poll(Duration::from_millis(10))?;
            }
            self.fleet.expire(Instant::now(), self.plan.connect_timeout);
            for ev in std::mem::take(&mut self.fleet.out) {
                match ev {
                    Ev::Ready { conn, at } => {
                        result.ok += 1;
                        let base = self.fleet.conns[conn].due;
                        latency.record(at.saturating_duration_since(base).as_micros() as u64);
                    }
                    Ev::Failed { reason, .. } => *result.failed.entry(reason).or_insert(0) += 1,
                    other => self.count_other(other, &mut scratch),
                }
            }
            self.maybe_tick();
        }
        // A connection that was ready and then dropped is not "ok".
        result.ok = self.fleet.alive() as u64;
        result.latency = latency.to_pairs();
        Ok(result)
    }

    fn step(&mut self, index: usize, start_ns: u64) -> Result<StepResult> {
        let Some(step) = self.plan.steps.get(index).cloned() else {
            anyhow::bail!("no step {index}");
        };
        let cpu0 = crate::procstat::self_cpu_secs();
        let start = instant_at(start_ns);
        let end = start + step.duration;
        let count = step.count();
        let first_id = self.id_base;
        self.id_base += count;
        let mut r = StepResult::default();
        let mut hist = Latency::new();
        self.ack_hist.reset();
        let mut send_lag = Latency::new();
        let mut per_second: Vec<Latency> = Vec::new();
        let mut payload = wire::payload(self.plan.payload);
        let mut k = 0u64;
        let mut churn_k = 0u64;
        let churn_interval = (self.plan.churn_rate > 0.0 && self.plan.churners > 0)
            .then(|| Duration::from_secs_f64(1.0 / self.plan.churn_rate));
        loop {
            let now = Instant::now();
            // A bounded batch per pass, so deliveries keep being read even
            // when the schedule is far ahead of what this process can send.
            let batch_end = k.saturating_add(SEND_BATCH);
            while k < count && k < batch_end {
                let Some(at) = step.due(k) else { break };
                if start + at > now {
                    break;
                }
                let id = first_id + k;
                k += 1;
                let Some((room, publisher)) = self.plan.publisher_of(id, &self.members) else {
                    continue;
                };
                let seq = self.room_seq[room as usize];
                self.room_seq[room as usize] += 1;
                let mut expect = u64::from(self.local_members[room as usize]);
                let mut same_node = self.local_members_on[room as usize]
                    .get(self.plan.target_of(publisher))
                    .copied()
                    .map_or(0, u64::from);
                let local_pub = self.plan.is_mine(publisher);
                if local_pub && self.plan.scenario == Scenario::Chat {
                    // Its own echo is not counted.
                    expect = expect.saturating_sub(1);
                    same_node = same_node.saturating_sub(1);
                }
                r.expected += expect;
                r.locality.expect(Locality::SameNode, same_node);
                r.locality.expect(Locality::CrossNode, expect.saturating_sub(same_node));
                if !local_pub {
                    continue;
                }
                let conn = publisher / self.plan.workers.max(1);
                let sched = start_ns + u64::try_from(at.as_nanos()).unwrap_or(u64::MAX);
                wire::write_stamp(
                    &mut payload,
                    Stamp {
                        sched_unix_ns: sched,
                        id,
                        room_seq: seq,
                    },
                );
                if self.plan.typing > 0.0
                    && (mix(self.plan.seed ^ 0x7E, id) % 10_000) as f64 / 10_000.0 < self.plan.typing
                {
                    self.fleet.typing(conn, room);
                }
                if self.fleet.publish(conn, room, &payload, sched) {
                    send_lag.record(now.saturating_duration_since(start + at).as_micros() as u64);
                    r.sent += 1;
                    self.tick.sent += 1;
                } else {
                    let why = if self.fleet.conns.get(conn).is_some_and(|c| c.state == State::Ready) {
                        "not sent: 8 MiB already queued to the target"
                    } else {
                        "not sent: publisher not connected"
                    };
                    *r.errors.entry(why.into()).or_insert(0) += 1;
                    r.not_sent += 1;
                }
            }
            if let Some(iv) = churn_interval {
                while start + iv.mul_f64(churn_k as f64) <= now && now < end {
                    let n = self.plan.connections;
                    let g = n - self.plan.churners
                        + (mix(self.plan.seed ^ 0xC1, churn_k) % self.plan.churners as u64) as usize;
                    churn_k += 1;
                    if self.plan.is_mine(g) {
                        let rooms = self.plan.rooms_of(g);
                        let room = rooms[(churn_k as usize) % rooms.len()];
                        self.fleet.churn(g / self.plan.workers.max(1), room);
                    }
                }
            }
            if k >= count && now >= end {
                break;
            }
            if k < count && now >= end + BEHIND_GRACE {
                // The generator could not keep its own schedule: say so
                // rather than run on past the step.
                *r.errors
                    .entry("not sent: generator behind schedule".into())
                    .or_insert(0) += count - k;
                r.not_sent += count - k;
                break;
            }
            let next = step.due(k).map_or(end, |d| start + d).min(end);
            self.fleet.poll_until(next, Duration::from_millis(5))?;
            let second = now.saturating_duration_since(start).as_secs() as usize;
            if per_second.len() <= second {
                per_second.resize_with(second + 1, Latency::new);
            }
            self.drain_events(&mut r, Some((first_id, &mut hist)), per_second.last_mut());
            self.maybe_tick();
        }
        // Deliveries and acks both get the drain window: an ack that comes
        // after it would count the pause before the next step.
        let drain_until = Instant::now() + self.plan.drain;
        while (r.delivered < r.expected || self.fleet.awaiting_acks() > 0) && Instant::now() < drain_until {
            self.fleet.poll(Duration::from_millis(10))?;
            self.drain_events(&mut r, Some((first_id, &mut hist)), None);
            self.maybe_tick();
        }
        // Acks still missing are said, then forgotten: if one comes later,
        // it counts in `acks_ok` of that step but has no latency.
        r.acks_unanswered = self.fleet.forget_acks() as u64;
        r.latency = hist.to_pairs();
        r.ack_latency = self.ack_hist.to_pairs();
        r.send_lag = send_lag.to_pairs();
        // Backlog check: the second second (the first may hold warm-up) vs
        // the last full second.
        let full: Vec<&Latency> = per_second.iter().filter(|h| h.count() > 0).collect();
        if full.len() >= 3 {
            r.first_p50_us = full[1].quantile(0.5);
            r.last_p50_us = full[full.len() - 1].quantile(0.5);
        }
        r.cpu_secs = crate::procstat::self_cpu_secs() - cpu0;
        Ok(r)
    }

    fn drain_events(
        &mut self,
        r: &mut StepResult,
        mut step: Option<(u64, &mut Latency)>,
        mut second: Option<&mut Latency>,
    ) {
        if self.fleet.out.is_empty() {
            return;
        }
        for ev in std::mem::take(&mut self.fleet.out) {
            match ev {
                Ev::Delivery {
                    conn,
                    room,
                    order,
                    stamp,
                    recv_unix_ns,
                } => {
                    let Some((first_id, hist)) = step.as_mut() else {
                        continue;
                    };
                    if stamp.id < *first_id {
                        r.late += 1;
                        continue;
                    }
                    let g = self.globals.get(conn).copied().unwrap_or(usize::MAX);
                    if !self.plan.is_stable(g) {
                        continue;
                    }
                    let publisher = self.plan.publisher_of(stamp.id, &self.members).map(|(_, p)| p);
                    if self.plan.scenario == Scenario::Chat && publisher == Some(g) {
                        continue;
                    }
                    // Order: the target's offset when it assigns one; else
                    // the room sequence, which is ordered only when one
                    // connection publishes to the room (fanout).
                    let key = match (order, self.plan.scenario) {
                        (Some(o), _) => Some(o),
                        (None, Scenario::Fanout) => Some(stamp.room_seq),
                        _ => None,
                    };
                    if let Some(key) = key {
                        let last = &mut self.fleet.conns[conn].last;
                        match last.iter_mut().find(|(r, _)| *r == room) {
                            Some((_, l)) if key == *l => {
                                r.duplicated += 1;
                                continue;
                            }
                            Some((_, l)) if key < *l => r.out_of_order += 1,
                            Some((_, l)) => *l = key,
                            None => last.push((room, key)),
                        }
                    }
                    r.delivered += 1;
                    self.tick.delivered += 1;
                    let us = recv_unix_ns.saturating_sub(stamp.sched_unix_ns) / 1000;
                    hist.record(us);
                    // A message always has a publisher; were it to lack
                    // one, it still counts on one side, so the sides add up.
                    let at = publisher.map_or(Locality::SameNode, |p| self.plan.locality(g, p));
                    r.locality.deliver(at, us);
                    self.tick_hist.record(us);
                    if let Some(s) = second.as_mut() {
                        s.record(us);
                    }
                }
                other => self.count_other(other, r),
            }
        }
    }

    fn count_other(&mut self, ev: Ev, r: &mut StepResult) {
        match ev {
            Ev::Acked {
                ok: true, latency_us, ..
            } => {
                r.acks_ok += 1;
                match latency_us {
                    Some(us) => self.ack_hist.record(us),
                    None => r.acks_untimed += 1,
                }
            }
            Ev::AckUntracked => r.acks_untracked += 1,
            Ev::Acked { ok: false, reason, .. } => {
                self.tick.errors += 1;
                *r.errors
                    .entry(format!("publish refused: {}", reason.unwrap_or_default()))
                    .or_insert(0) += 1;
            }
            Ev::Failed { reason, .. } => {
                self.tick.errors += 1;
                *self.dropped.entry(reason.clone()).or_insert(0) += 1;
                *r.errors.entry(reason).or_insert(0) += 1;
            }
            Ev::Error(e) => {
                self.tick.errors += 1;
                *r.errors.entry(e).or_insert(0) += 1;
            }
            Ev::Presence => r.presence_events += 1,
            Ev::Typing => r.typing_events += 1,
            Ev::Ready { .. } | Ev::Delivery { .. } => {}
        }
    }

    fn maybe_tick(&mut self) {
        let t = unix_ns().saturating_sub(self.run_start_ns) / 1_000_000_000;
        if t > self.tick.t {
            let mut done = std::mem::take(&mut self.tick);
            done.connections = self.fleet.alive() as u64;
            done.latency = self.tick_hist.to_pairs();
            self.tick_hist.reset();
            (self.emit)(Report::Tick(done));
            self.tick.t = t;
        }
    }

    pub fn kind(&self) -> Kind {
        self.fleet.kind()
    }

    pub fn ready(&self) -> usize {
        self.fleet.conns.iter().filter(|c| c.state == State::Ready).count()
    }
}
