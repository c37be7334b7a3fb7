//! Connection deadlines on a hashed timer wheel, so a shard with a million
//! idle connections does no work between their deadlines (walking every
//! connection on a periodic tick cost O(connections) per tick).
//!
//! Time is cut into ticks of [`GRANULARITY`]; a deadline goes into the slot
//! of its tick, modulo the wheel's size. Expiring visits only the slots of
//! the ticks that passed; an entry whose tick lies a whole turn or more
//! ahead stays in its slot. Entries are never removed early: a connection
//! that moves its deadline inserts a new entry, and the owner of the wheel
//! ignores an expired entry that no longer matches the connection (see
//! `Conn::timer`). A bitmap of occupied slots finds the next deadline
//! without scanning empty slots.

use std::time::{Duration, Instant};

/// Width of one tick: timers fire up to this late.
pub(crate) const GRANULARITY: Duration = Duration::from_millis(10);
/// Slots on the wheel (one turn: 8,192 × 10 ms ≈ 82 s, longer than every
/// deadline a live session has: heartbeats 15 s, idle 45 s).
const SLOTS: usize = 8192;

#[derive(Debug, Clone, Copy)]
struct Entry<K> {
    key: K,
    tick: u64,
}

/// Deadlines of keys `K` (connection keys with their generation).
#[derive(Debug)]
pub(crate) struct TimerWheel<K> {
    start: Instant,
    slots: Vec<Vec<Entry<K>>>,
    /// One bit per slot: it holds at least one entry.
    occupied: Vec<u64>,
    /// The first tick not yet expired.
    next: u64,
    len: usize,
}

impl<K: Copy> TimerWheel<K> {
    pub(crate) fn new(start: Instant) -> Self {
        Self {
            start,
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            occupied: vec![0; SLOTS / 64],
            // Tick 0 is never handed out: 0 can mean "no entry".
            next: 1,
            len: 0,
        }
    }

    /// Entries held (stale ones included until they expire).
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The tick a deadline falls in: the first tick at or after it, and
    /// never one already expired.
    fn tick_of(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.start);
        let g = GRANULARITY.as_nanos();
        let tick = since.as_nanos().div_ceil(g) as u64;
        tick.max(self.next)
    }

    /// When `tick` begins.
    fn instant_of(&self, tick: u64) -> Instant {
        self.start + GRANULARITY * u32::try_from(tick).unwrap_or(u32::MAX)
    }

    /// Adds a deadline; returns its tick, which names this entry (the
    /// connection keeps it to recognise its current entry).
    pub(crate) fn insert(&mut self, key: K, at: Instant) -> u64 {
        let tick = self.tick_of(at);
        let slot = (tick % SLOTS as u64) as usize;
        self.slots[slot].push(Entry { key, tick });
        self.occupied[slot / 64] |= 1 << (slot % 64);
        self.len += 1;
        tick
    }

    /// The tick `at` would get if inserted now.
    pub(crate) fn tick_for(&self, at: Instant) -> u64 {
        self.tick_of(at)
    }

    /// Moves every entry due by `now` into `out` as (key, tick).
    pub(crate) fn expire(&mut self, now: Instant, out: &mut Vec<(K, u64)>) {
        let since = now.saturating_duration_since(self.start);
        let now_tick = (since.as_nanos() / GRANULARITY.as_nanos()) as u64;
        if now_tick < self.next {
            return;
        }
        let ticks = (now_tick - self.next + 1).min(SLOTS as u64);
        for t in self.next..self.next + ticks {
            let slot = (t % SLOTS as u64) as usize;
            if self.occupied[slot / 64] & (1 << (slot % 64)) == 0 {
                continue;
            }
            let entries = &mut self.slots[slot];
            let before = entries.len();
            entries.retain(|e| {
                if e.tick <= now_tick {
                    out.push((e.key, e.tick));
                    false
                } else {
                    true
                }
            });
            self.len -= before - entries.len();
            if entries.is_empty() {
                self.occupied[slot / 64] &= !(1 << (slot % 64));
                // A slot is refilled about once a turn: keeping its capacity
                // would hold a second copy of every deadline's room.
                *entries = Vec::new();
            }
        }
        self.next = now_tick + 1;
    }

    /// The start of the earliest occupied tick: no entry is due before it
    /// (an entry a whole turn ahead can make it early, never late).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        if self.len == 0 {
            return None;
        }
        let first = (self.next % SLOTS as u64) as usize;
        // Scan the bitmap from `first`, wrapping once: the last step sees
        // `first`'s own word again, for the bits below it.
        for step in 0..=(SLOTS / 64) {
            let word_index = (first / 64 + step) % (SLOTS / 64);
            let mut word = self.occupied[word_index];
            if step == 0 {
                word &= !0u64 << (first % 64);
            }
            if word != 0 {
                let slot = word_index * 64 + word.trailing_zeros() as usize;
                let distance = (slot + SLOTS - first) % SLOTS;
                return Some(self.instant_of(self.next + distance as u64));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn deadlines_expire_in_their_tick_and_not_before() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        w.insert(1u32, t0 + ms(25));
        w.insert(2u32, t0 + ms(15_000));
        w.insert(3u32, t0 + ms(45_000));
        let mut out = Vec::new();
        w.expire(t0 + ms(20), &mut out);
        assert!(out.is_empty());
        w.expire(t0 + ms(30), &mut out);
        assert_eq!(out.iter().map(|e| e.0).collect::<Vec<_>>(), [1]);
        out.clear();
        assert_eq!(w.next_deadline(), Some(t0 + ms(15_000)));
        w.expire(t0 + ms(14_990), &mut out);
        assert!(out.is_empty());
        w.expire(t0 + ms(15_000), &mut out);
        assert_eq!(out.iter().map(|e| e.0).collect::<Vec<_>>(), [2]);
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn an_entry_a_whole_turn_ahead_waits_for_its_own_turn() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        let turn = GRANULARITY * SLOTS as u32;
        // Same slot as tick 5, one turn later.
        w.insert(9u32, t0 + turn + ms(50));
        let mut out = Vec::new();
        w.expire(t0 + ms(60), &mut out);
        assert!(out.is_empty(), "not due in this turn");
        // The bitmap may wake us early for it, never late.
        assert!(w.next_deadline().is_some_and(|d| d <= t0 + turn + ms(50)));
        w.expire(t0 + turn + ms(50), &mut out);
        assert_eq!(out.iter().map(|e| e.0).collect::<Vec<_>>(), [9]);
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn a_long_stall_expires_everything_due_once() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        for i in 0..1000u32 {
            w.insert(i, t0 + ms(u64::from(i) * 37));
        }
        let mut out = Vec::new();
        // Two whole turns later: every slot is visited once, nothing lost.
        w.expire(t0 + GRANULARITY * (2 * SLOTS as u32), &mut out);
        let mut keys: Vec<u32> = out.iter().map(|e| e.0).collect();
        keys.sort_unstable();
        assert_eq!(keys, (0..1000).collect::<Vec<_>>());
        assert_eq!(w.len(), 0);
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn past_deadlines_fire_at_the_next_expiry_and_the_bitmap_finds_them() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        let mut out = Vec::new();
        w.expire(t0 + ms(1000), &mut out);
        let tick = w.insert(4u32, t0 + ms(10));
        assert_eq!(tick, w.tick_for(t0 + ms(1000)), "clamped to the first tick not expired");
        assert!(w.next_deadline().is_some_and(|d| d <= t0 + ms(1010)));
        w.expire(t0 + ms(1010), &mut out);
        assert_eq!(out, [(4, tick)]);
    }

    #[test]
    fn next_deadline_wraps_around_the_wheel() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        let mut out = Vec::new();
        // Move the wheel's position near the end of a turn.
        let late = GRANULARITY * (SLOTS as u32 - 3);
        w.expire(t0 + late, &mut out);
        let at = t0 + late + ms(50);
        w.insert(1u32, at);
        let next = w.next_deadline().expect("one entry");
        assert!(next <= at && at - next < GRANULARITY, "{:?}", at - next);
    }
}
