//! Checks of [`RoomLog`](crate::RoomLog).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use herald_protocol::owner::{ReadPage, ReadRange, Stored};

use super::{Names, base_ms, list_run, ok};
use crate::{LogEntry, Retention, RoomHead, Storage};

fn message(offset: u64, timestamp_ms: u64) -> Stored {
    Stored {
        offset,
        publisher: Arc::from("ann"),
        timestamp_ms,
        payload: Bytes::from(format!("message {offset}")),
        content_type: Some(Arc::from("text/plain")),
    }
}

fn entry(room: &Arc<str>, epoch: u64, message: Stored) -> LogEntry {
    LogEntry {
        room: room.clone(),
        epoch,
        message,
    }
}

/// Appends offsets `from..=to` of `room`, `batch` per call, timestamps
/// `base + offset * 1000`, then syncs.
fn fill(storage: &Storage, room: &Arc<str>, epoch: u64, from: u64, to: u64, base: u64) {
    let entries: Vec<_> = (from..=to)
        .map(|o| entry(room, epoch, message(o, base + o * 1000)))
        .collect();
    for chunk in entries.chunks(10) {
        ok(storage.log.append(chunk), "append");
    }
    ok(storage.log.sync(), "sync");
}

fn range(after: u64, before: u64, limit: usize, newest: bool) -> ReadRange {
    ReadRange {
        after,
        before,
        limit,
        newest,
    }
}

fn read(storage: &Storage, room: &str, epoch: u64, range: ReadRange) -> ReadPage {
    ok(storage.log.read(room, epoch, range), "read")
}

fn offsets(page: &ReadPage) -> Vec<u64> {
    page.messages.iter().map(|m| m.offset).collect()
}

fn head(storage: &Storage, room: &str) -> Option<RoomHead> {
    ok(storage.log.head(room), "head")
}

#[track_caller]
fn assert_page(page: &ReadPage, expected: impl IntoIterator<Item = u64>, complete: bool, more: bool, what: &str) {
    let expected: Vec<u64> = expected.into_iter().collect();
    assert_eq!(offsets(page), expected, "{what}: offsets");
    assert_eq!(page.complete, complete, "{what}: complete");
    assert_eq!(page.more, more, "{what}: more");
}

/// Batches across rooms advance each room's head; reads return exactly
/// what was appended; a room named like a prefix of another stays apart.
pub fn room_log_append_and_head(storage: &Storage) {
    let n = Names::new("append");
    let (a, ab, b, never) = (n.name("a"), n.name("ab"), n.name("b"), n.name("never"));
    assert_eq!(head(storage, &a), None, "a room never stored has no head");
    let base = base_ms();
    let batch = vec![
        entry(&a, 1, message(1, base)),
        entry(&ab, 1, message(1, base)),
        entry(&b, 7, message(1, base + 1)),
        entry(&a, 1, message(2, base + 2)),
        entry(&b, 7, message(2, base + 3)),
        entry(&b, 7, message(3, base + 4)),
    ];
    ok(storage.log.append(&batch), "append");
    ok(storage.log.sync(), "sync");
    let expect = |epoch, last_offset| {
        Some(RoomHead {
            epoch,
            last_offset,
            trimmed_through: 0,
        })
    };
    assert_eq!(head(storage, &a), expect(1, 2));
    assert_eq!(head(storage, &ab), expect(1, 1));
    assert_eq!(head(storage, &b), expect(7, 3));
    assert_eq!(head(storage, &never), None);

    ok(storage.log.append(&[entry(&a, 1, message(3, base + 5))]), "append");
    assert_eq!(head(storage, &a), expect(1, 3), "a second batch advances the head");

    let all = range(0, 0, 100, true);
    let page = read(storage, &a, 1, all);
    let want: Vec<Stored> = vec![message(1, base), message(2, base + 2), message(3, base + 5)];
    assert_eq!(page.messages, want, "room a reads back exactly what was appended");
    assert!(page.complete && !page.more);
    let page = read(storage, &ab, 1, all);
    assert_eq!(
        page.messages,
        vec![message(1, base)],
        "room ab holds only its own message"
    );
    assert_page(&read(storage, &b, 7, all), [1, 2, 3], true, false, "room b");
    ok(storage.log.append(&[]), "an empty batch");
}

/// The last N (after 0, before 0, newest) and the first N.
pub fn room_log_read_newest(storage: &Storage) {
    let n = Names::new("newest");
    let room = n.name("r");
    fill(storage, &room, 3, 1, 20, base_ms());
    assert_page(
        &read(storage, &room, 3, range(0, 0, 5, true)),
        16..=20,
        true,
        true,
        "last 5",
    );
    assert_page(
        &read(storage, &room, 3, range(0, 0, 20, true)),
        1..=20,
        true,
        false,
        "last 20 of 20",
    );
    assert_page(
        &read(storage, &room, 3, range(0, 0, 50, true)),
        1..=20,
        true,
        false,
        "last 50 of 20",
    );
    assert_page(
        &read(storage, &room, 3, range(0, 0, 5, false)),
        1..=5,
        true,
        true,
        "first 5",
    );
    assert_page(
        &read(storage, &room, 3, range(0, 0, 1, true)),
        [20],
        true,
        true,
        "last 1",
    );
}

/// What follows an offset (a resuming client).
pub fn room_log_read_after(storage: &Storage) {
    let n = Names::new("after");
    let room = n.name("r");
    fill(storage, &room, 3, 1, 20, base_ms());
    assert_page(
        &read(storage, &room, 3, range(15, 0, 10, false)),
        16..=20,
        true,
        false,
        "after 15",
    );
    assert_page(
        &read(storage, &room, 3, range(5, 0, 3, false)),
        6..=8,
        true,
        true,
        "3 after 5",
    );
    assert_page(
        &read(storage, &room, 3, range(10, 0, 3, true)),
        18..=20,
        true,
        true,
        "newest 3 after 10",
    );
    assert_page(
        &read(storage, &room, 3, range(20, 0, 10, false)),
        [],
        true,
        false,
        "after the last",
    );
    assert_page(
        &read(storage, &room, 3, range(99, 0, 10, true)),
        [],
        true,
        false,
        "after the head",
    );
}

/// Paging backwards through a whole room: every message once, in order.
pub fn room_log_page_backwards(storage: &Storage) {
    let n = Names::new("backwards");
    let room = n.name("r");
    fill(storage, &room, 9, 1, 53, base_ms());
    let mut seen: Vec<u64> = Vec::new();
    let mut before = 0;
    let mut pages = 0;
    loop {
        let page = read(storage, &room, 9, range(0, before, 10, true));
        pages += 1;
        assert!(page.complete, "page {pages} is complete");
        assert!(!page.messages.is_empty(), "page {pages} is not empty");
        let got = offsets(&page);
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "page {pages} oldest first: {got:?}"
        );
        seen.splice(0..0, got.iter().copied());
        before = got[0];
        if !page.more {
            break;
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(seen, (1..=53).collect::<Vec<_>>(), "every message once, no gap");
    assert_eq!(pages, 6, "53 messages are 6 pages of 10");
}

/// The edges of a range and of `more`.
pub fn room_log_paging_edges(storage: &Storage) {
    let n = Names::new("edges");
    let (room, empty) = (n.name("r"), n.name("empty"));
    fill(storage, &room, 2, 1, 10, base_ms());
    let r = |after, before, limit, newest| read(storage, &room, 2, range(after, before, limit, newest));
    assert_page(&r(0, 1, 10, true), [], true, false, "before 1");
    assert_page(&r(0, 2, 1, true), [1], true, false, "before 2, limit 1");
    assert_page(
        &r(0, 6, 5, true),
        1..=5,
        true,
        false,
        "limit exactly what remains, newest",
    );
    assert_page(&r(0, 6, 4, true), 2..=5, true, true, "limit one short, newest");
    assert_page(
        &r(5, 0, 5, false),
        6..=10,
        true,
        false,
        "limit exactly what remains, oldest",
    );
    assert_page(&r(5, 0, 4, false), 6..=9, true, true, "limit one short, oldest");
    assert_page(&r(3, 7, 10, false), 4..=6, true, false, "after 3 before 7");
    assert_page(&r(3, 4, 10, false), [], true, false, "after 3 before 4");
    assert_page(&r(7, 3, 10, false), [], true, false, "an inverted range");
    assert_page(&r(10, 0, 10, true), [], true, false, "after the last");
    assert_page(&r(0, 0, 0, true), [], true, true, "limit 0 of a non-empty range");
    assert_page(&r(u64::MAX, 0, 10, true), [], true, false, "after u64::MAX");
    let page = read(storage, &empty, 2, range(0, 0, 10, true));
    assert_page(&page, [], false, false, "a room never stored cannot vouch for anything");
    assert!(ok(storage.log.read_time(&empty, 0, u64::MAX, 10), "read_time").is_empty());
}

/// `complete`: only in the stored epoch, only above what retention removed.
pub fn room_log_complete(storage: &Storage) {
    let n = Names::new("complete");
    let room = n.name("r");
    fill(storage, &room, 5, 1, 10, base_ms());
    assert_page(
        &read(storage, &room, 4, range(0, 0, 10, true)),
        [],
        false,
        false,
        "another epoch",
    );
    assert_page(
        &read(storage, &room, 6, range(3, 0, 10, false)),
        [],
        false,
        false,
        "another epoch, after",
    );
    assert_page(
        &read(storage, &room, 5, range(0, 0, 10, true)),
        1..=10,
        true,
        false,
        "the epoch",
    );
    let retention = Retention {
        max_messages: Some(6),
        max_age: None,
    };
    assert_eq!(ok(storage.log.trim(&room, retention, base_ms()), "trim"), 4);
    let r = |after, limit, newest| read(storage, &room, 5, range(after, 0, limit, newest));
    assert_page(
        &r(0, 100, false),
        5..=10,
        false,
        false,
        "after 0, below what was trimmed",
    );
    assert_page(
        &r(3, 100, false),
        5..=10,
        false,
        false,
        "after 3, below what was trimmed",
    );
    assert_page(&r(4, 100, false), 5..=10, true, false, "after exactly trimmed_through");
    assert_page(&r(6, 100, false), 7..=10, true, false, "after 6");
    assert_page(
        &r(0, 3, true),
        8..=10,
        false,
        true,
        "the newest 3, the range reaching below the trim",
    );
}

/// A new epoch replaces the head; the old epoch's reads find nothing.
pub fn room_log_new_epoch(storage: &Storage) {
    let n = Names::new("epoch");
    let room = n.name("r");
    let base = base_ms();
    fill(storage, &room, 1, 1, 5, base);
    let keep_three = Retention {
        max_messages: Some(3),
        max_age: None,
    };
    ok(storage.log.trim(&room, keep_three, base), "trim");
    assert_eq!(head(storage, &room).map(|h| h.trimmed_through), Some(2));

    let fresh = |o: u64| Stored {
        payload: Bytes::from(format!("epoch 2, message {o}")),
        ..message(o, base + 100_000 + o)
    };
    ok(
        storage
            .log
            .append(&[entry(&room, 2, fresh(1)), entry(&room, 2, fresh(2))]),
        "append",
    );
    ok(storage.log.sync(), "sync");
    let new_head = Some(RoomHead {
        epoch: 2,
        last_offset: 2,
        trimmed_through: 0,
    });
    assert_eq!(
        head(storage, &room),
        new_head,
        "the new epoch's head replaces the old one"
    );
    assert_page(
        &read(storage, &room, 1, range(0, 0, 10, true)),
        [],
        false,
        false,
        "the old epoch",
    );
    assert_page(
        &read(storage, &room, 1, range(3, 0, 10, false)),
        [],
        false,
        false,
        "the old epoch, after",
    );
    let page = read(storage, &room, 2, range(0, 0, 10, true));
    assert_eq!(page.messages, vec![fresh(1), fresh(2)], "the new epoch's messages only");
    assert!(page.complete && !page.more);
    let times = ok(storage.log.read_time(&room, 0, u64::MAX, 100), "read_time");
    assert_eq!(
        times,
        vec![fresh(1), fresh(2)],
        "read_time reads the current epoch only"
    );

    ok(storage.log.trim(&room, Retention::FOREVER, base), "trim");
    assert_eq!(head(storage, &room), new_head, "trimming nothing changes nothing");
    assert_eq!(
        read(storage, &room, 2, range(0, 0, 10, true)).messages,
        vec![fresh(1), fresh(2)]
    );
}

/// Appending the same offsets again stores them once.
pub fn room_log_idempotent_append(storage: &Storage) {
    let n = Names::new("idempotent");
    let room = n.name("r");
    let base = base_ms();
    fill(storage, &room, 4, 1, 5, base);
    fill(storage, &room, 4, 3, 5, base);
    fill(storage, &room, 4, 4, 4, base);
    fill(storage, &room, 4, 2, 2, base);
    let page = read(storage, &room, 4, range(0, 0, 100, true));
    let want: Vec<Stored> = (1..=5).map(|o| message(o, base + o * 1000)).collect();
    assert_eq!(page.messages, want, "each offset once");
    assert_eq!(
        head(storage, &room).map(|h| h.last_offset),
        Some(5),
        "a retry never lowers the head"
    );
}

/// Time ranges: `from <= timestamp < to`, oldest first, at most `limit`.
pub fn room_log_read_time(storage: &Storage) {
    let n = Names::new("time");
    let room = n.name("r");
    let base = base_ms();
    fill(storage, &room, 1, 1, 10, base);
    let t = |from, to, limit| -> Vec<u64> {
        let found = ok(storage.log.read_time(&room, from, to, limit), "read_time");
        found.iter().map(|m| m.offset).collect()
    };
    assert_eq!(t(base + 3000, base + 6000, 100), vec![3, 4, 5]);
    assert_eq!(t(base + 3000, base + 6001, 100), vec![3, 4, 5, 6]);
    assert_eq!(t(base + 3000, base + 6000, 2), vec![3, 4], "limit keeps the oldest");
    assert_eq!(t(0, u64::MAX, 100), (1..=10).collect::<Vec<_>>());
    assert_eq!(t(base + 5000, base + 5000, 100), Vec::<u64>::new(), "an empty span");
    assert_eq!(t(base + 6000, base + 3000, 100), Vec::<u64>::new(), "an inverted span");
    assert_eq!(t(base + 11_000, u64::MAX, 100), Vec::<u64>::new(), "after the newest");
    let found = ok(storage.log.read_time(&room, base + 2000, base + 2001, 1), "read_time");
    assert_eq!(found, vec![message(2, base + 2000)], "whole messages");
}

/// Retention by count keeps the newest, raises `trimmed_through`, leaves
/// `last_offset`.
pub fn room_log_trim_by_count(storage: &Storage) {
    let n = Names::new("trim-count");
    let room = n.name("r");
    let base = base_ms();
    fill(storage, &room, 1, 1, 20, base);
    let keep = |max| Retention {
        max_messages: Some(max),
        max_age: None,
    };
    assert_eq!(
        ok(storage.log.trim(&room, keep(20), base), "trim"),
        0,
        "nothing over the bound"
    );
    assert_eq!(
        ok(storage.log.trim(&room, Retention::FOREVER, base), "trim"),
        0,
        "keep everything"
    );
    assert_eq!(head(storage, &room).map(|h| h.trimmed_through), Some(0));
    assert_eq!(ok(storage.log.trim(&room, keep(15), base), "trim"), 5);
    let trimmed = Some(RoomHead {
        epoch: 1,
        last_offset: 20,
        trimmed_through: 5,
    });
    assert_eq!(head(storage, &room), trimmed);
    assert_page(
        &read(storage, &room, 1, range(5, 0, 100, false)),
        6..=20,
        true,
        false,
        "what is kept",
    );
    assert_eq!(ok(storage.log.trim(&room, keep(15), base), "trim"), 0, "trimming again");
    assert_eq!(ok(storage.log.trim(&room, keep(0), base), "trim"), 15, "keep none");
    let emptied = Some(RoomHead {
        epoch: 1,
        last_offset: 20,
        trimmed_through: 20,
    });
    assert_eq!(head(storage, &room), emptied, "the head stays when the messages go");
    assert_page(
        &read(storage, &room, 1, range(0, 0, 100, true)),
        [],
        false,
        false,
        "all trimmed",
    );
    assert_page(
        &read(storage, &room, 1, range(20, 0, 100, true)),
        [],
        true,
        false,
        "after the trim",
    );

    fill(storage, &room, 1, 21, 21, base);
    assert_page(
        &read(storage, &room, 1, range(20, 0, 100, true)),
        [21],
        true,
        false,
        "appends go on",
    );
    assert_eq!(
        head(storage, &room).map(|h| (h.last_offset, h.trimmed_through)),
        Some((21, 20))
    );
    let unknown = n.name("unknown");
    assert_eq!(
        ok(storage.log.trim(&unknown, keep(0), base), "trim"),
        0,
        "an unknown room"
    );
    assert_eq!(head(storage, &unknown), None, "trimming does not create a room");
}

/// Retention by age removes what is older than `now - max_age`.
pub fn room_log_trim_by_age(storage: &Storage) {
    let n = Names::new("trim-age");
    let room = n.name("r");
    let base = base_ms();
    fill(storage, &room, 1, 1, 10, base);
    let max_age = |secs| Retention {
        max_messages: None,
        max_age: Some(Duration::from_secs(secs)),
    };
    let now = base + 10_000;
    assert_eq!(
        ok(storage.log.trim(&room, max_age(100), now), "trim"),
        0,
        "nothing that old"
    );
    assert_eq!(
        ok(storage.log.trim(&room, max_age(5), now), "trim"),
        4,
        "older than 5 s"
    );
    let trimmed = Some(RoomHead {
        epoch: 1,
        last_offset: 10,
        trimmed_through: 4,
    });
    assert_eq!(head(storage, &room), trimmed);
    assert_page(
        &read(storage, &room, 1, range(0, 0, 100, false)),
        5..=10,
        false,
        false,
        "after trim by age",
    );
    let both = Retention {
        max_messages: Some(5),
        max_age: Some(Duration::from_secs(3)),
    };
    // Count removes 5 (6..=10 stay), age then 6 (older than now - 3 s).
    assert_eq!(
        ok(storage.log.trim(&room, both, now), "trim"),
        2,
        "by count, then by age"
    );
    assert_eq!(head(storage, &room).map(|h| h.trimmed_through), Some(6));
    assert_eq!(
        ok(storage.log.trim(&room, max_age(0), now + 1), "trim"),
        4,
        "everything"
    );
    assert_eq!(
        head(storage, &room).map(|h| (h.last_offset, h.trimmed_through)),
        Some((10, 10))
    );
}

/// `rooms()` pages through every stored room in order.
pub fn room_log_rooms_paging(storage: &Storage) {
    let n = Names::new("rooms");
    let names: Vec<Arc<str>> = ["a", "b", "b.x", "c", "d", "e", "é"]
        .iter()
        .map(|s| n.name(s))
        .collect();
    for name in names.iter().rev() {
        fill(storage, name, 1, 1, 1, base_ms());
    }
    for page in [1, 2, 3, 7, 100] {
        let found = list_run(n.prefix(), page, |after, limit| storage.log.rooms(after, limit));
        assert_eq!(found, names, "rooms in pages of {page}");
    }
    let first = ok(storage.log.rooms(None, 1), "rooms");
    assert_eq!(first.len(), 1, "the first page from the start");
    assert!(ok(storage.log.rooms(None, 0), "rooms").is_empty(), "limit 0");
}

/// Payloads are bytes, not text; content types and publishers round trip.
pub fn room_log_payloads(storage: &Storage) {
    let n = Names::new("payloads");
    let room = n.name("r");
    let base = base_ms();
    let all_bytes: Vec<u8> = (0..=255).collect();
    let large: Vec<u8> = (0..64 * 1024).map(|i: u32| (i.wrapping_mul(31) % 251) as u8).collect();
    let messages = vec![
        Stored {
            offset: 1,
            publisher: Arc::from(""),
            timestamp_ms: base,
            payload: Bytes::from(all_bytes),
            content_type: Some(Arc::from("application/octet-stream")),
        },
        Stored {
            offset: 2,
            publisher: Arc::from("zoë"),
            timestamp_ms: base,
            payload: Bytes::new(),
            content_type: None,
        },
        Stored {
            offset: 3,
            publisher: Arc::from("ann"),
            timestamp_ms: 0,
            payload: Bytes::from(large),
            content_type: Some(Arc::from("")),
        },
        Stored {
            offset: 4,
            publisher: Arc::from("ann"),
            timestamp_ms: u64::MAX,
            payload: Bytes::from_static(b"\0\0\xff"),
            content_type: Some(Arc::from("application/json; charset=utf-8")),
        },
    ];
    let batch: Vec<_> = messages.iter().map(|m| entry(&room, u64::MAX, m.clone())).collect();
    ok(storage.log.append(&batch), "append");
    ok(storage.log.sync(), "sync");
    let page = read(storage, &room, u64::MAX, range(0, 0, 10, true));
    assert_eq!(page.messages, messages, "payloads and content types round trip");
}

/// One writer and concurrent readers: reads never fail or see damaged
/// messages, heads never go back, and once the writer is done every reader
/// sees all of it. (Whether a reader can see half a batch is up to the
/// backend; [`room_log_atomic_batches`] checks backends that promise not.)
pub fn room_log_concurrent_readers(storage: &Storage) {
    concurrent_readers(storage, false);
}

/// [`room_log_concurrent_readers`], and also: a reader never sees part of
/// an append batch, and a read after a head sees at least that head. For
/// backends whose append batches are atomic (memory, embedded); not part
/// of [`run_all`](super::run_all).
pub fn room_log_atomic_batches(storage: &Storage) {
    concurrent_readers(storage, true);
}

fn concurrent_readers(storage: &Storage, atomic: bool) {
    const LAST: u64 = 300;
    let n = Names::new("concurrent");
    let room = n.name("r");
    let base = base_ms();
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for first in (1..=LAST).step_by(3) {
                let batch: Vec<_> = (first..first + 3)
                    .map(|o| entry(&room, 1, message(o, base + o)))
                    .collect();
                ok(storage.log.append(&batch), "append");
                if first % 30 == 1 {
                    ok(storage.log.sync(), "sync");
                }
            }
            ok(storage.log.sync(), "sync");
            done.store(true, Ordering::Release);
        });
        for _ in 0..2 {
            scope.spawn(|| {
                let mut last_seen = 0;
                loop {
                    let finished = done.load(Ordering::Acquire);
                    if let Some(h) = head(storage, &room) {
                        assert!(h.last_offset >= last_seen, "the head went back");
                        last_seen = h.last_offset;
                        let page = read(storage, &room, 1, range(0, 0, 7, true));
                        let got = offsets(&page);
                        assert!(got.windows(2).all(|w| w[0] < w[1]), "not oldest first: {got:?}");
                        for m in &page.messages {
                            assert_eq!(*m, message(m.offset, base + m.offset), "a damaged message");
                        }
                        if atomic {
                            assert_eq!(h.last_offset % 3, 0, "a head inside a batch");
                            assert!(got.windows(2).all(|w| w[1] == w[0] + 1), "a gap: {got:?}");
                            let newest = got.last().copied().unwrap_or(0);
                            assert!(newest >= h.last_offset, "a read behind the head it followed");
                            assert_eq!(newest % 3, 0, "a read inside a batch");
                        }
                    }
                    if finished {
                        break;
                    }
                    // Gentle on small machines: the writer needs a core too.
                    std::thread::sleep(Duration::from_micros(50));
                }
                assert_eq!(last_seen, LAST, "the readers saw the last batch");
                let page = read(storage, &room, 1, range(0, 0, 1000, true));
                assert_page(&page, 1..=LAST, true, false, "everything, once the writer is done");
            });
        }
    });
}
