//! Token bucket rate limiting on caller-supplied time.

use std::time::{Duration, Instant};

/// A token bucket: `burst` tokens, refilled at `rate_per_sec`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Tokens scaled by 1,000,000 so refills stay exact in integers.
    micro_tokens: u64,
    capacity: u64,
    rate_per_sec: u64,
    last: Instant,
}

const SCALE: u64 = 1_000_000;

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(rate_per_sec: u32, burst: u32, now: Instant) -> Self {
        let capacity = u64::from(burst.max(1)) * SCALE;
        Self {
            micro_tokens: capacity,
            capacity,
            rate_per_sec: u64::from(rate_per_sec),
            last: now,
        }
    }

    /// Takes one token if available.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.micro_tokens >= SCALE {
            self.micro_tokens -= SCALE;
            true
        } else {
            false
        }
    }

    fn refill(&mut self, now: Instant) {
        const MAX_CREDIT: Duration = Duration::from_secs(3600);
        let elapsed = now.saturating_duration_since(self.last);
        let micros = elapsed.min(MAX_CREDIT).as_micros() as u64;
        if micros == 0 {
            return;
        }
        // Credit whole microseconds only and keep the remainder for the next
        // refill: moving `last` to `now` would drop the sub-microsecond part
        // every time, and a caller polling more often than once a
        // microsecond would never see a token.
        self.last = if elapsed >= MAX_CREDIT {
            now
        } else {
            self.last + Duration::from_micros(micros)
        };
        // rate tokens/s * micros µs = rate * micros micro-tokens.
        self.micro_tokens = (self.micro_tokens + self.rate_per_sec * micros).min(self.capacity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_at_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 3, t0);
        assert!(b.try_take(t0));
        assert!(b.try_take(t0));
        assert!(b.try_take(t0));
        assert!(!b.try_take(t0), "burst of 3 exhausted");
        assert!(!b.try_take(t0 + Duration::from_millis(99)));
        assert!(
            b.try_take(t0 + Duration::from_millis(100)),
            "one token per 100 ms at 10/s"
        );
        assert!(!b.try_take(t0 + Duration::from_millis(100)));
        // A long pause refills only up to the burst.
        let later = t0 + Duration::from_secs(60);
        assert!((0..3).all(|_| b.try_take(later)));
        assert!(!b.try_take(later));
    }
}
