//! Analytics events as clients and backends send them: the bounds every
//! event is held to (whichever way it came), the `POST /api/events` body,
//! and the JSON of per-minute rollups. The storage service keeps the events
//! and folds them into rollups ([`AnalyticsEvent`], [`Rollup`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use herald_protocol::wire;
use herald_storage::{AnalyticsEvent, Rollup};
use serde::Deserialize;
use serde_json::{Value, json};

/// Longest event name, in bytes.
pub(crate) const MAX_NAME: usize = 128;
/// Most dimensions (tags) of one event.
pub(crate) const MAX_DIMENSIONS: usize = 16;
/// Longest dimension key or value, in bytes.
pub(crate) const MAX_DIMENSION_BYTES: usize = 128;
/// Most events in one `POST /api/events`.
pub(crate) const MAX_BATCH: usize = 1_000;
/// Widest rollup range one request may read (7 days of minutes: ~10,000
/// rows at most).
pub(crate) const MAX_ROLLUP_RANGE_MS: u64 = 7 * 24 * 3600 * 1000;
/// How far ahead of the node's clock a backend's `timestamp_ms` may be
/// (clock skew; an event from the future would distort every rollup).
const MAX_FUTURE_MS: u64 = 24 * 3600 * 1000;

/// Why an event is refused (the message names the bound).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Invalid(String);

/// An event name: 1 to [`MAX_NAME`] bytes without control characters (it
/// ends up in URLs and dashboards).
pub(crate) fn check_name(name: &str) -> Result<(), Invalid> {
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(Invalid(format!(
            "event names are 1-{MAX_NAME} bytes without control characters"
        )));
    }
    Ok(())
}

/// Checks one event's name, value and dimensions and makes it storable.
pub(crate) fn event(
    name: &str,
    value: f64,
    tags: Vec<(String, String)>,
    timestamp_ms: u64,
) -> Result<AnalyticsEvent, Invalid> {
    check_name(name)?;
    if !value.is_finite() {
        // A NaN or an infinity would poison the minute's sum, min and max.
        return Err(Invalid("the value must be a finite number".into()));
    }
    if tags.len() > MAX_DIMENSIONS {
        return Err(Invalid(format!("at most {MAX_DIMENSIONS} dimensions")));
    }
    if tags
        .iter()
        .any(|(k, v)| k.is_empty() || k.len() > MAX_DIMENSION_BYTES || v.len() > MAX_DIMENSION_BYTES)
    {
        return Err(Invalid(format!(
            "dimension keys are 1-{MAX_DIMENSION_BYTES} bytes and values at most {MAX_DIMENSION_BYTES}"
        )));
    }
    Ok(AnalyticsEvent {
        name: Arc::from(name),
        value,
        tags,
        timestamp_ms,
    })
}

/// An `AnalyticsEvent` frame, stamped with the node's time.
pub(crate) fn from_frame(e: wire::AnalyticsEventT, now_ms: u64) -> Result<AnalyticsEvent, Invalid> {
    let tags = e
        .dimensions
        .unwrap_or_default()
        .into_iter()
        .map(|kv| (kv.key, kv.value.unwrap_or_default()))
        .collect();
    event(&e.name, e.value, tags, now_ms)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventBody {
    name: String,
    #[serde(default = "one")]
    value: f64,
    #[serde(default, alias = "dimensions")]
    tags: BTreeMap<String, String>,
    timestamp_ms: Option<u64>,
}

fn one() -> f64 {
    1.0
}

/// Why a `POST /api/events` body is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BatchError {
    /// Not a JSON array of events.
    Malformed(String),
    /// More than [`MAX_BATCH`] events.
    TooMany(usize),
    /// Event `index` breaks a bound.
    Invalid { index: usize, why: Invalid },
}

/// Parses `POST /api/events`: `[{"name", "value"?, "tags"?, "timestamp_ms"?}]`.
/// Events without a timestamp get `now_ms`.
pub(crate) fn parse_batch(body: &[u8], now_ms: u64) -> Result<Vec<AnalyticsEvent>, BatchError> {
    let raw: Vec<Value> = serde_json::from_slice(body)
        .map_err(|e| BatchError::Malformed(format!("expected a JSON array of events: {e}")))?;
    if raw.len() > MAX_BATCH {
        return Err(BatchError::TooMany(raw.len()));
    }
    raw.into_iter()
        .enumerate()
        .map(|(index, v)| {
            let invalid = |why: Invalid| BatchError::Invalid { index, why };
            let e: EventBody = serde_json::from_value(v).map_err(|e| invalid(Invalid(e.to_string())))?;
            let at = e.timestamp_ms.unwrap_or(now_ms);
            if at > now_ms.saturating_add(MAX_FUTURE_MS) {
                return Err(invalid(Invalid(
                    "timestamp_ms is more than a day ahead of the node's clock".into(),
                )));
            }
            event(&e.name, e.value, e.tags.into_iter().collect(), at).map_err(invalid)
        })
        .collect()
}

/// `GET /api/events/{name}/rollups`' answer: `{"rollups": [...]}`, oldest
/// minute first.
pub(crate) fn rollups_json(rollups: &[Rollup]) -> Value {
    let rows: Vec<Value> = rollups
        .iter()
        .map(|r| json!({"minute_ms": r.minute_ms, "count": r.count, "sum": r.sum, "min": r.min, "max": r.max}))
        .collect();
    json!({ "rollups": rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_values_and_dimensions_are_bounded() {
        assert!(event("page.view", 1.0, vec![], 0).is_ok());
        assert!(event("", 1.0, vec![], 0).is_err());
        assert!(event(&"n".repeat(MAX_NAME), 1.0, vec![], 0).is_ok());
        assert!(event(&"n".repeat(MAX_NAME + 1), 1.0, vec![], 0).is_err());
        assert!(event("a\nb", 1.0, vec![], 0).is_err());
        assert!(event("n", f64::NAN, vec![], 0).is_err());
        assert!(event("n", f64::INFINITY, vec![], 0).is_err());
        let tag = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let many: Vec<_> = (0..=MAX_DIMENSIONS).map(|i| tag(&i.to_string(), "v")).collect();
        assert!(event("n", 1.0, many[..MAX_DIMENSIONS].to_vec(), 0).is_ok());
        assert!(event("n", 1.0, many, 0).is_err());
        assert!(event("n", 1.0, vec![tag("", "v")], 0).is_err());
        assert!(event("n", 1.0, vec![tag(&"k".repeat(129), "v")], 0).is_err());
        assert!(event("n", 1.0, vec![tag("k", &"v".repeat(129))], 0).is_err());
    }

    #[test]
    fn a_batch_defaults_value_and_time_and_names_the_bad_event() {
        let now = 1_000_000;
        let ok = parse_batch(
            br#"[{"name":"a"},{"name":"b","value":2.5,"tags":{"k":"v"},"timestamp_ms":5}]"#,
            now,
        )
        .unwrap();
        assert_eq!((ok[0].value, ok[0].timestamp_ms), (1.0, now));
        assert_eq!((ok[1].value, ok[1].timestamp_ms), (2.5, 5));
        assert_eq!(ok[1].tags, [("k".to_owned(), "v".to_owned())]);
        assert!(matches!(parse_batch(b"{}", now), Err(BatchError::Malformed(_))));
        assert!(matches!(parse_batch(b"[", now), Err(BatchError::Malformed(_))));
        let bad = br#"[{"name":"a"},{"name":""}]"#;
        assert!(matches!(
            parse_batch(bad, now),
            Err(BatchError::Invalid { index: 1, .. })
        ));
        let unknown = br#"[{"name":"a","colour":"red"}]"#;
        assert!(matches!(
            parse_batch(unknown, now),
            Err(BatchError::Invalid { index: 0, .. })
        ));
        let future = format!(r#"[{{"name":"a","timestamp_ms":{}}}]"#, now + MAX_FUTURE_MS + 1);
        assert!(matches!(
            parse_batch(future.as_bytes(), now),
            Err(BatchError::Invalid { .. })
        ));
        let many = format!("[{}]", vec![r#"{"name":"a"}"#; MAX_BATCH + 1].join(","));
        assert_eq!(
            parse_batch(many.as_bytes(), now),
            Err(BatchError::TooMany(MAX_BATCH + 1))
        );
    }
}
