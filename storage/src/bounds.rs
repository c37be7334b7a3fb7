//! Range arithmetic every backend shares, so they agree on the edges.

use herald_protocol::owner::ReadRange;

/// The offsets a [`ReadRange`] covers as `(first, end)`: `first` inclusive,
/// `end` exclusive (None: unbounded). None when the range is empty, so no
/// backend ever builds an inverted range (`BTreeMap::range` would panic).
pub(crate) fn offsets(range: &ReadRange) -> Option<(u64, Option<u64>)> {
    let first = range.after.checked_add(1)?;
    match range.before {
        0 => Some((first, None)),
        end if end > first => Some((first, Some(end))),
        _ => None,
    }
}

/// `[from, to)` as a non-empty half-open interval, or None.
pub(crate) fn span(from: u64, to: u64) -> Option<(u64, u64)> {
    (from < to).then_some((from, to))
}

/// The oldest timestamp `max_age` keeps at `now_ms` (None: no bound).
pub(crate) fn age_cutoff(max_age: Option<std::time::Duration>, now_ms: u64) -> Option<u64> {
    max_age.map(|age| now_ms.saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(after: u64, before: u64) -> ReadRange {
        ReadRange {
            after,
            before,
            limit: 10,
            newest: false,
        }
    }

    #[test]
    fn empty_and_edge_ranges() {
        assert_eq!(offsets(&range(0, 0)), Some((1, None)));
        assert_eq!(offsets(&range(3, 5)), Some((4, Some(5))));
        assert_eq!(offsets(&range(3, 4)), None);
        assert_eq!(offsets(&range(5, 3)), None);
        assert_eq!(offsets(&range(u64::MAX, 0)), None);
        assert_eq!(offsets(&range(0, 1)), None);
        assert_eq!(span(5, 5), None);
        assert_eq!(age_cutoff(Some(std::time::Duration::from_secs(10)), 5_000), Some(0));
        assert_eq!(age_cutoff(None, 5_000), None);
    }
}
