//! Latency histograms: HdrHistogram with 3 significant digits, in
//! microseconds, mergeable across steps and worker processes.

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Longest latency recorded exactly; longer ones are clamped to it (a
/// minute is far beyond any step's drain window).
const MAX_US: u64 = 60_000_000;

/// A latency histogram in microseconds. Serialized as its `[value_us,
/// count]` pairs (what workers send the coordinator).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(into = "Vec<(u64, u64)>", from = "Vec<(u64, u64)>")]
pub struct Latency(Histogram<u64>);

impl From<Latency> for Vec<(u64, u64)> {
    fn from(h: Latency) -> Self {
        h.to_pairs()
    }
}

impl From<Vec<(u64, u64)>> for Latency {
    fn from(pairs: Vec<(u64, u64)>) -> Self {
        Latency::from_pairs(&pairs)
    }
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    pub fn new() -> Self {
        // Bounds are constants that HdrHistogram accepts (low 1, high ≥ 2).
        match Histogram::new_with_bounds(1, MAX_US, 3) {
            Ok(h) => Self(h),
            Err(_) => unreachable!("constant histogram bounds are valid"),
        }
    }

    /// Records one latency; 0 counts as 1 µs, beyond a minute as a minute.
    pub fn record(&mut self, us: u64) {
        self.0.saturating_record(us.clamp(1, MAX_US));
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    pub fn quantile(&self, q: f64) -> u64 {
        if self.0.is_empty() {
            0
        } else {
            self.0.value_at_quantile(q)
        }
    }

    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides, so adding cannot fail; saturate anyway.
        for v in other.0.iter_recorded() {
            let _ = self.0.record_n(v.value_iterated_to(), v.count_at_value());
        }
    }

    pub fn reset(&mut self) {
        self.0.reset();
    }

    /// Recorded values as `[value_us, count]` pairs, ascending: the form
    /// workers send to the coordinator and reports keep for their charts.
    pub fn to_pairs(&self) -> Vec<(u64, u64)> {
        self.0
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect()
    }

    pub fn from_pairs(pairs: &[(u64, u64)]) -> Self {
        let mut h = Self::new();
        for &(v, n) in pairs {
            let _ = h.0.record_n(v.clamp(1, MAX_US), n);
        }
        h
    }

    /// `{count, p50, p90, p99, p999, p9999, max, mean}`, or null when empty.
    pub fn summary(&self) -> Value {
        if self.0.is_empty() {
            return Value::Null;
        }
        json!({
            "count": self.0.len(),
            "p50": self.quantile(0.5),
            "p90": self.quantile(0.9),
            "p99": self.quantile(0.99),
            "p999": self.quantile(0.999),
            "p9999": self.quantile(0.9999),
            "max": self.0.max(),
            "mean": (self.0.mean() * 10.0).round() / 10.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_two_halves_gives_the_whole() {
        let mut whole = Latency::new();
        let (mut a, mut b) = (Latency::new(), Latency::new());
        for v in 1..=10_000u64 {
            whole.record(v * 7);
            if v % 2 == 0 { a.record(v * 7) } else { b.record(v * 7) }
        }
        a.merge(&b);
        assert_eq!(a.count(), 10_000);
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(a.quantile(q), whole.quantile(q), "q={q}");
        }
    }

    #[test]
    fn pairs_round_trip_keeps_every_percentile() {
        let mut h = Latency::new();
        for v in [3, 3, 40, 500, 6_000, 70_000, 800_000, 59_000_000] {
            h.record(v);
        }
        let back = Latency::from_pairs(&h.to_pairs());
        assert_eq!(back.count(), 8);
        assert_eq!(back.summary(), h.summary());
    }

    #[test]
    fn out_of_range_values_are_clamped_not_lost() {
        let mut h = Latency::new();
        h.record(0);
        h.record(u64::MAX);
        assert_eq!(h.count(), 2);
        assert_eq!(h.quantile(0.0), 1);
        assert!(h.quantile(1.0) >= MAX_US);
    }

    #[test]
    fn empty_summary_is_null() {
        assert_eq!(Latency::new().summary(), Value::Null);
    }
}
