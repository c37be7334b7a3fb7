//! Checks of [`NotificationStore`](crate::NotificationStore).

use std::sync::Arc;

use bytes::Bytes;

use super::{Names, base_ms, list_run, ok};
use crate::{MarkRead, NotificationPage, NotificationRecord, Storage};

fn note(user: &Arc<str>, id: u64, created_ms: u64) -> NotificationRecord {
    NotificationRecord {
        id,
        user: user.clone(),
        kind: "mention".into(),
        title: format!("title {id}"),
        body: format!("body of {id}"),
        data: Bytes::from(format!("{{\"id\":{id}}}")),
        created_ms,
        read: false,
    }
}

/// Stores `ids` for `user`, created `base + id`, then syncs.
fn fill(storage: &Storage, user: &Arc<str>, ids: impl IntoIterator<Item = u64>, base: u64) {
    let batch: Vec<_> = ids.into_iter().map(|id| note(user, id, base + id)).collect();
    ok(storage.notifications.append(&batch), "append");
    ok(storage.notifications.sync(), "sync");
}

fn page(storage: &Storage, user: &str, before_id: u64, limit: usize, unread_only: bool) -> NotificationPage {
    ok(storage.notifications.page(user, before_id, limit, unread_only), "page")
}

fn ids(page: &NotificationPage) -> Vec<u64> {
    page.items.iter().map(|n| n.id).collect()
}

fn mark(storage: &Storage, user: &str, which: MarkRead<'_>) -> u64 {
    ok(storage.notifications.mark_read(user, which), "mark_read")
}

fn unread(storage: &Storage, user: &str) -> u64 {
    ok(storage.notifications.unread_count(user), "unread_count")
}

fn read_ids(storage: &Storage, user: &str) -> Vec<u64> {
    page(storage, user, 0, 1000, false)
        .items
        .iter()
        .filter(|n| n.read)
        .map(|n| n.id)
        .collect()
}

/// Newest first, paged by `before_id`, with the unread count.
pub fn notifications_page(storage: &Storage) {
    let n = Names::new("notes-page");
    let (user, nobody) = (n.name("u"), n.name("nobody"));
    let base = base_ms();
    fill(storage, &user, (1..=25).map(|i| i * 10), base);
    let first = page(storage, &user, 0, 10, false);
    assert_eq!(
        ids(&first),
        (16..=25).rev().map(|i| i * 10).collect::<Vec<_>>(),
        "newest first"
    );
    assert!(first.has_more);
    assert_eq!(first.unread, 25);
    assert_eq!(first.items[0], note(&user, 250, base + 250), "whole records");
    let second = page(storage, &user, 160, 10, false);
    assert_eq!(
        ids(&second),
        (6..=15).rev().map(|i| i * 10).collect::<Vec<_>>(),
        "before 160"
    );
    assert!(second.has_more);
    let last = page(storage, &user, 60, 10, false);
    assert_eq!(ids(&last), vec![50, 40, 30, 20, 10]);
    assert!(!last.has_more, "the oldest page");
    let exact = page(storage, &user, 60, 5, false);
    assert_eq!(ids(&exact), vec![50, 40, 30, 20, 10]);
    assert!(!exact.has_more, "limit exactly what remains");
    let short = page(storage, &user, 60, 4, false);
    assert!(short.has_more, "limit one short");
    assert_eq!(
        ids(&page(storage, &user, 55, 2, false)),
        vec![50, 40],
        "before an id not stored"
    );
    assert!(
        page(storage, &user, 10, 10, false).items.is_empty(),
        "before the oldest"
    );
    assert_eq!(
        page(storage, &nobody, 0, 10, false),
        NotificationPage::default(),
        "an unknown user"
    );
    assert_eq!(unread(storage, &nobody), 0);
    ok(storage.notifications.append(&[]), "an empty batch");
}

/// Marking ids: only unread, known ids count; `unread_only` pages skip
/// read ones.
pub fn notifications_mark_ids(storage: &Storage) {
    let n = Names::new("notes-ids");
    let user = n.name("u");
    fill(storage, &user, 1..=10, base_ms());
    assert_eq!(
        mark(storage, &user, MarkRead::Ids(&[2, 4, 4, 9999])),
        2,
        "duplicates and unknown ids"
    );
    assert_eq!(mark(storage, &user, MarkRead::Ids(&[2])), 0, "already read");
    assert_eq!(mark(storage, &user, MarkRead::Ids(&[])), 0, "no ids");
    assert_eq!(unread(storage, &user), 8);
    assert_eq!(read_ids(storage, &user), vec![4, 2]);
    let unread_page = page(storage, &user, 0, 100, true);
    assert_eq!(ids(&unread_page), vec![10, 9, 8, 7, 6, 5, 3, 1], "unread only");
    assert!(unread_page.items.iter().all(|n| !n.read));
    assert_eq!(unread_page.unread, 8);
    let first = page(storage, &user, 0, 3, true);
    assert_eq!(ids(&first), vec![10, 9, 8]);
    assert!(first.has_more);
    let rest = page(storage, &user, 6, 3, true);
    assert_eq!(ids(&rest), vec![5, 3, 1], "paging unread skips read ones");
    assert!(!rest.has_more, "no unread ones left");
    assert_eq!(
        page(storage, &user, 0, 100, false).items.len(),
        10,
        "read ones are still listed"
    );
}

/// `UpTo` and `All` count only what was unread; they do not reach
/// notifications stored later.
pub fn notifications_mark_upto_and_all(storage: &Storage) {
    let n = Names::new("notes-upto");
    let user = n.name("u");
    let base = base_ms();
    fill(storage, &user, (1..=20).map(|i| i * 10), base);
    assert_eq!(mark(storage, &user, MarkRead::Ids(&[20, 40])), 2);
    assert_eq!(
        mark(storage, &user, MarkRead::UpTo(100)),
        8,
        "10..=100 but for 20 and 40"
    );
    assert_eq!(mark(storage, &user, MarkRead::UpTo(100)), 0, "again");
    assert_eq!(mark(storage, &user, MarkRead::UpTo(55)), 0, "below");
    assert_eq!(
        mark(storage, &user, MarkRead::Ids(&[30, 110])),
        1,
        "ids at and above the mark"
    );
    assert_eq!(unread(storage, &user), 9);
    assert_eq!(
        ids(&page(storage, &user, 0, 100, true)),
        (12..=20).rev().map(|i| i * 10).collect::<Vec<_>>()
    );
    assert_eq!(mark(storage, &user, MarkRead::All), 9);
    assert_eq!(mark(storage, &user, MarkRead::All), 0, "all again");
    assert_eq!(unread(storage, &user), 0);
    assert!(page(storage, &user, 0, 100, false).items.iter().all(|n| n.read));

    fill(storage, &user, [210], base);
    assert_eq!(unread(storage, &user), 1, "All does not reach later notifications");
    assert_eq!(
        mark(storage, &user, MarkRead::UpTo(10_000)),
        1,
        "up to beyond the newest"
    );
    fill(storage, &user, [300], base);
    assert_eq!(unread(storage, &user), 1, "UpTo does not reach later notifications");
    assert_eq!(ids(&page(storage, &user, 0, 100, true)), vec![300]);
}

/// One user's marks never touch another user's inbox, even with the same
/// ids or a name that is a prefix of the other.
pub fn notifications_users_isolated(storage: &Storage) {
    let n = Names::new("notes-isolated");
    let (a, ab) = (n.name("a"), n.name("ab"));
    let base = base_ms();
    fill(storage, &a, 1..=5, base);
    fill(storage, &ab, 1..=5, base);
    assert_eq!(mark(storage, &a, MarkRead::Ids(&[1, 2])), 2);
    assert_eq!(unread(storage, &ab), 5, "ids of a");
    assert_eq!(mark(storage, &a, MarkRead::UpTo(4)), 2);
    assert_eq!(unread(storage, &ab), 5, "UpTo of a");
    assert_eq!(mark(storage, &a, MarkRead::All), 1);
    assert_eq!(unread(storage, &ab), 5, "All of a");
    assert!(read_ids(storage, &ab).is_empty(), "no notification of ab is read");
    assert_eq!(mark(storage, &ab, MarkRead::UpTo(3)), 3);
    assert_eq!((unread(storage, &a), unread(storage, &ab)), (0, 2));
    let nobody = n.name("nobody");
    assert_eq!(mark(storage, &nobody, MarkRead::All), 0, "an unknown user");
    assert_eq!(mark(storage, &nobody, MarkRead::Ids(&[1])), 0);
    assert_eq!(unread(storage, &nobody), 0);
    assert_eq!(page(storage, &ab, 0, 10, false).items.len(), 5);
}

/// Appending an id again stores it once and keeps its read mark.
pub fn notifications_reappend(storage: &Storage) {
    let n = Names::new("notes-again");
    let user = n.name("u");
    let base = base_ms();
    fill(storage, &user, 1..=3, base);
    assert_eq!(mark(storage, &user, MarkRead::Ids(&[2])), 1);
    fill(storage, &user, [2, 3], base);
    assert_eq!(unread(storage, &user), 2, "a retry counts nothing twice");
    assert_eq!(read_ids(storage, &user), vec![2], "a retry keeps the read mark");
    assert_eq!(ids(&page(storage, &user, 0, 10, false)), vec![3, 2, 1]);
    fill(storage, &user, [4, 4], base);
    assert_eq!(unread(storage, &user), 3, "twice in one batch counts once");
    let mut read_already = note(&user, 5, base);
    read_already.read = true;
    ok(storage.notifications.append(&[read_already.clone()]), "append");
    assert_eq!(unread(storage, &user), 3, "a notification stored read");
    assert_eq!(page(storage, &user, 0, 1, false).items, vec![read_already]);
}

/// Trim keeps the newest `max_per_user` young enough; counts follow.
pub fn notifications_trim(storage: &Storage) {
    let n = Names::new("notes-trim");
    let (user, other) = (n.name("u"), n.name("other"));
    let base = base_ms();
    let batch: Vec<_> = (1..=10).map(|id| note(&user, id, base + id * 1000)).collect();
    ok(storage.notifications.append(&batch), "append");
    fill(storage, &other, 1..=3, base);
    assert_eq!(mark(storage, &user, MarkRead::Ids(&[9])), 1);
    assert_eq!(
        ok(storage.notifications.trim(&user, 100, 0), "trim"),
        0,
        "nothing to trim"
    );
    assert_eq!(ok(storage.notifications.trim(&user, 8, 0), "trim"), 2, "keep 8");
    assert_eq!(
        ids(&page(storage, &user, 0, 100, false)),
        (3..=10).rev().collect::<Vec<_>>()
    );
    assert_eq!(unread(storage, &user), 7);
    assert_eq!(
        ok(storage.notifications.trim(&user, 100, base + 5000), "trim"),
        2,
        "older than 5 s"
    );
    assert_eq!(
        ids(&page(storage, &user, 0, 100, false)),
        (5..=10).rev().collect::<Vec<_>>()
    );
    assert_eq!(unread(storage, &user), 5);
    assert_eq!(mark(storage, &user, MarkRead::UpTo(6)), 2);
    assert_eq!(
        ok(storage.notifications.trim(&user, 3, 0), "trim"),
        3,
        "read ones go too"
    );
    assert_eq!(unread(storage, &user), 2, "8 and 10 are left unread");
    assert_eq!(ok(storage.notifications.trim(&user, 0, 0), "trim"), 3, "keep none");
    assert_eq!(unread(storage, &user), 0);
    assert!(page(storage, &user, 0, 100, false).items.is_empty());
    let users = list_run(n.prefix(), 10, |after, limit| storage.notifications.users(after, limit));
    assert_eq!(users, vec![other.clone()], "a user without notifications is not listed");
    assert_eq!(unread(storage, &other), 3, "another user's inbox is untouched");
    assert_eq!(ok(storage.notifications.trim(&n.name("nobody"), 0, 0), "trim"), 0);

    fill(storage, &user, [20], base);
    assert_eq!(unread(storage, &user), 1, "an emptied inbox starts again");
}

/// `users()` pages through every user with notifications, in order.
pub fn notifications_users_paging(storage: &Storage) {
    let n = Names::new("notes-users");
    let users: Vec<Arc<str>> = ["a", "a.b", "b", "c", "d"].iter().map(|s| n.name(s)).collect();
    for user in users.iter().rev() {
        fill(storage, user, [1], base_ms());
    }
    for size in [1, 2, 5, 50] {
        let found = list_run(n.prefix(), size, |after, limit| {
            storage.notifications.users(after, limit)
        });
        assert_eq!(found, users, "users in pages of {size}");
    }
}

/// Marks from one thread while another appends: the unread count always
/// ends equal to the notifications that are unread.
pub fn notifications_concurrent_marks(storage: &Storage) {
    const LAST: u64 = 400;
    let n = Names::new("notes-concurrent");
    let user = n.name("u");
    let base = base_ms();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for first in (1..=LAST).step_by(4) {
                let batch: Vec<_> = (first..first + 4).map(|id| note(&user, id, base + id)).collect();
                ok(storage.notifications.append(&batch), "append");
            }
        });
        scope.spawn(|| {
            for round in 0..100u64 {
                let id = round * 4 + 2;
                mark(storage, &user, MarkRead::Ids(&[id, id + 1]));
                if round % 10 == 9 {
                    mark(storage, &user, MarkRead::UpTo(round * 4));
                }
                std::thread::yield_now();
            }
        });
    });
    let all = page(storage, &user, 0, 1000, false);
    assert_eq!(all.items.len() as u64, LAST);
    let counted = all.items.iter().filter(|n| !n.read).count() as u64;
    assert_eq!(all.unread, counted, "the unread count drifted");
    assert_eq!(unread(storage, &user), counted);
    assert_eq!(
        mark(storage, &user, MarkRead::All),
        counted,
        "All marks exactly the unread ones"
    );
}
