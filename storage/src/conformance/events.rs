//! Checks of [`EventStore`](crate::EventStore).

use std::sync::Arc;

use super::{Names, base_ms, ok};
use crate::{AnalyticsEvent, Rollup, Storage};

const MINUTE: u64 = 60_000;
const DAY: u64 = 24 * 60 * MINUTE;

fn event(name: &Arc<str>, timestamp_ms: u64, value: f64) -> AnalyticsEvent {
    AnalyticsEvent {
        name: name.clone(),
        value,
        tags: vec![("page".into(), format!("/p/{timestamp_ms}"))],
        timestamp_ms,
    }
}

fn append(storage: &Storage, batch: &[AnalyticsEvent]) {
    ok(storage.events.append(batch), "append");
    ok(storage.events.sync(), "sync");
}

fn events(storage: &Storage, name: &str, from_ms: u64, to_ms: u64, limit: usize) -> Vec<AnalyticsEvent> {
    ok(storage.events.events(name, from_ms, to_ms, limit), "events")
}

fn rollups(storage: &Storage, name: &str, from_ms: u64, to_ms: u64) -> Vec<Rollup> {
    ok(storage.events.rollups(name, from_ms, to_ms), "rollups")
}

/// Raw events by name and `[from, to)`, oldest first; other names (even
/// one the name is a prefix of) never mixed in.
pub fn events_by_name_and_time(storage: &Storage) {
    let n = Names::new("events-raw");
    let (a, ab) = (n.name("a"), n.name("ab"));
    let base = base_ms();
    let mut tagged = event(&a, base + 2000, 4.0);
    tagged.tags = vec![
        ("k".into(), "v".into()),
        ("".into(), "é".into()),
        ("k".into(), "v2".into()),
    ];
    tagged.tags.push(("empty".into(), String::new()));
    let untagged = AnalyticsEvent {
        tags: Vec::new(),
        ..event(&a, base + 1000, 2.0)
    };
    append(
        storage,
        &[
            tagged.clone(),
            event(&a, base + 1000, 1.0),
            event(&ab, base + 500, 9.0),
            event(&a, base, 0.5),
        ],
    );
    append(storage, &[untagged.clone(), event(&a, base + 3000, 5.0)]);

    let found = events(storage, &a, base, base + 3000, 100);
    let times: Vec<u64> = found.iter().map(|e| e.timestamp_ms).collect();
    assert_eq!(
        times,
        vec![base, base + 1000, base + 1000, base + 2000],
        "oldest first, to excluded"
    );
    assert!(found.iter().all(|e| e.name == a), "only the name asked for");
    assert!(found.contains(&untagged), "events of one millisecond are all kept");
    assert!(found.contains(&event(&a, base + 1000, 1.0)));
    assert_eq!(found[3], tagged, "tags round trip in order");
    assert_eq!(
        events(storage, &a, base + 1000, base + 1001, 100).len(),
        2,
        "one millisecond"
    );
    assert_eq!(events(storage, &a, base, u64::MAX, 2).len(), 2, "limit");
    assert_eq!(events(storage, &a, base, u64::MAX, 100).len(), 5);
    assert_eq!(
        events(storage, &ab, 0, u64::MAX, 100),
        vec![event(&ab, base + 500, 9.0)]
    );
    assert!(
        events(storage, &a, base + 3000, base + 3000, 100).is_empty(),
        "an empty span"
    );
    assert!(
        events(storage, &a, base + 3000, base, 100).is_empty(),
        "an inverted span"
    );
    assert!(
        events(storage, &n.name("none"), 0, u64::MAX, 100).is_empty(),
        "an unknown name"
    );
    ok(storage.events.append(&[]), "an empty batch");
}

/// Rollups per minute: count, sum, min and max across batches; minutes
/// without events absent.
pub fn events_rollups(storage: &Storage) {
    let n = Names::new("events-rollups");
    let (a, b) = (n.name("a"), n.name("b"));
    let m = base_ms();
    append(
        storage,
        &[
            event(&a, m + 1000, 1.0),
            event(&a, m + MINUTE - 1, 5.0),
            event(&a, m + 2 * MINUTE, 3.0),
        ],
    );
    append(
        storage,
        &[event(&a, m + 30_000, -2.0), event(&a, m + 2 * MINUTE + 1, 10.0)],
    );
    append(storage, &[event(&b, m, 100.0), event(&a, m + 30_000, 0.0)]);
    let first = Rollup {
        minute_ms: m,
        count: 4,
        sum: 4.0,
        min: -2.0,
        max: 5.0,
    };
    let third = Rollup {
        minute_ms: m + 2 * MINUTE,
        count: 2,
        sum: 13.0,
        min: 3.0,
        max: 10.0,
    };
    assert_eq!(
        rollups(storage, &a, m, m + 10 * MINUTE),
        vec![first, third],
        "the empty minute is absent"
    );
    assert_eq!(
        rollups(storage, &a, m + 1, m + 2 * MINUTE),
        vec![],
        "minutes starting in [from, to)"
    );
    assert_eq!(rollups(storage, &a, m + MINUTE, m + 2 * MINUTE + 1), vec![third]);
    assert_eq!(rollups(storage, &a, m, m + 1), vec![first]);
    assert_eq!(rollups(storage, &a, m, m), vec![], "an empty span");
    let only_b = Rollup {
        minute_ms: m,
        count: 1,
        sum: 100.0,
        min: 100.0,
        max: 100.0,
    };
    assert_eq!(
        rollups(storage, &b, 0, u64::MAX),
        vec![only_b],
        "names keep their own rollups"
    );
    assert!(rollups(storage, &n.name("none"), 0, u64::MAX).is_empty());
}

/// Trim removes raw events older than the bound; rollups stay.
pub fn events_trim_keeps_rollups(storage: &Storage) {
    let n = Names::new("events-trim");
    let a = n.name("a");
    let m = base_ms();
    let old = [
        event(&a, m - 2 * DAY, 1.0),
        event(&a, m - 2 * DAY + 1, 2.0),
        event(&a, m - DAY - 1, 3.0),
    ];
    append(storage, &old);
    append(storage, &[event(&a, m - DAY, 4.0), event(&a, m, 5.0)]);
    assert_eq!(events(storage, &a, 0, u64::MAX, 100).len(), 5);
    let removed = ok(storage.events.trim(m - DAY), "trim");
    assert!(removed >= 3, "trim removed {removed} events, 3 of them this check's");
    let left: Vec<u64> = events(storage, &a, 0, u64::MAX, 100)
        .iter()
        .map(|e| e.timestamp_ms)
        .collect();
    assert_eq!(left, vec![m - DAY, m], "the bound itself is kept");
    let minutes: Vec<(u64, u64)> = rollups(storage, &a, 0, u64::MAX)
        .iter()
        .map(|r| (r.minute_ms, r.count))
        .collect();
    let want = vec![
        (m - 2 * DAY, 2),
        (Rollup::minute_of(m - DAY - 1), 1),
        (m - DAY, 1),
        (m, 1),
    ];
    assert_eq!(minutes, want, "rollups outlive raw events");
}
