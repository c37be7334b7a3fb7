//! Same-node against cross-node deliveries. When several targets are nodes
//! of one cluster, a message published on one node reaches subscribers on
//! that node directly and those on the others through the cluster's bus
//! (Redis, for Herald and for Socket.IO's adapter). A run counts and times
//! the two apart, so one report gives both latencies under the same load.
//!
//! Which target a connection talks to is the plan's
//! ([`Plan::target_of`](crate::plan::Plan::target_of)); this module only
//! keeps the tallies, merges them across workers and steps, and writes
//! them into the report.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::hist::Latency;
pub use crate::plan::Locality;

/// Expected and delivered messages of one side, and the latency of each
/// delivery.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Side {
    pub expected: u64,
    pub delivered: u64,
    pub latency: Latency,
}

impl Side {
    fn merge(&mut self, other: &Side) {
        self.expected += other.expected;
        self.delivered += other.delivered;
        self.latency.merge(&other.latency);
    }

    /// `{expected, delivered, lost, latency_us}`, with the histogram as
    /// `[us, count]` pairs when `histogram`.
    fn json(&self, histogram: bool) -> Value {
        let mut v = json!({
            "expected": self.expected,
            "delivered": self.delivered,
            "lost": self.expected.saturating_sub(self.delivered),
            "latency_us": self.latency.summary(),
        });
        if histogram {
            v["latency_histogram"] = json!(self.latency.to_pairs());
        }
        v
    }
}

/// A step's (or a run's) deliveries split by [`Locality`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Split {
    pub same_node: Side,
    pub cross_node: Side,
}

impl Split {
    pub fn side_mut(&mut self, at: Locality) -> &mut Side {
        match at {
            Locality::SameNode => &mut self.same_node,
            Locality::CrossNode => &mut self.cross_node,
        }
    }

    /// `n` more deliveries are expected on side `at`.
    pub fn expect(&mut self, at: Locality, n: u64) {
        self.side_mut(at).expected += n;
    }

    /// One delivery on side `at`, `us` after it was due.
    pub fn deliver(&mut self, at: Locality, us: u64) {
        let side = self.side_mut(at);
        side.delivered += 1;
        side.latency.record(us);
    }

    pub fn merge(&mut self, other: &Split) {
        self.same_node.merge(&other.same_node);
        self.cross_node.merge(&other.cross_node);
    }

    /// The report's `locality` object: `{same_node: {...}, cross_node:
    /// {...}}` (docs/LOADGEN.md, Report).
    pub fn json(&self, histograms: bool) -> Value {
        json!({
            "same_node": self.same_node.json(histograms),
            "cross_node": self.cross_node.json(histograms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_add_up_to_the_whole_and_merge_exactly() {
        // Two workers' tallies of one step: the merged split must have the
        // same percentiles as if one histogram per side had seen them all.
        let (mut a, mut b) = (Split::default(), Split::default());
        let (mut same, mut cross, mut all) = (Latency::new(), Latency::new(), Latency::new());
        a.expect(Locality::SameNode, 300);
        a.expect(Locality::CrossNode, 300);
        b.expect(Locality::SameNode, 200);
        b.expect(Locality::CrossNode, 200);
        for i in 0..500u64 {
            let (s, w) = (100 + i, if i % 2 == 0 { &mut a } else { &mut b });
            w.deliver(Locality::SameNode, s);
            same.record(s);
            all.record(s);
        }
        for i in 0..490u64 {
            let (c, w) = (2_000 + 7 * i, if i % 3 == 0 { &mut a } else { &mut b });
            w.deliver(Locality::CrossNode, c);
            cross.record(c);
            all.record(c);
        }
        // Through the wire form the workers use.
        let b: Split = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
        a.merge(&b);
        assert_eq!((a.same_node.expected, a.same_node.delivered), (500, 500));
        assert_eq!((a.cross_node.expected, a.cross_node.delivered), (500, 490));
        assert_eq!(a.same_node.latency.summary(), same.summary());
        assert_eq!(a.cross_node.latency.summary(), cross.summary());
        let mut whole = a.same_node.latency.clone();
        whole.merge(&a.cross_node.latency);
        assert_eq!(whole.summary(), all.summary(), "the two sides are the whole");

        let j = a.json(false);
        assert_eq!(j["cross_node"]["lost"], 10);
        assert_eq!(j["same_node"]["lost"], 0);
        assert_eq!(j["cross_node"]["latency_us"]["count"], 490);
        assert_eq!(j["same_node"]["latency_us"]["p50"], same.quantile(0.5));
        assert_eq!(j["cross_node"]["latency_us"]["p999"], cross.quantile(0.999));
        assert!(j["same_node"].get("latency_histogram").is_none());
        let h = a.json(true);
        assert_eq!(h["cross_node"]["latency_histogram"], json!(cross.to_pairs()));
    }

    #[test]
    fn an_empty_side_reports_no_latency_and_no_loss() {
        let mut s = Split::default();
        s.expect(Locality::SameNode, 2);
        s.deliver(Locality::SameNode, 5);
        s.deliver(Locality::SameNode, 5);
        let j = s.json(true);
        assert_eq!(j["cross_node"]["expected"], 0);
        assert_eq!(j["cross_node"]["lost"], 0);
        assert!(j["cross_node"]["latency_us"].is_null());
        assert_eq!(j["cross_node"]["latency_histogram"], json!([]));
        assert_eq!(j["same_node"]["latency_us"]["count"], 2);
    }
}
