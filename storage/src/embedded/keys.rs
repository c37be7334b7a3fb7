//! The key layouts of the embedded backend.
//!
//! fjall orders keys bytewise and reads ranges and prefixes cheaply, so each
//! key is built for the scans its store makes:
//!
//! | keyspace        | key                                          | value                 |
//! |-----------------|----------------------------------------------|-----------------------|
//! | `messages`      | name(room) ‖ epoch BE ‖ offset BE            | a message             |
//! | `room_heads`    | room                                         | a [`RoomHead`]        |
//! | `notifications` | name(user) ‖ id BE                           | a notification        |
//! | `inboxes`       | user                                         | read mark, unread     |
//! | `events`        | name(event) ‖ timestamp BE ‖ seq BE          | value and tags        |
//! | `event_names`   | event name                                   | empty                 |
//! | `rollups`       | name(event) ‖ minute BE                      | a [`Rollup`]          |
//! | `meta`          | a fixed word                                 | counters              |
//!
//! `name(x)` is x's length as a big-endian u16, then its bytes. Without the
//! length, a room `a` would be a prefix of a room `ab`, and a prefix scan of
//! `a` (or a range up to `a`'s largest offset) would walk into `ab`'s
//! messages; with it, `name(a)` is a prefix of no other name's key, so a
//! prefix scan finds exactly one room, whatever bytes names contain (a NUL
//! separator would not be safe: names may contain NUL). Numbers are
//! big-endian so bytewise order is numeric order: a room's messages lie in
//! one contiguous run, oldest first, and "after 40", "before 90" or "the
//! newest 50" are single range scans. The epoch sits before the offset, so
//! each epoch is its own run and an old epoch's leftovers are never read as
//! the current one's.
//!
//! Keys that are a whole name (`room_heads`, `inboxes`, `event_names`) need
//! no length: their bytewise order is the names' order, which is what
//! `rooms()` and `users()` page through.
//!
//! [`RoomHead`]: crate::RoomHead
//! [`Rollup`]: crate::Rollup

use crate::{StorageError, StorageResult};

use super::codec::corrupt;

/// Longest room, user or event name the backend stores, in bytes: the
/// length prefix is a u16, and fjall keys stay far below their 64 KiB limit.
pub(super) const MAX_NAME_BYTES: usize = 4096;

/// A key under construction.
#[derive(Debug)]
pub(super) struct Key(Vec<u8>);

impl Key {
    /// Starts a key with `name(name)`.
    pub(super) fn named(name: &str) -> StorageResult<Self> {
        let len = u16::try_from(name.len())
            .ok()
            .filter(|&n| usize::from(n) <= MAX_NAME_BYTES)
            .ok_or_else(|| {
                StorageError::Invalid(format!(
                    "name of {} bytes, at most {MAX_NAME_BYTES} are stored",
                    name.len()
                ))
            })?;
        let mut key = Vec::with_capacity(2 + name.len() + 16);
        key.extend_from_slice(&len.to_be_bytes());
        key.extend_from_slice(name.as_bytes());
        Ok(Self(key))
    }

    pub(super) fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    pub(super) fn finish(self) -> Vec<u8> {
        self.0
    }
}

/// Checks a whole-name key's name, so every store rejects the same names.
pub(super) fn check_name(name: &str) -> StorageResult<()> {
    Key::named(name).map(|_| ())
}

/// The big-endian u64s after a key's `prefix_len` bytes of prefix.
pub(super) fn suffix<const N: usize>(key: &[u8], prefix_len: usize, what: &'static str) -> StorageResult<[u64; N]> {
    let rest = key
        .get(prefix_len..)
        .filter(|rest| rest.len() == N * 8)
        .ok_or_else(|| corrupt(what, "key of the wrong length"))?;
    let mut out = [0u64; N];
    for (v, chunk) in out.iter_mut().zip(rest.chunks_exact(8)) {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(chunk);
        *v = u64::from_be_bytes(raw);
    }
    Ok(out)
}

/// A whole-name key back as a name.
pub(super) fn name(key: &[u8], what: &'static str) -> StorageResult<std::sync::Arc<str>> {
    std::str::from_utf8(key)
        .map(std::sync::Arc::from)
        .map_err(|_| corrupt(what, "name not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_never_a_prefix_of_another_names_keys() {
        let a = Key::named("a").unwrap().u64(u64::MAX).u64(u64::MAX).finish();
        let ab = Key::named("ab").unwrap().u64(0).u64(0).finish();
        let prefix_a = Key::named("a").unwrap().finish();
        assert!(a.starts_with(&prefix_a));
        assert!(!ab.starts_with(&prefix_a));
    }

    #[test]
    fn numbers_sort_numerically() {
        let k = |o| Key::named("r").unwrap().u64(1).u64(o).finish();
        assert!(k(255) < k(256));
        assert!(k(1) < k(u64::MAX));
        assert_eq!(suffix::<2>(&k(256), 3, "t").unwrap(), [1, 256]);
        assert!(suffix::<2>(&k(256)[..18], 3, "t").is_err());
    }

    #[test]
    fn long_names_are_invalid() {
        assert!(Key::named(&"x".repeat(MAX_NAME_BYTES)).is_ok());
        assert!(matches!(
            Key::named(&"x".repeat(MAX_NAME_BYTES + 1)),
            Err(StorageError::Invalid(_))
        ));
    }
}
