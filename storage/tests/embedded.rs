//! The embedded backend beyond the conformance suite: what survives a
//! restart, and how it fails.

use std::sync::Arc;

use bytes::Bytes;
use herald_protocol::owner::{ReadRange, Stored};
use herald_storage::embedded::{self, EmbeddedOptions, EmbeddedStorage};
use herald_storage::{
    AnalyticsEvent, LogEntry, MarkRead, NotificationRecord, Retention, Rollup, RoomHead, Storage, StorageError,
};

fn options() -> EmbeddedOptions {
    EmbeddedOptions {
        cache_bytes: 8 * 1024 * 1024,
        worker_threads: Some(1),
    }
}

fn open(dir: &std::path::Path) -> Storage {
    embedded::open(dir, options()).expect("open the embedded store")
}

fn message(offset: u64) -> Stored {
    Stored {
        offset,
        publisher: Arc::from("ann"),
        timestamp_ms: 1_000 * offset,
        payload: Bytes::from(vec![offset as u8, 0, 255]),
        content_type: offset.is_multiple_of(2).then(|| Arc::from("application/octet-stream")),
    }
}

fn note(user: &str, id: u64) -> NotificationRecord {
    NotificationRecord {
        id,
        user: Arc::from(user),
        kind: "mention".into(),
        title: format!("t{id}"),
        body: String::new(),
        data: Bytes::from_static(b"{}"),
        created_ms: id,
        read: false,
    }
}

fn event(timestamp_ms: u64, value: f64) -> AnalyticsEvent {
    AnalyticsEvent {
        name: Arc::from("click"),
        value,
        tags: vec![("k".into(), "v".into())],
        timestamp_ms,
    }
}

const ALL: ReadRange = ReadRange {
    after: 0,
    before: 0,
    limit: 1000,
    newest: true,
};

#[test]
fn reopening_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = open(dir.path());
        let room: Arc<str> = Arc::from("chat:a");
        let batch: Vec<_> = (1..=10)
            .map(|o| LogEntry {
                room: room.clone(),
                epoch: 42,
                message: message(o),
            })
            .collect();
        storage.log.append(&batch).unwrap();
        let keep = Retention {
            max_messages: Some(7),
            max_age: None,
        };
        assert_eq!(storage.log.trim(&room, keep, 0).unwrap(), 3);

        storage
            .notifications
            .append(&(1..=6).map(|id| note("ann", id)).collect::<Vec<_>>())
            .unwrap();
        storage.notifications.append(&[note("bob", 1)]).unwrap();
        assert_eq!(storage.notifications.mark_read("ann", MarkRead::Ids(&[5])).unwrap(), 1);
        assert_eq!(storage.notifications.mark_read("ann", MarkRead::UpTo(2)).unwrap(), 2);

        storage
            .events
            .append(&[event(60_000, 1.0), event(60_001, 3.0)])
            .unwrap();
        storage.events.append(&[event(60_000, 2.0)]).unwrap();
        storage.log.sync().unwrap();
    }

    let storage = open(dir.path());
    let head = RoomHead {
        epoch: 42,
        last_offset: 10,
        trimmed_through: 3,
    };
    assert_eq!(storage.log.head("chat:a").unwrap(), Some(head));
    let page = storage.log.read("chat:a", 42, ALL).unwrap();
    assert_eq!(page.messages, (4..=10).map(message).collect::<Vec<_>>());
    assert!(!page.complete, "the trim survived too");
    assert_eq!(storage.log.rooms(None, 10).unwrap(), vec![Arc::<str>::from("chat:a")]);

    assert_eq!(storage.notifications.unread_count("ann").unwrap(), 3);
    assert_eq!(storage.notifications.unread_count("bob").unwrap(), 1);
    let inbox = storage.notifications.page("ann", 0, 10, false).unwrap();
    let read: Vec<_> = inbox.items.iter().map(|n| (n.id, n.read)).collect();
    assert_eq!(
        read,
        vec![(6, false), (5, true), (4, false), (3, false), (2, true), (1, true)]
    );
    assert_eq!(storage.notifications.mark_read("ann", MarkRead::All).unwrap(), 3);

    // The event sequence continues: an event of the same millisecond after
    // the restart is a new event, not an overwrite of one before.
    storage.events.append(&[event(60_000, 4.0)]).unwrap();
    let raw = storage.events.events("click", 0, u64::MAX, 100).unwrap();
    let values: Vec<f64> = raw.iter().map(|e| e.value).collect();
    assert_eq!(values, vec![1.0, 2.0, 4.0, 3.0]);
    let minute = Rollup {
        minute_ms: 60_000,
        count: 4,
        sum: 10.0,
        min: 1.0,
        max: 4.0,
    };
    assert_eq!(storage.events.rollups("click", 0, u64::MAX).unwrap(), vec![minute]);
}

#[test]
fn a_file_where_the_directory_should_be_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    for path in [file.clone(), file.join("below")] {
        match embedded::open(&path, options()) {
            Err(StorageError::Unavailable(why)) => assert!(!why.is_empty()),
            other => panic!("opening {} gave {other:?}", path.display()),
        }
    }
}

#[test]
fn a_directory_in_use_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path());
    assert!(matches!(
        embedded::open(dir.path(), options()),
        Err(StorageError::Unavailable(_))
    ));
}

#[test]
fn impossible_options_and_names_are_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let zero = EmbeddedOptions {
        worker_threads: Some(0),
        ..options()
    };
    assert!(matches!(
        EmbeddedStorage::open(dir.path(), zero),
        Err(StorageError::Invalid(_))
    ));

    let storage = open(dir.path());
    let long: Arc<str> = Arc::from("x".repeat(5000));
    let entry = LogEntry {
        room: long.clone(),
        epoch: 1,
        message: message(1),
    };
    assert!(matches!(storage.log.append(&[entry]), Err(StorageError::Invalid(_))));
    assert!(matches!(storage.log.head(&long), Err(StorageError::Invalid(_))));
    assert!(matches!(
        storage.notifications.append(&[note(&long, 1)]),
        Err(StorageError::Invalid(_))
    ));
    assert!(matches!(
        storage.notifications.unread_count(&long),
        Err(StorageError::Invalid(_))
    ));
    let named = AnalyticsEvent {
        name: long.clone(),
        ..event(0, 1.0)
    };
    assert!(matches!(storage.events.append(&[named]), Err(StorageError::Invalid(_))));
    assert_eq!(
        storage.log.rooms(None, 10).unwrap(),
        Vec::<Arc<str>>::new(),
        "nothing was stored"
    );
}

#[test]
fn damaged_records_are_corrupt_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = open(dir.path());
        let entry = LogEntry {
            room: Arc::from("r"),
            epoch: 1,
            message: message(1),
        };
        storage.log.append(&[entry]).unwrap();
        storage.notifications.append(&[note("ann", 1)]).unwrap();
        storage.events.append(&[event(0, 1.0)]).unwrap();
    }
    {
        // Overwrite values behind the backend's back, as a damaged disk or
        // a bug in another version would.
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let garbage = [1u8, 0xff];
        for name in [
            "room_heads",
            "inboxes",
            "rollups",
            "messages",
            "notifications",
            "events",
        ] {
            let keyspace = db.keyspace(name, fjall::KeyspaceCreateOptions::default).unwrap();
            let keys: Vec<_> = keyspace.iter().map(|g| g.key().unwrap()).collect();
            for key in keys {
                keyspace.insert(key, garbage).unwrap();
            }
        }
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    let storage = open(dir.path());
    let corrupt = |result: Result<(), StorageError>, what: &str| {
        assert!(matches!(result, Err(StorageError::Corrupt(_))), "{what}: {result:?}");
    };
    corrupt(storage.log.head("r").map(drop), "head");
    corrupt(storage.log.read("r", 1, ALL).map(drop), "read");
    corrupt(storage.log.read_time("r", 0, u64::MAX, 10).map(drop), "read_time");
    let next = LogEntry {
        room: Arc::from("r"),
        epoch: 1,
        message: message(2),
    };
    corrupt(storage.log.append(&[next]), "append over a damaged head");
    corrupt(storage.notifications.unread_count("ann").map(drop), "unread_count");
    corrupt(storage.notifications.page("ann", 0, 10, false).map(drop), "page");
    corrupt(
        storage.notifications.mark_read("ann", MarkRead::All).map(drop),
        "mark_read",
    );
    corrupt(storage.events.append(&[event(0, 1.0)]), "append over a damaged rollup");
    corrupt(storage.events.events("click", 0, u64::MAX, 10).map(drop), "events");
    corrupt(storage.events.rollups("click", 0, u64::MAX).map(drop), "rollups");
    assert_eq!(
        storage.log.rooms(None, 10).unwrap(),
        vec![Arc::<str>::from("r")],
        "keys are still fine"
    );
}
