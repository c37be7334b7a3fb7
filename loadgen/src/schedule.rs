//! Open-loop schedules: when each message is due, fixed in advance from the
//! rate alone. Nothing here waits for the target, so a target that stalls
//! cannot slow the schedule down; latency is measured from these times
//! (no coordinated omission).

use std::time::Duration;

/// One step or phase: the rate goes linearly from `from` to `to` msgs/s
/// over `duration` (equal for a steady step).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Step {
    pub name: String,
    pub duration: Duration,
    pub from: f64,
    pub to: f64,
}

impl Step {
    pub fn steady(rate: f64, duration: Duration) -> Self {
        Self {
            name: format!("{}/s", fmt_rate(rate)),
            duration,
            from: rate,
            to: rate,
        }
    }

    /// Messages the step sends: the area under the rate line.
    pub fn count(&self) -> u64 {
        let area = (self.from.max(0.0) + self.to.max(0.0)) / 2.0 * self.duration.as_secs_f64();
        // The last message must fall inside the step: message k is due when
        // k messages' worth of rate has passed, so k < area.
        if area <= 0.0 { 0 } else { area.ceil() as u64 }
    }

    /// Mean rate over the step.
    pub fn mean_rate(&self) -> f64 {
        (self.from.max(0.0) + self.to.max(0.0)) / 2.0
    }

    /// When message `k` (0-based) is due, from the step's start: the time
    /// `t` at which `k` messages' worth of rate has passed, so message 0 is
    /// due at once. `None` past the end of the step.
    pub fn due(&self, k: u64) -> Option<Duration> {
        if k >= self.count() {
            return None;
        }
        let d = self.duration.as_secs_f64();
        let (a, b) = (self.from.max(0.0), self.to.max(0.0));
        let n = k as f64;
        // N(t) = a t + c t², c = (b - a) / 2d. Solve N(t) = n with the
        // cancellation-free form of the quadratic root (also right for c = 0).
        let c = (b - a) / (2.0 * d);
        let disc = (a * a + 4.0 * c * n).max(0.0);
        let denom = a + disc.sqrt();
        let t = if denom > 0.0 { 2.0 * n / denom } else { 0.0 };
        Some(Duration::from_secs_f64(t.clamp(0.0, d)))
    }
}

/// "1000", "2.5", "1e6" → msgs/s for step names.
pub fn fmt_rate(rate: f64) -> String {
    if rate.fract() == 0.0 && rate.abs() < 1e15 {
        format!("{}", rate as i64)
    } else {
        format!("{rate:.2}")
    }
}

/// SplitMix64: a stateless mix so every worker derives the same choice for
/// message `k` from (seed, k) without sharing generator state.
pub fn mix(seed: u64, k: u64) -> u64 {
    let mut z = seed ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(d: Duration) -> f64 {
        d.as_secs_f64()
    }

    #[test]
    fn steady_rate_spaces_messages_evenly() {
        let s = Step::steady(100.0, Duration::from_secs(2));
        assert_eq!(s.count(), 200);
        assert_eq!(s.due(0), Some(Duration::ZERO));
        assert!((secs(s.due(1).unwrap()) - 0.01).abs() < 1e-9);
        assert!((secs(s.due(199).unwrap()) - 1.99).abs() < 1e-9);
        assert_eq!(s.due(200), None);
    }

    #[test]
    fn ramp_up_sends_the_area_and_speeds_up() {
        // 0 → 100 msgs/s over 10 s: 500 messages, the first half of them in
        // the last ~2.9 s (N(t) = 5 t²).
        let s = Step {
            name: "ramp".into(),
            duration: Duration::from_secs(10),
            from: 0.0,
            to: 100.0,
        };
        assert_eq!(s.count(), 500);
        assert!((secs(s.due(250).unwrap()) - 250f64.sqrt() / 5f64.sqrt()).abs() < 1e-9);
        let gaps: Vec<f64> = (1..500)
            .map(|k| secs(s.due(k).unwrap()) - secs(s.due(k - 1).unwrap()))
            .collect();
        assert!(
            gaps.windows(2).all(|w| w[1] <= w[0] + 1e-12),
            "gaps must shrink as the rate rises"
        );
        assert!(secs(s.due(499).unwrap()) < 10.0);
    }

    #[test]
    fn ramp_down_mirrors_ramp_up() {
        let s = Step {
            name: "down".into(),
            duration: Duration::from_secs(4),
            from: 200.0,
            to: 0.0,
        };
        assert_eq!(s.count(), 400);
        let times: Vec<f64> = (0..400).map(|k| secs(s.due(k).unwrap())).collect();
        assert!(times.windows(2).all(|w| w[1] >= w[0]));
        // Half the messages go out in the first (1 - 1/√2) of the step.
        assert!((times[200] - 4.0 * (1.0 - 0.5f64.sqrt())).abs() < 1e-6);
    }

    #[test]
    fn zero_rate_sends_nothing() {
        let s = Step::steady(0.0, Duration::from_secs(5));
        assert_eq!(s.count(), 0);
        assert_eq!(s.due(0), None);
    }

    #[test]
    fn mix_is_deterministic_and_spreads() {
        assert_eq!(mix(42, 7), mix(42, 7));
        assert_ne!(mix(42, 7), mix(43, 7));
        let mut buckets = [0u32; 10];
        for k in 0..10_000 {
            buckets[(mix(1, k) % 10) as usize] += 1;
        }
        assert!(buckets.iter().all(|&b| (900..1100).contains(&b)), "{buckets:?}");
    }
}
