//! The room owner on virtual time, against a log store the test plays by
//! hand: answers that come late, out of order, or as errors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_protocol::owner::{
    Answer, Audience, DurableHead, Input, LogDone, LogError, LogRequest, Member, NamespaceConfig, Output, OwnerConfig,
    Query, ReadPage, RoomOwner, Stored,
};
use herald_protocol::{ErrorCode, Position};

const ROOM: &str = "chat:lobby";
const T0: u64 = 1_700_000_000_000;

fn config() -> OwnerConfig {
    OwnerConfig {
        epoch: 7,
        durable_store: true,
        cluster: false,
        shards: 4,
        max_rooms: 3,
        dedup_per_room: 100,
        max_pending_per_room: 16,
        replay_budget: 64 * 1024,
        default_namespace: NamespaceConfig {
            history: 5,
            ..NamespaceConfig::general()
        },
        namespaces: vec![
            ("user".into(), NamespaceConfig::defaults().swap_remove(3).1),
            ("game".into(), NamespaceConfig::defaults().swap_remove(2).1),
        ],
    }
}

/// An owner, the wall clock it sees, and the log requests it has made that
/// the test has not answered yet.
struct Harness {
    owner: RoomOwner<u32>,
    now_ms: u64,
    received: Instant,
    /// Requests to the store not answered yet.
    log: Vec<LogRequest>,
    /// Every other output, in order.
    out: Vec<Output<u32>>,
    /// What the store answers to a head read at once (None: a room it
    /// never held); `hold_heads` keeps head reads in `log` instead.
    head: Option<DurableHead>,
    hold_heads: bool,
}

fn harness() -> Harness {
    Harness {
        owner: RoomOwner::new(config()),
        now_ms: T0,
        received: Instant::now(),
        log: Vec::new(),
        out: Vec::new(),
        head: None,
        hold_heads: false,
    }
}

fn member(shard: u32, conn: u64) -> Member {
    Member { shard, conn }
}

fn stored(offset: u64, text: &str) -> Stored {
    Stored {
        offset,
        publisher: Arc::from("old"),
        timestamp_ms: T0,
        payload: Bytes::copy_from_slice(text.as_bytes()),
        content_type: None,
    }
}

impl Harness {
    fn handle(&mut self, input: Input<u32>) {
        self.owner.handle(self.now_ms, input);
        while let Some(o) = self.owner.poll_output() {
            match o {
                Output::Log(LogRequest::Head { ticket, room }) if !self.hold_heads => {
                    let result = Ok(self.head);
                    self.owner
                        .handle(self.now_ms, Input::Log(LogDone::Head { ticket, room, result }));
                }
                Output::Log(r) => self.log.push(r),
                o => self.out.push(o),
            }
        }
    }

    fn take(&mut self) -> Vec<Output<u32>> {
        std::mem::take(&mut self.out)
    }

    /// [`take`](Self::take) without presence events.
    fn take_quiet(&mut self) -> Vec<Output<u32>> {
        let mut outs = self.take();
        outs.retain(|o| {
            !matches!(
                o,
                Output::Deliver {
                    audience: Audience::Presence { .. },
                    ..
                }
            )
        });
        outs
    }

    fn join(&mut self, origin: u32, m: Member, user: &str) {
        self.join_with(origin, m, user, 0, None);
    }

    fn join_with(&mut self, origin: u32, m: Member, user: &str, history: u32, recover: Option<Position>) {
        self.handle(Input::Join {
            origin,
            member: m,
            room: Arc::from(ROOM),
            user: Arc::from(user),
            history,
            recover,
            presence: true,
        });
    }

    fn leave(&mut self, m: Member) {
        self.handle(Input::Leave {
            member: m,
            room: Arc::from(ROOM),
        });
    }

    fn publish(&mut self, origin: u32, text: &str, key: Option<&str>) {
        self.handle(Input::Publish {
            origin,
            room: Arc::from(ROOM),
            user: Arc::from("ann"),
            payload: Bytes::copy_from_slice(text.as_bytes()),
            content_type: None,
            volatile: false,
            idempotency_key: key.map(str::to_owned),
            from_server: false,
            received: self.received,
        });
    }

    /// Answers the i-th outstanding store request (appends succeed, reads
    /// find nothing).
    fn complete(&mut self, i: usize) {
        let done = match self.log.remove(i) {
            LogRequest::Append { ticket, room, .. } => LogDone::Appended {
                ticket,
                room,
                result: Ok(()),
            },
            LogRequest::Read { ticket, room, .. } => LogDone::Read {
                ticket,
                room,
                result: Ok(ReadPage::default()),
            },
            LogRequest::Head { ticket, room } => LogDone::Head {
                ticket,
                room,
                result: Ok(self.head),
            },
            LogRequest::Cluster(request) => panic!("not in a cluster: {request:?}"),
        };
        self.handle(Input::Log(done));
    }

    fn fail(&mut self, i: usize) {
        let LogRequest::Append { ticket, room, .. } = self.log.remove(i) else {
            panic!("not an append");
        };
        self.handle(Input::Log(LogDone::Appended {
            ticket,
            room,
            result: Err(LogError::Failed("disk full".into())),
        }));
    }

    fn complete_all(&mut self) {
        while !self.log.is_empty() {
            self.complete(0);
        }
    }

    fn presence(&mut self) -> (Vec<String>, u64) {
        self.handle(Input::Query {
            origin: 99,
            room: Arc::from(ROOM),
            query: Query::Presence,
        });
        match self.take().pop() {
            Some(Output::Answer {
                answer: Answer::Presence(p),
                ..
            }) => {
                let mut users: Vec<String> = p.users.iter().map(|u| u.to_string()).collect();
                users.sort();
                (users, p.count)
            }
            other => panic!("{other:?}"),
        }
    }
}

/// A compact view of outputs for assertions.
fn summary(outs: &[Output<u32>]) -> Vec<String> {
    outs.iter()
        .map(|o| match o {
            Output::JoinResult { origin, result, .. } => match result {
                Ok(j) => format!(
                    "joined {origin} at {} recovered={} history={:?}",
                    j.offset,
                    j.recovered,
                    j.history.iter().map(|m| m.offset).collect::<Vec<_>>()
                ),
                Err(r) => format!("join {origin} refused {:?}", r.code),
            },
            Output::PublishResult {
                origin,
                result,
                duplicate,
            } => match result {
                Ok(p) => format!("ack {origin} at {}{}", p.offset, if *duplicate { " (dup)" } else { "" }),
                Err(r) => format!("publish {origin} refused {:?}", r.code),
            },
            Output::Deliver { shard, audience, .. } => match audience {
                Audience::Members { .. } => format!("message to shard {shard}"),
                Audience::Presence { .. } => format!("presence to shard {shard}"),
                Audience::Typing { .. } => format!("typing to shard {shard}"),
                Audience::Kick => format!("kick on shard {shard}"),
            },
            Output::Answer { origin, .. } => format!("answer {origin}"),
            Output::Rooms { origin, .. } => format!("rooms {origin}"),
            Output::Log(_) => "log".into(),
        })
        .collect()
}

#[test]
fn a_publish_is_answered_and_fanned_out_only_once_the_store_has_it() {
    let mut h = harness();
    h.join(1, member(0, 10), "ann");
    h.join(2, member(2, 20), "bob");
    h.take();
    h.publish(5, "hello", None);
    assert!(h.take().is_empty(), "nothing before the store answers");
    assert!(matches!(&h.log[..], [LogRequest::Append { message, epoch: 7, .. }] if message.offset == 1));
    h.complete(0);
    // The publisher's answer first, then one frame per shard with members.
    assert_eq!(
        summary(&h.take()),
        ["ack 5 at 1", "message to shard 0", "message to shard 2"]
    );
    assert_eq!(h.owner.position(ROOM), Some(Position { epoch: 7, offset: 1 }));
}

#[test]
fn operations_are_released_in_arrival_order_whatever_order_the_store_answers_in() {
    let mut h = harness();
    h.join(1, member(0, 10), "ann");
    h.take();
    h.publish(5, "a", None);
    h.publish(6, "b", None);
    // A join arrives while both appends are in flight.
    h.join_with(2, member(1, 20), "bob", 10, None);
    h.publish(7, "c", None);
    let presence = h.take();
    assert_eq!(
        summary(&presence),
        ["presence to shard 0", "presence to shard 1"],
        "presence is not held back"
    );
    // The store answers the second append first: nothing may go out yet.
    h.complete(1);
    assert!(h.take().is_empty());
    h.complete(0);
    // a, b, then the join (its history holds both; it starts after 2), and
    // c is still in flight. a and b also reach shard 1, which counts the
    // joiner already, but a shard hands messages only to connections whose
    // join was answered: the joiner gets them once, in its history.
    assert_eq!(
        summary(&h.take()),
        [
            "ack 5 at 1",
            "message to shard 0",
            "message to shard 1",
            "ack 6 at 2",
            "message to shard 0",
            "message to shard 1",
            "joined 2 at 2 recovered=false history=[1, 2]",
        ]
    );
    h.complete(0);
    // c reaches the new member's shard too: no gap, no repeat.
    assert_eq!(
        summary(&h.take()),
        ["ack 7 at 3", "message to shard 0", "message to shard 1"]
    );
}

#[test]
fn a_failed_append_is_refused_never_acknowledged_and_the_room_goes_on() {
    let mut h = harness();
    h.join(1, member(0, 10), "ann");
    h.take();
    h.publish(5, "lost", Some("k1"));
    h.publish(6, "kept", None);
    h.fail(0);
    h.complete(0);
    assert_eq!(
        summary(&h.take()),
        ["publish 5 refused Unavailable", "ack 6 at 2", "message to shard 0"]
    );
    // The failed key is forgotten: a retry is a new message, not a repeat.
    h.publish(7, "lost", Some("k1"));
    h.complete_all();
    assert_eq!(summary(&h.take()), ["ack 7 at 3", "message to shard 0"]);
    let offsets: Vec<u64> = h.owner.window(ROOM).iter().map(|m| m.offset).collect();
    assert_eq!(offsets, [2, 3]);
}

#[test]
fn a_repeated_idempotency_key_is_answered_after_what_it_repeats() {
    let mut h = harness();
    h.publish(5, "once", Some("k"));
    h.publish(6, "once", Some("k"));
    assert!(h.take().is_empty(), "the repeat waits for the original");
    assert_eq!(h.log.len(), 1, "stored once");
    h.complete(0);
    assert_eq!(summary(&h.take()), ["ack 5 at 1", "ack 6 at 1 (dup)"]);
    // Later repeats are answered at once.
    h.publish(7, "once", Some("k"));
    assert_eq!(summary(&h.take()), ["ack 7 at 1 (dup)"]);

    // If the original fails, so does the repeat waiting for it.
    h.publish(8, "twice", Some("j"));
    h.publish(9, "twice", Some("j"));
    h.fail(0);
    assert_eq!(
        summary(&h.take()),
        ["publish 8 refused Unavailable", "publish 9 refused Unavailable"]
    );
}

#[test]
fn membership_is_keyed_by_connection_so_stray_leaves_change_nothing() {
    let mut h = harness();
    h.join(1, member(0, 10), "ann");
    h.join(2, member(1, 11), "ann");
    h.join(3, member(1, 12), "bob");
    h.join(4, member(1, 12), "bob"); // the same connection again
    h.take();
    assert_eq!(h.owner.subscribers(ROOM), 3);
    assert_eq!(h.presence(), (vec!["ann".into(), "bob".into()], 2));

    // Leaves of connections that never joined, or left already, or of a
    // reused slot's next occupant (another id), are no-ops.
    h.leave(member(0, 99));
    h.leave(member(3, 10));
    h.leave(member(1, 12));
    h.leave(member(1, 12));
    assert!(summary(&h.take()).iter().all(|s| s.starts_with("presence")));
    assert_eq!(h.owner.subscribers(ROOM), 2);
    assert_eq!(h.presence(), (vec!["ann".into()], 1));

    // One of ann's two connections leaving keeps her present.
    h.leave(member(0, 10));
    assert_eq!(h.presence(), (vec!["ann".into()], 1));
    h.publish(5, "x", None);
    h.complete_all();
    assert_eq!(summary(&h.take()), ["ack 5 at 1", "message to shard 1"]);
}

#[test]
fn refused_joins_then_leaves_do_not_touch_real_members() {
    let mut config = config();
    config.default_namespace.max_subscribers = 2;
    let mut h = harness();
    h.owner = RoomOwner::new(config);
    h.join(1, member(0, 1), "ann");
    h.join(2, member(1, 2), "bob");
    h.take();
    // A third is refused, then unsubscribes and closes: both leaves.
    h.join(3, member(2, 3), "eve");
    assert_eq!(summary(&h.take()), ["join 3 refused RoomFull"], "and no presence event");
    h.leave(member(2, 3));
    h.leave(member(2, 3));
    assert!(h.take().is_empty(), "no presence event for someone never present");
    assert_eq!(h.owner.subscribers(ROOM), 2);
    assert_eq!(h.presence(), (vec!["ann".into(), "bob".into()], 2));
    h.publish(5, "x", None);
    h.complete_all();
    assert_eq!(
        summary(&h.take()),
        ["ack 5 at 1", "message to shard 0", "message to shard 1"]
    );
    // A member that was already in stays in when it joins again at the limit.
    h.join(4, member(0, 1), "ann");
    assert!(summary(&h.take())[0].starts_with("joined 4"));
}

#[test]
fn presence_events_skip_the_joiner_and_typing_needs_membership() {
    let mut h = harness();
    h.join(1, member(0, 1), "ann");
    h.take();
    h.join(2, member(1, 2), "bob");
    let outs = h.take();
    let Output::Deliver {
        audience: Audience::Presence { except },
        ..
    } = &outs[0]
    else {
        panic!("{outs:?}");
    };
    assert_eq!(*except, Some(member(1, 2)));
    h.handle(Input::Typing {
        member: member(3, 9),
        room: Arc::from(ROOM),
        user: Arc::from("eve"),
        active: true,
    });
    assert!(h.take().is_empty(), "a non-member's typing goes nowhere");
    h.handle(Input::Typing {
        member: member(1, 2),
        room: Arc::from(ROOM),
        user: Arc::from("bob"),
        active: true,
    });
    assert_eq!(summary(&h.take()), ["typing to shard 0", "typing to shard 1"]);
    h.leave(member(1, 2));
    assert_eq!(summary(&h.take()), ["presence to shard 0"]);
}

#[test]
fn user_room_messages_go_to_every_shard() {
    let mut h = harness();
    h.handle(Input::Publish {
        origin: 1,
        room: Arc::from("user:ann"),
        user: Arc::from(""),
        payload: Bytes::from_static(b"hi"),
        content_type: None,
        volatile: false,
        idempotency_key: None,
        from_server: true,
        received: h.received,
    });
    h.complete_all();
    assert_eq!(
        summary(&h.take()),
        [
            "ack 1 at 1",
            "message to shard 0",
            "message to shard 1",
            "message to shard 2",
            "message to shard 3"
        ]
    );
    // Clients may not publish there.
    h.handle(Input::Publish {
        origin: 2,
        room: Arc::from("user:ann"),
        user: Arc::from("eve"),
        payload: Bytes::from_static(b"x"),
        content_type: None,
        volatile: false,
        idempotency_key: None,
        from_server: false,
        received: h.received,
    });
    assert_eq!(summary(&h.take()), ["publish 2 refused Forbidden"]);
}

#[test]
fn recovery_is_served_from_the_window_or_read_from_the_store() {
    let mut h = harness();
    for i in 0..8 {
        h.publish(i, &format!("m{}", i + 1), None);
    }
    h.complete_all();
    h.take();
    // The window keeps 5: offsets 4..=8.
    h.join_with(1, member(0, 1), "ann", 0, Some(Position { epoch: 7, offset: 3 }));
    assert!(h.log.is_empty());
    assert_eq!(
        summary(&h.take_quiet()),
        ["joined 1 at 8 recovered=true history=[4, 5, 6, 7, 8]"]
    );
    // From offset 1 the window lacks 2 and 3: the store is asked.
    h.join_with(2, member(0, 2), "ann", 0, Some(Position { epoch: 7, offset: 1 }));
    assert!(h.take().iter().all(|o| matches!(o, Output::Deliver { .. })));
    let [LogRequest::Read { ticket, range, .. }] = &h.log[..] else {
        panic!("{:?}", h.log);
    };
    assert_eq!((range.after, range.newest), (1, false));
    let (ticket, room) = (*ticket, Arc::from(ROOM));
    h.log.clear();
    // A store that has them (and, as it may, some the window has too).
    let page = ReadPage {
        messages: vec![stored(2, "m2"), stored(3, "m3"), stored(4, "m4")],
        complete: true,
        more: false,
    };
    h.handle(Input::Log(LogDone::Read {
        ticket,
        room,
        result: Ok(page),
    }));
    assert_eq!(
        summary(&h.take()),
        ["joined 2 at 8 recovered=true history=[2, 3, 4, 5, 6, 7, 8]"]
    );
    // A store that cannot vouch for the range: not recovered, said so.
    h.join_with(3, member(0, 3), "ann", 0, Some(Position { epoch: 7, offset: 1 }));
    h.complete_all();
    let outs = h.take();
    assert_eq!(
        summary(&outs[outs.len() - 1..]),
        ["joined 3 at 8 recovered=false history=[]"]
    );
    // Another epoch never recovers, and asks no store.
    h.join_with(4, member(0, 4), "ann", 2, Some(Position { epoch: 6, offset: 1 }));
    assert!(h.log.is_empty());
    let outs = h.take();
    assert_eq!(
        summary(&outs[outs.len() - 1..]),
        ["joined 4 at 8 recovered=false history=[7, 8]"]
    );
}

#[test]
fn history_pages_come_from_the_window_and_the_store_below_it() {
    let mut h = harness();
    for i in 0..8 {
        h.publish(i, &format!("m{}", i + 1), None);
    }
    h.complete_all();
    h.take();
    let query = |before, after, limit| Input::Query {
        origin: 1,
        room: Arc::from(ROOM),
        query: Query::History { before, after, limit },
    };
    let offsets = |outs: Vec<Output<u32>>| match outs.into_iter().last() {
        Some(Output::Answer {
            answer: Answer::History { messages, has_more, .. },
            ..
        }) => (messages.iter().map(|m| m.offset).collect::<Vec<_>>(), has_more),
        other => panic!("{other:?}"),
    };
    // The newest 3: all in the window, no read.
    h.handle(query(0, 0, 3));
    assert!(h.log.is_empty());
    assert_eq!(offsets(h.take()), (vec![6, 7, 8], true));
    // After offset 1: the oldest are below the window.
    h.handle(query(0, 1, 4));
    let [LogRequest::Read { ticket, range, .. }] = &h.log[..] else {
        panic!("{:?}", h.log);
    };
    assert_eq!((range.after, range.limit, range.newest), (1, 4, false));
    let ticket = *ticket;
    h.log.clear();
    let page = ReadPage {
        messages: vec![stored(2, "m2"), stored(3, "m3")],
        complete: true,
        more: false,
    };
    h.handle(Input::Log(LogDone::Read {
        ticket,
        room: Arc::from(ROOM),
        result: Ok(page),
    }));
    assert_eq!(offsets(h.take()), (vec![2, 3, 4, 5], true));
    // An in-memory store (nothing below the window): the window's part.
    h.handle(query(0, 1, 4));
    h.complete_all();
    assert_eq!(offsets(h.take()), (vec![4, 5, 6, 7], true));
}

#[test]
fn history_leaves_the_window_by_age_and_rooms_are_bounded() {
    let mut config = config();
    config.default_namespace.history_max_age = Some(Duration::from_secs(10));
    let mut h = harness();
    h.owner = RoomOwner::new(config);
    h.publish(1, "old", None);
    h.complete_all();
    h.now_ms += 11_000;
    h.publish(2, "new", None);
    h.complete_all();
    h.take();
    let offsets: Vec<u64> = h.owner.window(ROOM).iter().map(|m| m.offset).collect();
    assert_eq!(offsets, [2]);

    // max_rooms is 3: a fourth room is refused; an unused room is forgotten.
    for room in ["a:1", "a:2"] {
        h.handle(Input::Join {
            origin: 0,
            member: member(0, 1),
            room: Arc::from(room),
            user: Arc::from("ann"),
            history: 0,
            recover: None,
            presence: false,
        });
    }
    h.handle(Input::Join {
        origin: 9,
        member: member(0, 1),
        room: Arc::from("a:3"),
        user: Arc::from("ann"),
        history: 0,
        recover: None,
        presence: false,
    });
    let outs = h.take();
    assert_eq!(
        summary(&outs).last().map(String::as_str),
        Some("join 9 refused Unavailable")
    );
    assert!(matches!(
        outs.last(),
        Some(Output::JoinResult { result: Err(r), .. }) if r.code == ErrorCode::Unavailable
    ));
    h.handle(Input::Leave {
        member: member(0, 1),
        room: Arc::from("a:1"),
    });
    assert_eq!(h.owner.room_count(), 2, "the unused room is forgotten");
}

#[test]
fn a_member_that_leaves_before_its_turn_gets_no_answer() {
    let mut h = harness();
    h.publish(1, "a", None);
    h.join(2, member(0, 5), "ann");
    h.leave(member(0, 5));
    h.complete_all();
    assert_eq!(summary(&h.take_quiet()), ["ack 1 at 1"], "no join answer");
}

#[test]
fn a_room_whose_store_is_behind_refuses_more_work_instead_of_growing() {
    let mut config = config();
    config.max_pending_per_room = 4;
    let mut h = harness();
    h.owner = RoomOwner::new(config);
    // The store answers nothing: four appends wait, the fifth is refused.
    for i in 0..4 {
        h.publish(i, "waiting", None);
    }
    assert!(h.take().is_empty());
    h.publish(9, "one too many", None);
    h.join(10, member(0, 1), "ann");
    h.handle(Input::Query {
        origin: 11,
        room: Arc::from(ROOM),
        query: Query::History {
            before: 0,
            after: 0,
            limit: 10,
        },
    });
    let outs = h.take_quiet();
    assert_eq!(
        summary(&outs),
        [
            "publish 9 refused Unavailable",
            "join 10 refused Unavailable",
            "answer 11"
        ]
    );
    assert!(matches!(
        outs.last(),
        Some(Output::Answer {
            answer: Answer::Unavailable,
            ..
        })
    ));
    assert_eq!(h.log.len(), 4, "nothing more was sent to the store");
    assert_eq!(h.owner.pending(), 4);
    // Once it catches up, the room takes work again.
    h.complete_all();
    h.take();
    h.publish(12, "again", None);
    h.complete_all();
    assert_eq!(summary(&h.take()), ["ack 12 at 5"]);
}

// ---- durable rooms: loading the head, typed store errors, memory-only namespaces ----

#[test]
fn a_room_loaded_from_the_store_continues_its_epoch_after_its_last_offset() {
    let mut h = harness();
    h.head = Some(DurableHead {
        epoch: 3,
        last_offset: 41,
    });
    h.join(1, member(0, 1), "ann");
    assert_eq!(summary(&h.take_quiet()), ["joined 1 at 41 recovered=false history=[]"]);
    h.publish(2, "after the restart", None);
    assert!(
        matches!(&h.log[..], [LogRequest::Append { message, epoch: 3, .. }] if message.offset == 42),
        "{:?}",
        h.log
    );
    h.complete_all();
    assert_eq!(summary(&h.take()), ["ack 2 at 42", "message to shard 0"]);
    assert_eq!(h.owner.position(ROOM), Some(Position { epoch: 3, offset: 42 }));
}

#[test]
fn a_resume_after_a_restart_is_read_from_the_store_and_recovered() {
    let mut h = harness();
    h.head = Some(DurableHead {
        epoch: 3,
        last_offset: 10,
    });
    h.join_with(1, member(0, 1), "ann", 0, Some(Position { epoch: 3, offset: 7 }));
    let [
        LogRequest::Read {
            ticket, range, epoch, ..
        },
    ] = &h.log[..]
    else {
        panic!("{:?}", h.log);
    };
    assert_eq!((range.after, range.newest, *epoch), (7, false, 3));
    let ticket = *ticket;
    h.log.clear();
    let page = ReadPage {
        messages: vec![stored(8, "m8"), stored(9, "m9"), stored(10, "m10")],
        complete: true,
        more: false,
    };
    h.handle(Input::Log(LogDone::Read {
        ticket,
        room: Arc::from(ROOM),
        result: Ok(page),
    }));
    assert_eq!(
        summary(&h.take_quiet()),
        ["joined 1 at 10 recovered=true history=[8, 9, 10]"]
    );
}

#[test]
fn everything_a_loading_room_receives_waits_and_runs_in_order() {
    let mut h = harness();
    h.hold_heads = true;
    h.join(1, member(0, 1), "ann");
    h.publish(2, "first", None);
    h.leave(member(0, 1));
    h.join(3, member(1, 3), "bob");
    assert!(h.take().is_empty(), "nothing runs before the head is known");
    let [LogRequest::Head { ticket, room }] = &h.log[..] else {
        panic!("one head read for the room: {:?}", h.log);
    };
    let (ticket, room) = (*ticket, room.clone());
    h.log.clear();
    h.handle(Input::Log(LogDone::Head {
        ticket,
        room,
        result: Ok(Some(DurableHead {
            epoch: 9,
            last_offset: 5,
        })),
    }));
    // ann joined at 5 and left before the publish completed, so the message
    // goes only to bob's shard; bob's answer waits behind the append.
    h.complete_all();
    assert_eq!(
        summary(&h.take_quiet()),
        [
            "joined 1 at 5 recovered=false history=[]",
            "ack 2 at 6",
            "message to shard 1",
            "joined 3 at 6 recovered=false history=[]"
        ]
    );
    assert_eq!(h.owner.position(ROOM), Some(Position { epoch: 9, offset: 6 }));
    assert_eq!(h.owner.subscribers(ROOM), 1);
}

#[test]
fn a_failed_head_read_refuses_what_waited_and_the_next_use_asks_again() {
    let mut h = harness();
    h.hold_heads = true;
    h.join(1, member(0, 1), "ann");
    h.publish(2, "x", None);
    let [LogRequest::Head { ticket, room }] = &h.log[..] else {
        panic!("{:?}", h.log);
    };
    let (ticket, room) = (*ticket, room.clone());
    h.log.clear();
    h.handle(Input::Log(LogDone::Head {
        ticket,
        room,
        result: Err(LogError::Failed("disk gone".into())),
    }));
    assert_eq!(
        summary(&h.take()),
        ["join 1 refused Unavailable", "publish 2 refused Unavailable"]
    );
    assert_eq!(h.owner.room_count(), 0, "the room is forgotten");
    h.publish(3, "y", None);
    assert!(matches!(&h.log[..], [LogRequest::Head { .. }]), "{:?}", h.log);
}

#[test]
fn a_loading_room_holds_a_bounded_number_of_inputs() {
    let mut h = harness();
    h.hold_heads = true;
    // max_pending_per_room is 16.
    for i in 0..20 {
        h.publish(i, "x", None);
    }
    let refused = summary(&h.take());
    assert_eq!(
        refused,
        vec![
            "publish 16 refused Unavailable",
            "publish 17 refused Unavailable",
            "publish 18 refused Unavailable",
            "publish 19 refused Unavailable"
        ]
    );
}

#[test]
fn a_full_store_queue_is_overloaded_and_a_store_failure_unavailable() {
    let mut h = harness();
    h.publish(1, "a", None);
    h.publish(2, "b", None);
    let tickets: Vec<_> = h
        .log
        .drain(..)
        .map(|r| match r {
            LogRequest::Append { ticket, .. } => ticket,
            other => panic!("{other:?}"),
        })
        .collect();
    h.handle(Input::Log(LogDone::Appended {
        ticket: tickets[0],
        room: Arc::from(ROOM),
        result: Err(LogError::Overloaded),
    }));
    h.handle(Input::Log(LogDone::Appended {
        ticket: tickets[1],
        room: Arc::from(ROOM),
        result: Err(LogError::Failed("no space left on device".into())),
    }));
    assert_eq!(
        summary(&h.take()),
        ["publish 1 refused Overloaded", "publish 2 refused Unavailable"]
    );
    // Nothing was acknowledged, so the offsets are free again... and the
    // next message takes the next one after what was released.
    h.publish(3, "c", None);
    h.complete_all();
    assert_eq!(summary(&h.take()), ["ack 3 at 3"]);
}

#[test]
fn a_memory_only_namespace_never_waits_for_the_store() {
    let mut h = harness();
    // `game` is not durable by default.
    let room: Arc<str> = Arc::from("game:arena");
    h.handle(Input::Join {
        origin: 1,
        member: member(0, 1),
        room: room.clone(),
        user: Arc::from("ann"),
        history: 0,
        recover: None,
        presence: false,
    });
    h.handle(Input::Publish {
        origin: 2,
        room: room.clone(),
        user: Arc::from("ann"),
        payload: Bytes::from_static(b"pos"),
        content_type: None,
        volatile: false,
        idempotency_key: None,
        from_server: false,
        received: h.received,
    });
    assert!(h.log.is_empty(), "no head, no append: {:?}", h.log);
    assert_eq!(
        summary(&h.take_quiet()),
        [
            "joined 1 at 0 recovered=false history=[]",
            "ack 2 at 1",
            "message to shard 0"
        ]
    );
    assert_eq!(h.owner.position(&room), Some(Position { epoch: 7, offset: 1 }));
}

#[test]
fn a_history_read_of_a_room_the_store_never_held_finds_no_room_and_keeps_none() {
    let mut h = harness();
    h.handle(Input::Query {
        origin: 9,
        room: Arc::from("chat:never"),
        query: Query::History {
            before: 0,
            after: 0,
            limit: 10,
        },
    });
    assert!(matches!(
        &h.take()[..],
        [Output::Answer {
            answer: Answer::NoRoom,
            ..
        }]
    ));
    assert_eq!(h.owner.room_count(), 0);
    // A stored room is read from the store and answered.
    h.head = Some(DurableHead {
        epoch: 2,
        last_offset: 4,
    });
    h.handle(Input::Query {
        origin: 9,
        room: Arc::from("chat:stored"),
        query: Query::History {
            before: 0,
            after: 0,
            limit: 10,
        },
    });
    h.complete_all();
    assert!(
        matches!(
            &h.take()[..],
            [Output::Answer {
                answer: Answer::History { epoch: 2, .. },
                ..
            }]
        ),
        "a stored room's page"
    );
}
