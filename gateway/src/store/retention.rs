//! Retention, in the background: rooms trimmed by their namespace's
//! `retain_messages` / `retain_max_age`, notifications to the newest
//! `notifications_per_user`, raw analytics events by age. It walks the
//! stores in pages and never holds up the writer for long.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use herald_protocol::owner::NamespaceConfig;
use herald_storage::{Retention, Storage};

use super::StorageStats;

/// What retention keeps.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub(crate) default_namespace: NamespaceConfig,
    pub(crate) namespaces: Vec<(String, NamespaceConfig)>,
    pub(crate) notifications_per_user: u64,
    pub(crate) events_max_age: Duration,
}

impl Policy {
    fn room(&self, room: &str) -> Retention {
        let ns = herald_protocol::owner::namespace_of(room, &self.namespaces, &self.default_namespace);
        Retention {
            max_messages: ns.retain_messages,
            max_age: ns.retain_max_age,
        }
    }
}

const PAGE: usize = 512;

pub(super) fn run(storage: &Storage, policy: &Policy, every: Duration, stop: &Receiver<()>, stats: &StorageStats) {
    loop {
        match stop.recv_timeout(every) {
            Err(RecvTimeoutError::Timeout) => {
                let removed = sweep(storage, policy, crate::unix_ms());
                StorageStats::add(&stats.trimmed, removed);
            }
            _ => return,
        }
    }
}

/// One pass over everything stored. Returns how many items went.
pub(crate) fn sweep(storage: &Storage, policy: &Policy, now_ms: u64) -> u64 {
    let mut removed = 0;
    let mut after: Option<std::sync::Arc<str>> = None;
    while let Ok(rooms) = storage.log.rooms(after.as_deref(), PAGE) {
        for room in &rooms {
            let retention = policy.room(room);
            if retention != Retention::FOREVER {
                removed += storage.log.trim(room, retention, now_ms).unwrap_or(0);
            }
        }
        if rooms.len() < PAGE {
            break;
        }
        after = rooms.last().cloned();
    }
    let oldest_kept = 0;
    let mut after: Option<std::sync::Arc<str>> = None;
    while let Ok(users) = storage.notifications.users(after.as_deref(), PAGE) {
        for user in &users {
            removed += storage
                .notifications
                .trim(user, policy.notifications_per_user, oldest_kept)
                .unwrap_or(0);
        }
        if users.len() < PAGE {
            break;
        }
        after = users.last().cloned();
    }
    let events_before = now_ms.saturating_sub(policy.events_max_age.as_millis() as u64);
    removed += storage.events.trim(events_before).unwrap_or(0);
    removed
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use herald_protocol::owner::{ReadRange, Stored};
    use herald_storage::{AnalyticsEvent, LogEntry, NotificationRecord};

    use super::*;

    const NOW: u64 = 1_700_000_000_000;
    const DAY: u64 = 86_400_000;

    fn policy() -> Policy {
        let mut ns = NamespaceConfig::defaults();
        for (name, c) in &mut ns {
            if name == "dash" {
                c.retain_messages = Some(3);
            }
            if name == "chat" {
                c.retain_max_age = Some(Duration::from_millis(DAY));
            }
        }
        Policy {
            default_namespace: NamespaceConfig::general(),
            namespaces: ns,
            notifications_per_user: 2,
            events_max_age: Duration::from_millis(DAY),
        }
    }

    fn entry(room: &str, offset: u64, timestamp_ms: u64) -> LogEntry {
        LogEntry {
            room: Arc::from(room),
            epoch: 1,
            message: Stored {
                offset,
                publisher: Arc::from("ann"),
                timestamp_ms,
                payload: Bytes::from_static(b"x"),
                content_type: None,
            },
        }
    }

    fn offsets(storage: &Storage, room: &str) -> Vec<u64> {
        let all = ReadRange {
            after: 0,
            before: 0,
            limit: 100,
            newest: false,
        };
        let page = storage.log.read(room, 1, all).unwrap_or_default();
        page.messages.iter().map(|m| m.offset).collect()
    }

    #[test]
    fn a_sweep_keeps_what_each_namespace_and_the_node_keep() {
        let storage = herald_storage::memory::storage();
        let mut batch = Vec::new();
        for o in 1..=5 {
            batch.push(entry("dash:sales", o, NOW));
            // Two days old, then fresh.
            batch.push(entry("chat:old", o, if o <= 2 { NOW - 2 * DAY } else { NOW }));
            batch.push(entry("other:forever", o, NOW - 400 * DAY));
        }
        storage.log.append(&batch).unwrap_or(());
        let notes: Vec<NotificationRecord> = (1..=4)
            .map(|id| NotificationRecord {
                id,
                user: Arc::from("ann"),
                kind: "k".into(),
                title: String::new(),
                body: String::new(),
                data: Bytes::new(),
                created_ms: NOW,
                read: false,
            })
            .collect();
        storage.notifications.append(&notes).unwrap_or(());
        let events: Vec<AnalyticsEvent> = [NOW - 2 * DAY, NOW]
            .iter()
            .map(|&t| AnalyticsEvent {
                name: Arc::from("click"),
                value: 1.0,
                tags: Vec::new(),
                timestamp_ms: t,
            })
            .collect();
        storage.events.append(&events).unwrap_or(());

        // dash: 2 by count, chat: 2 by age, 2 notifications, 1 event.
        assert_eq!(sweep(&storage, &policy(), NOW), 7);
        assert_eq!(offsets(&storage, "dash:sales"), [3, 4, 5]);
        assert_eq!(offsets(&storage, "chat:old"), [3, 4, 5]);
        assert_eq!(
            offsets(&storage, "other:forever"),
            [1, 2, 3, 4, 5],
            "no rule, nothing goes"
        );
        let page = storage.notifications.page("ann", 0, 10, false).unwrap_or_default();
        assert_eq!(page.items.iter().map(|n| n.id).collect::<Vec<_>>(), [4, 3]);
        let kept = storage.events.events("click", 0, u64::MAX, 10).unwrap_or_default();
        assert_eq!(kept.len(), 1);
        assert_eq!(
            storage.events.rollups("click", 0, u64::MAX).unwrap_or_default().len(),
            2,
            "rollups stay"
        );
        assert_eq!(sweep(&storage, &policy(), NOW), 0, "a second pass has nothing to do");
    }
}
