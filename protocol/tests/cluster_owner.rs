//! The room owner of a node in a cluster, on virtual time, against a
//! cluster log the test plays by hand: follows, sequencing and the shared
//! stream's events come back whenever the test says.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use herald_protocol::owner::{
    Answer, Audience, ClusterHead, ClusterRequest, Input, LogDone, LogError, LogRequest, Member, NamespaceConfig,
    Output, OwnerConfig, PresenceSnapshot, Query, ReadPage, RoomOwner, Sequenced, Stored, StreamEvent,
};
use herald_protocol::{DecodeLimits, decode};
use herald_protocol::{ErrorCode, Position};

const ROOM: &str = "chat:lobby";
const EPOCH: u64 = 1_700_000_000_123_456;
const T0: u64 = 1_700_000_000_000;

fn config() -> OwnerConfig {
    OwnerConfig {
        epoch: 7,
        durable_store: true,
        cluster: true,
        shards: 2,
        max_rooms: 8,
        dedup_per_room: 100,
        max_pending_per_room: 16,
        replay_budget: 64 * 1024,
        default_namespace: NamespaceConfig {
            history: 5,
            ..NamespaceConfig::general()
        },
        namespaces: vec![(
            "local".into(),
            NamespaceConfig {
                cluster: false,
                durable: false,
                ..NamespaceConfig::general()
            },
        )],
    }
}

struct Harness {
    owner: RoomOwner<u32>,
    /// Cluster requests not answered yet, in order.
    cluster: Vec<ClusterRequest>,
    /// Every other output, in order.
    out: Vec<Output<u32>>,
}

fn harness() -> Harness {
    Harness {
        owner: RoomOwner::new(config()),
        cluster: Vec::new(),
        out: Vec::new(),
    }
}

fn member(conn: u64) -> Member {
    Member { shard: 1, conn }
}

fn message(offset: u64, text: &str) -> Stored {
    Stored {
        offset,
        publisher: Arc::from("bob"),
        timestamp_ms: T0,
        payload: Bytes::copy_from_slice(text.as_bytes()),
        content_type: None,
    }
}

impl Harness {
    fn handle(&mut self, input: Input<u32>) {
        self.owner.handle(T0, input);
        while let Some(out) = self.owner.poll_output() {
            match out {
                Output::Log(LogRequest::Cluster(r)) => self.cluster.push(r),
                Output::Log(other) => panic!("a clustered room asked the local store: {other:?}"),
                other => self.out.push(other),
            }
        }
    }

    fn take(&mut self) -> Vec<Output<u32>> {
        std::mem::take(&mut self.out)
    }

    fn join(&mut self, origin: u32, conn: u64, user: &str, recover: Option<Position>) {
        self.join_room(ROOM, origin, conn, user, recover, true);
    }

    fn join_room(&mut self, room: &str, origin: u32, conn: u64, user: &str, recover: Option<Position>, presence: bool) {
        self.handle(Input::Join {
            origin,
            member: member(conn),
            room: Arc::from(room),
            user: Arc::from(user),
            history: 0,
            recover,
            presence,
        });
    }

    fn publish(&mut self, origin: u32, text: &str, key: Option<&str>, volatile: bool) {
        self.handle(Input::Publish {
            origin,
            room: Arc::from(ROOM),
            user: Arc::from("ann"),
            payload: Bytes::copy_from_slice(text.as_bytes()),
            content_type: None,
            volatile,
            idempotency_key: key.map(str::to_owned),
            from_server: false,
            received: Instant::now(),
        });
    }

    fn stream(&mut self, events: Vec<StreamEvent>) {
        self.handle(Input::Log(LogDone::Streamed {
            room: Arc::from(ROOM),
            events,
        }));
    }

    fn messages(&mut self, offsets: &[u64]) {
        let events = offsets
            .iter()
            .map(|&o| StreamEvent::Message {
                epoch: EPOCH,
                message: message(o, &format!("m{o}")),
            })
            .collect();
        self.stream(events);
    }

    /// Removes and returns the first pending cluster request `pick` accepts.
    fn request<T>(&mut self, mut pick: impl FnMut(&ClusterRequest) -> Option<T>) -> T {
        let i = self
            .cluster
            .iter()
            .position(|r| pick(r).is_some())
            .unwrap_or_else(|| panic!("no such request in {:?}", self.cluster));
        let r = self.cluster.remove(i);
        pick(&r).expect("picked")
    }

    fn answer_follow(&mut self, last_offset: u64, presence: &[&str]) {
        let ticket = self.request(|r| match r {
            ClusterRequest::Follow { ticket, .. } => Some(*ticket),
            _ => None,
        });
        self.handle(Input::Log(LogDone::Followed {
            ticket,
            room: Arc::from(ROOM),
            result: Ok(ClusterHead {
                epoch: EPOCH,
                last_offset,
                presence_count: presence.len() as u64,
                presence_sample: presence.iter().map(|u| Arc::from(*u)).collect(),
            }),
        }));
    }
}

/// Offsets of the message frames delivered, in order, decoded.
fn delivered_offsets(out: &[Output<u32>]) -> Vec<u64> {
    out.iter()
        .filter_map(|o| match o {
            Output::Deliver {
                frame,
                audience: Audience::Members { volatile: false, .. },
                ..
            } => Some(offset_of(frame)),
            _ => None,
        })
        .collect()
}

fn offset_of(frame: &Bytes) -> u64 {
    let frame = decode(frame, &DecodeLimits::SERVER_TO_CLIENT).expect("a frame");
    frame.body_as_message().expect("a message").offset()
}

#[test]
fn a_join_follows_the_room_and_continues_the_clusters_offsets() {
    let mut h = harness();
    h.join(1, 10, "ann", None);
    assert!(h.take().is_empty(), "the join waits for the follow");
    h.answer_follow(41, &["bob"]);
    let out = h.take();
    let Some(Output::JoinResult { result: Ok(joined), .. }) = out.first() else {
        panic!("{out:?}");
    };
    assert_eq!((joined.epoch, joined.offset), (EPOCH, 41));
    // The snapshot is the cluster's, not this node's.
    assert_eq!(joined.presence.as_ref().map(|p| p.count), Some(1));
    // Ann's arrival goes to the cluster's log, not straight to members.
    assert!(h.cluster.iter().any(|r| matches!(r,
        ClusterRequest::Presence { user, joined: true, .. } if &**user == "ann")));
    h.messages(&[42, 43]);
    assert_eq!(delivered_offsets(&h.take()), vec![42, 43]);
    assert_eq!(
        h.owner.position(ROOM),
        Some(Position {
            epoch: EPOCH,
            offset: 43
        })
    );
}

#[test]
fn publishes_are_sequenced_by_the_cluster_and_never_acked_before() {
    let mut h = harness();
    // A publish needs no follow: nobody here has to receive the room.
    h.publish(5, "hi", Some("k1"), false);
    assert!(h.take().is_empty(), "no ack before the cluster's answer");
    let (ticket, keep, durable, key) = h.request(|r| match r {
        ClusterRequest::Publish {
            ticket,
            keep,
            durable,
            idempotency_key,
            ..
        } => Some((*ticket, *keep, *durable, idempotency_key.clone())),
        _ => None,
    });
    assert!(keep >= 5 && durable);
    assert_eq!(key.as_deref(), Some("k1"));
    assert!(h.owner.room_count() == 0, "publishing follows nothing");
    let position = Position {
        epoch: EPOCH,
        offset: 9,
    };
    h.handle(Input::Log(LogDone::Published {
        ticket,
        room: Arc::from(ROOM),
        result: Ok(Sequenced {
            position,
            duplicate: true,
        }),
    }));
    let out = h.take();
    assert!(
        matches!(&out[..], [Output::PublishResult { origin: 5, result: Ok(p), duplicate: true }] if *p == position),
        "{out:?}"
    );
    // A failure is a refusal, never an ack.
    h.publish(6, "again", None, false);
    let ticket = h.request(|r| match r {
        ClusterRequest::Publish { ticket, .. } => Some(*ticket),
        _ => None,
    });
    h.handle(Input::Log(LogDone::Published {
        ticket,
        room: Arc::from(ROOM),
        result: Err(LogError::Failed("redis: connection refused".into())),
    }));
    let out = h.take();
    assert!(
        matches!(&out[..], [Output::PublishResult { origin: 6, result: Err(r), .. }] if r.code == ErrorCode::Unavailable),
        "{out:?}"
    );
}

#[test]
fn repeated_and_old_stream_entries_are_delivered_once() {
    let mut h = harness();
    h.join(1, 10, "ann", None);
    h.answer_follow(3, &[]);
    h.take();
    // A reader that re-reads after reconnecting hands over what it gave.
    h.messages(&[2, 3, 4, 5]);
    h.messages(&[4, 5, 6]);
    assert_eq!(delivered_offsets(&h.take()), vec![4, 5, 6]);
}

#[test]
fn a_resume_reads_the_log_up_to_what_this_node_released_and_keeps_order() {
    let mut h = harness();
    h.join(1, 10, "ann", None);
    h.answer_follow(20, &[]);
    h.take();
    // Another connection resumes from 15: the window holds nothing older
    // than this node's follow, so the log is read, bounded at 20 (what the
    // log holds past it arrives as events).
    h.join(
        2,
        11,
        "cy",
        Some(Position {
            epoch: EPOCH,
            offset: 15,
        }),
    );
    let (ticket, range) = h.request(|r| match r {
        ClusterRequest::Read { ticket, range, .. } => Some((*ticket, *range)),
        _ => None,
    });
    assert_eq!((range.after, range.before), (15, 21));
    // 21 arrives while the read is out: it waits behind the join.
    h.messages(&[21]);
    assert!(delivered_offsets(&h.take()).is_empty());
    h.handle(Input::Log(LogDone::Read {
        ticket,
        room: Arc::from(ROOM),
        result: Ok(ReadPage {
            messages: (16..=20).map(|o| message(o, "old")).collect(),
            complete: true,
            more: false,
        }),
    }));
    let out = h.take();
    let Some(Output::JoinResult {
        origin: 2,
        result: Ok(joined),
        ..
    }) = out.first()
    else {
        panic!("{out:?}");
    };
    assert!(joined.recovered);
    assert_eq!(
        joined.history.iter().map(|m| m.offset).collect::<Vec<_>>(),
        vec![16, 17, 18, 19, 20]
    );
    assert_eq!(joined.offset, 20);
    assert_eq!(delivered_offsets(&out), vec![21], "delivered after the answer, once");
}

#[test]
fn a_range_gone_from_the_log_is_not_recovered() {
    let mut h = harness();
    h.join(
        1,
        10,
        "ann",
        Some(Position {
            epoch: EPOCH,
            offset: 2,
        }),
    );
    h.answer_follow(900, &[]);
    let ticket = h.request(|r| match r {
        ClusterRequest::Read { ticket, .. } => Some(*ticket),
        _ => None,
    });
    h.handle(Input::Log(LogDone::Read {
        ticket,
        room: Arc::from(ROOM),
        result: Ok(ReadPage {
            messages: vec![message(899, "x"), message(900, "y")],
            complete: false,
            more: false,
        }),
    }));
    let out = h.take();
    assert!(
        matches!(out.first(), Some(Output::JoinResult { result: Ok(j), .. }) if !j.recovered),
        "{out:?}"
    );
}

#[test]
fn the_last_member_leaving_stops_following() {
    let mut h = harness();
    h.join(1, 10, "ann", None);
    h.answer_follow(0, &[]);
    h.take();
    h.cluster.clear();
    h.handle(Input::Leave {
        member: member(10),
        room: Arc::from(ROOM),
    });
    assert_eq!(h.owner.room_count(), 0);
    assert!(
        h.cluster.iter().any(|r| matches!(r, ClusterRequest::Unfollow { .. })),
        "{:?}",
        h.cluster
    );
    assert!(
        h.cluster
            .iter()
            .any(|r| matches!(r, ClusterRequest::Presence { joined: false, .. }))
    );
    // Events still in flight for it are dropped.
    h.messages(&[1]);
    assert!(h.take().is_empty());
}

#[test]
fn a_failed_follow_refuses_the_join_and_forgets_the_room() {
    let mut h = harness();
    h.join(1, 10, "ann", None);
    let ticket = h.request(|r| match r {
        ClusterRequest::Follow { ticket, .. } => Some(*ticket),
        _ => None,
    });
    h.handle(Input::Log(LogDone::Followed {
        ticket,
        room: Arc::from(ROOM),
        result: Err(LogError::Failed("redis down".into())),
    }));
    let out = h.take();
    assert!(
        matches!(&out[..], [Output::JoinResult { result: Err(r), .. }] if r.code == ErrorCode::Unavailable),
        "{out:?}"
    );
    assert_eq!(h.owner.room_count(), 0);
}

#[test]
fn presence_and_typing_travel_through_the_log() {
    let mut h = harness();
    h.join(1, 10, "ann", None);
    h.answer_follow(0, &["bob"]);
    h.take();
    // Ann's own arrival comes back from the log: Ann is left out.
    h.stream(vec![StreamEvent::Presence {
        user: Arc::from("ann"),
        joined: true,
        count: 2,
        except: Some(member(10)),
    }]);
    let out = h.take();
    assert!(
        matches!(&out[..], [Output::Deliver { audience: Audience::Presence { except: Some(m) }, .. }] if *m == member(10)),
        "{out:?}"
    );
    // Someone on another node leaves.
    h.stream(vec![StreamEvent::Presence {
        user: Arc::from("bob"),
        joined: false,
        count: 1,
        except: None,
    }]);
    h.take();
    h.handle(Input::Query {
        origin: 3,
        room: Arc::from(ROOM),
        query: Query::Presence,
    });
    let out = h.take();
    assert!(
        matches!(&out[..], [Output::Answer { answer: Answer::Presence(PresenceSnapshot { users, count: 1 }), .. }]
            if users.len() == 1 && &*users[0] == "ann"),
        "{out:?}"
    );
    // Typing is not delivered here directly but through the log.
    h.handle(Input::Typing {
        member: member(10),
        room: Arc::from(ROOM),
        user: Arc::from("ann"),
        active: true,
    });
    assert!(h.take().is_empty());
    assert!(
        h.cluster
            .iter()
            .any(|r| matches!(r, ClusterRequest::Typing { active: true, .. }))
    );
    h.stream(vec![StreamEvent::Typing {
        user: Arc::from("dan"),
        active: true,
        except: None,
    }]);
    let out = h.take();
    assert!(
        matches!(
            &out[..],
            [Output::Deliver {
                audience: Audience::Typing { except: None },
                ..
            }]
        ),
        "{out:?}"
    );
}

#[test]
fn presence_of_a_room_not_followed_here_is_asked_of_the_cluster() {
    let mut h = harness();
    h.handle(Input::Query {
        origin: 4,
        room: Arc::from(ROOM),
        query: Query::Presence,
    });
    let ticket = h.request(|r| match r {
        ClusterRequest::PresenceRead { ticket, .. } => Some(*ticket),
        _ => None,
    });
    assert_eq!(h.owner.room_count(), 0);
    h.handle(Input::Log(LogDone::Presence {
        ticket,
        room: Arc::from(ROOM),
        result: Ok(PresenceSnapshot {
            users: vec![Arc::from("zed")],
            count: 1,
        }),
    }));
    let out = h.take();
    assert!(
        matches!(&out[..], [Output::Answer { origin: 4, answer: Answer::Presence(p), .. }] if p.count == 1),
        "{out:?}"
    );
}

#[test]
fn volatile_publishes_are_acked_at_once_and_delivered_from_the_log() {
    let mut h = harness();
    h.publish(7, "pos", None, true);
    let out = h.take();
    assert!(matches!(&out[..], [Output::PublishResult { origin: 7, result: Ok(p), .. }] if p.offset == 0));
    assert!(h.cluster.iter().any(|r| matches!(r, ClusterRequest::Volatile { .. })));
    h.join(1, 10, "ann", None);
    h.answer_follow(0, &[]);
    h.take();
    h.stream(vec![StreamEvent::Volatile {
        epoch: EPOCH,
        message: message(0, "pos"),
        except: None,
    }]);
    let out = h.take();
    assert!(
        matches!(
            &out[..],
            [Output::Deliver {
                audience: Audience::Members { volatile: true, .. },
                ..
            }]
        ),
        "{out:?}"
    );
}

#[test]
fn local_namespaces_never_touch_the_cluster() {
    let mut h = harness();
    h.join_room("local:x", 1, 10, "ann", None, true);
    let out = h.take();
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::JoinResult { result: Ok(_), .. })),
        "{out:?}"
    );
    assert!(h.cluster.is_empty(), "{:?}", h.cluster);
    h.handle(Input::Publish {
        origin: 2,
        room: Arc::from("local:x"),
        user: Arc::from("ann"),
        payload: Bytes::from_static(b"x"),
        content_type: None,
        volatile: false,
        idempotency_key: None,
        from_server: false,
        received: Instant::now(),
    });
    let out = h.take();
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::PublishResult { result: Ok(p), .. } if p.epoch == 7 && p.offset == 1))
    );
    assert!(h.cluster.is_empty());
}

#[test]
fn a_new_epoch_in_the_log_replaces_the_old_window() {
    let mut h = harness();
    h.join(1, 10, "ann", None);
    h.answer_follow(10, &[]);
    h.messages(&[11]);
    h.take();
    // The room's stream and metadata were lost: a new epoch starts at 1.
    h.stream(vec![StreamEvent::Message {
        epoch: EPOCH + 1,
        message: message(1, "new"),
    }]);
    assert_eq!(delivered_offsets(&h.take()), vec![1]);
    assert_eq!(
        h.owner.position(ROOM),
        Some(Position {
            epoch: EPOCH + 1,
            offset: 1
        })
    );
    assert_eq!(h.owner.window(ROOM).len(), 1);
}

#[test]
fn a_users_room_whose_follow_failed_is_followed_again_while_the_user_is_here() {
    let mut h = harness();
    let room: Arc<str> = Arc::from("user:ann");
    h.handle(Input::UserHere {
        room: room.clone(),
        shard: 1,
        here: true,
    });
    let ticket = h.request(|r| match r {
        ClusterRequest::Follow { ticket, .. } => Some(*ticket),
        _ => None,
    });
    h.handle(Input::Log(LogDone::Followed {
        ticket,
        room: room.clone(),
        result: Err(LogError::Failed("redis: timed out".into())),
    }));
    assert!(h.owner.has_retries());
    assert!(h.cluster.is_empty(), "kept, not unfollowed: {:?}", h.cluster);
    // Not before it is due (the harness's clock stands still)...
    h.handle(Input::Tick);
    assert!(h.cluster.is_empty());
    // ...then asked again.
    h.owner.handle(T0 + 1_000, Input::Tick);
    while let Some(out) = h.owner.poll_output() {
        if let Output::Log(LogRequest::Cluster(r)) = out {
            h.cluster.push(r);
        }
    }
    let ticket = h.request(|r| match r {
        ClusterRequest::Follow { ticket, .. } => Some(*ticket),
        _ => None,
    });
    h.handle(Input::Log(LogDone::Followed {
        ticket,
        room: room.clone(),
        result: Ok(ClusterHead {
            epoch: EPOCH,
            last_offset: 0,
            presence_count: 0,
            presence_sample: Vec::new(),
        }),
    }));
    assert!(!h.owner.has_retries());
    // The user's messages are delivered to every shard.
    h.handle(Input::Log(LogDone::Streamed {
        room: room.clone(),
        events: vec![StreamEvent::Message {
            epoch: EPOCH,
            message: message(1, "hi"),
        }],
    }));
    let out = h.take();
    assert_eq!(
        out.iter().filter(|o| matches!(o, Output::Deliver { .. })).count(),
        2,
        "to both shards: {out:?}"
    );
    // The user's last connection leaves: the room is let go.
    h.handle(Input::UserHere {
        room: room.clone(),
        shard: 1,
        here: false,
    });
    assert!(h.cluster.iter().any(|r| matches!(r, ClusterRequest::Unfollow { .. })));
    assert_eq!(h.owner.room_count(), 0);
}
