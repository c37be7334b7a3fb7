//! Round-trip properties of the codec: every frame body kind survives
//! `Encoder::frame` -> `decode` -> `unpack` unchanged, and the dedicated
//! hot-path encoders produce exactly what the object API describes.

#[macro_use]
mod support;

use herald_protocol::wire::{self, Body, BodyT, ErrorCode, FrameT};
use herald_protocol::{
    DecodeLimits, Encoder, MessageRef, PresenceRef, PublishRef, SubscribedRef, decode, is_client_body, is_server_body,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

const CASES: u32 = 256;

// ---- strategies -------------------------------------------------------------

/// Any string, including NUL, newlines and non-ASCII characters.
fn text() -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..24).prop_map(|c| c.into_iter().collect())
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    option::of(text())
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..64)
}

fn opt_bytes() -> impl Strategy<Value = Option<Vec<u8>>> {
    option::of(bytes())
}

/// Finite doubles (NaN is not equal to itself), both signs, all classes.
fn finite() -> impl Strategy<Value = f64> {
    use proptest::num::f64::{NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO
}

fn code() -> impl Strategy<Value = ErrorCode> {
    any::<u16>().prop_map(ErrorCode)
}

fn opt_vec<S: Strategy>(s: S) -> impl Strategy<Value = Option<Vec<S::Value>>> {
    option::of(vec(s, 0..4))
}

fn key_value() -> impl Strategy<Value = wire::KeyValueT> {
    (text(), opt_text()).prop_map(|(key, value)| obj!(wire::KeyValueT { key, value }))
}

fn message() -> impl Strategy<Value = wire::MessageT> {
    (
        text(),
        any::<u64>(),
        any::<u64>(),
        opt_text(),
        any::<u64>(),
        opt_bytes(),
        opt_text(),
        any::<bool>(),
    )
        .prop_map(
            |(room, epoch, offset, publisher, timestamp_ms, payload, content_type, volatile)| {
                obj!(wire::MessageT {
                    room,
                    epoch,
                    offset,
                    publisher,
                    timestamp_ms,
                    payload,
                    content_type,
                    volatile,
                })
            },
        )
}

fn presence_snapshot() -> impl Strategy<Value = wire::PresenceSnapshotT> {
    (text(), opt_vec(text()), any::<u64>(), any::<bool>()).prop_map(|(room, users, count, truncated)| {
        obj!(wire::PresenceSnapshotT {
            room,
            users,
            count,
            truncated,
        })
    })
}

fn notification() -> impl Strategy<Value = wire::NotificationT> {
    (
        any::<u64>(),
        opt_text(),
        opt_text(),
        opt_text(),
        opt_bytes(),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(|(id, kind, title, body, data, created_ms, read)| {
            obj!(wire::NotificationT {
                id,
                kind,
                title,
                body,
                data,
                created_ms,
                read,
            })
        })
}

fn limits() -> impl Strategy<Value = wire::LimitsT> {
    any::<[u32; 7]>().prop_map(|l| {
        obj!(wire::LimitsT {
            max_frame_bytes: l[0],
            max_payload_bytes: l[1],
            max_rooms: l[2],
            max_room_name_bytes: l[3],
            publish_rate_per_sec: l[4],
            publish_burst: l[5],
            max_outbound_bytes: l[6],
        })
    })
}

/// Arbitrary bodies of one kind.
fn body(kind: Body) -> BoxedStrategy<BodyT> {
    match kind {
        Body::Connect => (
            opt_text(),
            opt_text(),
            opt_text(),
            opt_text(),
            opt_vec((text(), any::<u64>(), any::<u64>())),
        )
            .prop_map(|(protocol, token, client_name, client_version, resume)| {
                BodyT::Connect(Box::new(obj!(wire::ConnectT {
                    protocol,
                    token,
                    client_name,
                    client_version,
                    resume: resume.map(|r| {
                        r.into_iter()
                            .map(|(room, epoch, offset)| obj!(wire::RoomPositionT { room, epoch, offset }))
                            .collect()
                    }),
                })))
            })
            .boxed(),
        Body::Subscribe => (text(), any::<u32>(), any::<u64>(), any::<u64>(), any::<bool>())
            .prop_map(|(room, history, recover_epoch, recover_offset, presence)| {
                BodyT::Subscribe(Box::new(obj!(wire::SubscribeT {
                    room,
                    history,
                    recover_epoch,
                    recover_offset,
                    presence,
                })))
            })
            .boxed(),
        Body::Unsubscribe => text()
            .prop_map(|room| BodyT::Unsubscribe(Box::new(obj!(wire::UnsubscribeT { room }))))
            .boxed(),
        Body::Publish => (text(), opt_bytes(), opt_text(), any::<bool>(), opt_text())
            .prop_map(|(room, payload, content_type, volatile, idempotency_key)| {
                BodyT::Publish(Box::new(obj!(wire::PublishT {
                    room,
                    payload,
                    content_type,
                    volatile,
                    idempotency_key,
                })))
            })
            .boxed(),
        Body::Typing => (text(), any::<bool>())
            .prop_map(|(room, active)| BodyT::Typing(Box::new(obj!(wire::TypingT { room, active }))))
            .boxed(),
        Body::PresenceQuery => text()
            .prop_map(|room| BodyT::PresenceQuery(Box::new(obj!(wire::PresenceQueryT { room }))))
            .boxed(),
        Body::HistoryQuery => (text(), any::<u64>(), any::<u64>(), any::<u32>())
            .prop_map(|(room, before, after, limit)| {
                BodyT::HistoryQuery(Box::new(obj!(wire::HistoryQueryT {
                    room,
                    before,
                    after,
                    limit,
                })))
            })
            .boxed(),
        Body::NotificationsQuery => (any::<bool>(), any::<u64>(), any::<u32>())
            .prop_map(|(unread_only, before_id, limit)| {
                BodyT::NotificationsQuery(Box::new(obj!(wire::NotificationsQueryT {
                    unread_only,
                    before_id,
                    limit,
                })))
            })
            .boxed(),
        Body::NotificationsMarkRead => (opt_vec(any::<u64>()), any::<u64>())
            .prop_map(|(ids, up_to)| {
                BodyT::NotificationsMarkRead(Box::new(obj!(wire::NotificationsMarkReadT { ids, up_to })))
            })
            .boxed(),
        Body::AnalyticsEvent => (text(), finite(), opt_vec(key_value()))
            .prop_map(|(name, value, dimensions)| {
                BodyT::AnalyticsEvent(Box::new(obj!(wire::AnalyticsEventT {
                    name,
                    value,
                    dimensions,
                })))
            })
            .boxed(),
        Body::MetricsSubscribe => (opt_vec(text()), any::<u32>())
            .prop_map(|(names, interval_ms)| {
                BodyT::MetricsSubscribe(Box::new(obj!(wire::MetricsSubscribeT { names, interval_ms })))
            })
            .boxed(),
        Body::Ping => any::<u64>()
            .prop_map(|nonce| BodyT::Ping(Box::new(obj!(wire::PingT { nonce }))))
            .boxed(),
        Body::Pong => any::<u64>()
            .prop_map(|nonce| BodyT::Pong(Box::new(obj!(wire::PongT { nonce }))))
            .boxed(),
        Body::Connected => (
            opt_text(),
            opt_text(),
            opt_text(),
            any::<u64>(),
            any::<u32>(),
            option::of(limits()),
        )
            .prop_map(
                |(session_id, node_id, user_id, server_time_ms, heartbeat_interval_ms, limits)| {
                    BodyT::Connected(Box::new(obj!(wire::ConnectedT {
                        session_id,
                        node_id,
                        user_id,
                        server_time_ms,
                        heartbeat_interval_ms,
                        limits: limits.map(Box::new),
                    })))
                },
            )
            .boxed(),
        Body::Reply => (code(), opt_text(), any::<u64>(), any::<u64>())
            .prop_map(|(code, message, epoch, offset)| {
                BodyT::Reply(Box::new(obj!(wire::ReplyT {
                    code,
                    message,
                    epoch,
                    offset,
                })))
            })
            .boxed(),
        Body::Subscribed => (
            text(),
            any::<u64>(),
            any::<u64>(),
            any::<bool>(),
            opt_vec(message()),
            option::of(presence_snapshot()),
        )
            .prop_map(|(room, epoch, offset, recovered, history, presence)| {
                BodyT::Subscribed(Box::new(obj!(wire::SubscribedT {
                    room,
                    epoch,
                    offset,
                    recovered,
                    history,
                    presence: presence.map(Box::new),
                })))
            })
            .boxed(),
        Body::Message => message().prop_map(|m| BodyT::Message(Box::new(m))).boxed(),
        Body::PresenceJoin => (text(), text())
            .prop_map(|(room, user)| BodyT::PresenceJoin(Box::new(obj!(wire::PresenceJoinT { room, user }))))
            .boxed(),
        Body::PresenceLeave => (text(), text())
            .prop_map(|(room, user)| BodyT::PresenceLeave(Box::new(obj!(wire::PresenceLeaveT { room, user }))))
            .boxed(),
        Body::PresenceSnapshot => presence_snapshot()
            .prop_map(|p| BodyT::PresenceSnapshot(Box::new(p)))
            .boxed(),
        Body::TypingEvent => (text(), text(), any::<bool>())
            .prop_map(|(room, user, active)| {
                BodyT::TypingEvent(Box::new(obj!(wire::TypingEventT { room, user, active })))
            })
            .boxed(),
        Body::HistoryPage => (text(), any::<u64>(), opt_vec(message()), any::<bool>())
            .prop_map(|(room, epoch, messages, has_more)| {
                BodyT::HistoryPage(Box::new(obj!(wire::HistoryPageT {
                    room,
                    epoch,
                    messages,
                    has_more,
                })))
            })
            .boxed(),
        Body::Notification => notification().prop_map(|n| BodyT::Notification(Box::new(n))).boxed(),
        Body::NotificationsPage => (opt_vec(notification()), any::<u64>(), any::<bool>())
            .prop_map(|(notifications, unread, has_more)| {
                BodyT::NotificationsPage(Box::new(obj!(wire::NotificationsPageT {
                    notifications,
                    unread,
                    has_more,
                })))
            })
            .boxed(),
        Body::MetricsUpdate => (any::<u64>(), opt_vec((text(), finite(), opt_vec(key_value()))))
            .prop_map(|(timestamp_ms, samples)| {
                BodyT::MetricsUpdate(Box::new(obj!(wire::MetricsUpdateT {
                    timestamp_ms,
                    samples: samples.map(|s| {
                        s.into_iter()
                            .map(|(name, value, labels)| obj!(wire::MetricSampleT { name, value, labels }))
                            .collect()
                    }),
                })))
            })
            .boxed(),
        Body::Alert => (text(), any::<u8>(), opt_text(), finite(), finite(), any::<u64>())
            .prop_map(|(name, severity, message, value, threshold, timestamp_ms)| {
                BodyT::Alert(Box::new(obj!(wire::AlertT {
                    name,
                    severity: wire::Severity(severity),
                    message,
                    value,
                    threshold,
                    timestamp_ms,
                })))
            })
            .boxed(),
        Body::Error => (code(), opt_text(), opt_text())
            .prop_map(|(code, message, room)| BodyT::Error(Box::new(obj!(wire::ErrorT { code, message, room }))))
            .boxed(),
        Body::GoAway => (code(), opt_text(), any::<u32>())
            .prop_map(|(code, reason, reconnect_after_ms)| {
                BodyT::GoAway(Box::new(obj!(wire::GoAwayT {
                    code,
                    reason,
                    reconnect_after_ms,
                })))
            })
            .boxed(),
        other => panic!("no strategy for body kind {other:?}: add one"),
    }
}

fn frame(kind: Body) -> impl Strategy<Value = FrameT> {
    (any::<u32>(), body(kind)).prop_map(|(request_id, body)| obj!(wire::FrameT { request_id, body }))
}

// ---- helpers ----------------------------------------------------------------

fn decode_unpack(bytes: &[u8]) -> Result<FrameT, TestCaseError> {
    let decoded = decode(bytes, &DecodeLimits::SERVER_TO_CLIENT)
        .map_err(|e| TestCaseError::fail(format!("decode failed: {e}")))?;
    Ok(decoded.unpack())
}

fn assert_round_trip(frame: &FrameT) -> Result<(), TestCaseError> {
    let bytes = Encoder::new().frame(frame);
    let decoded = decode(&bytes, &DecodeLimits::SERVER_TO_CLIENT)
        .map_err(|e| TestCaseError::fail(format!("decode failed: {e}")))?;
    prop_assert_eq!(decoded.body_type(), frame.body.body_type());
    prop_assert_eq!(decoded.request_id(), frame.request_id);
    prop_assert_eq!(&decoded.unpack(), frame);
    // The thread's shared encoder produces the same bytes.
    prop_assert_eq!(herald_protocol::with_encoder(|e| e.frame(frame)), bytes);
    Ok(())
}

fn message_t(m: &MessageRef<'_>) -> wire::MessageT {
    obj!(wire::MessageT {
        room: m.room.to_owned(),
        epoch: m.epoch,
        offset: m.offset,
        publisher: Some(m.publisher.to_owned()),
        timestamp_ms: m.timestamp_ms,
        payload: Some(m.payload.to_vec()),
        content_type: m.content_type.map(str::to_owned),
        volatile: m.volatile,
    })
}

#[derive(Debug, Clone)]
struct OwnedMessage {
    room: String,
    epoch: u64,
    offset: u64,
    publisher: String,
    timestamp_ms: u64,
    payload: Vec<u8>,
    content_type: Option<String>,
    volatile: bool,
}

impl OwnedMessage {
    fn as_ref(&self) -> MessageRef<'_> {
        MessageRef {
            room: &self.room,
            epoch: self.epoch,
            offset: self.offset,
            publisher: &self.publisher,
            timestamp_ms: self.timestamp_ms,
            payload: &self.payload,
            content_type: self.content_type.as_deref(),
            volatile: self.volatile,
        }
    }
}

fn owned_message() -> impl Strategy<Value = OwnedMessage> {
    (
        text(),
        any::<u64>(),
        any::<u64>(),
        text(),
        any::<u64>(),
        bytes(),
        opt_text(),
        any::<bool>(),
    )
        .prop_map(
            |(room, epoch, offset, publisher, timestamp_ms, payload, content_type, volatile)| OwnedMessage {
                room,
                epoch,
                offset,
                publisher,
                timestamp_ms,
                payload,
                content_type,
                volatile,
            },
        )
}

// ---- every body kind round-trips -------------------------------------------

macro_rules! round_trip_every_kind {
    ($($test:ident => $kind:ident),* $(,)?) => {
        mod round_trip {
            use super::*;

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(CASES))]
                $(
                    #[test]
                    fn $test(f in frame(Body::$kind)) {
                        assert_round_trip(&f)?;
                    }
                )*
            }
        }

        /// A union member added to the schema must get a round-trip test.
        #[test]
        fn every_union_member_has_a_round_trip_test() {
            let tested = [$(Body::$kind),*];
            let all = &Body::ENUM_VALUES[1..];
            assert_eq!(tested.len(), all.len(), "tested {tested:?}");
            for kind in all {
                assert!(tested.contains(kind), "{kind:?} has no round-trip test");
            }
        }
    };
}

round_trip_every_kind! {
    connect => Connect,
    subscribe => Subscribe,
    unsubscribe => Unsubscribe,
    publish => Publish,
    typing => Typing,
    presence_query => PresenceQuery,
    history_query => HistoryQuery,
    notifications_query => NotificationsQuery,
    notifications_mark_read => NotificationsMarkRead,
    analytics_event => AnalyticsEvent,
    metrics_subscribe => MetricsSubscribe,
    ping => Ping,
    pong => Pong,
    connected => Connected,
    reply => Reply,
    subscribed => Subscribed,
    message => Message,
    presence_join => PresenceJoin,
    presence_leave => PresenceLeave,
    presence_snapshot => PresenceSnapshot,
    typing_event => TypingEvent,
    history_page => HistoryPage,
    notification => Notification,
    notifications_page => NotificationsPage,
    metrics_update => MetricsUpdate,
    alert => Alert,
    error => Error,
    go_away => GoAway,
}

#[test]
fn every_kind_is_sent_by_exactly_the_right_side() {
    for &kind in &Body::ENUM_VALUES[1..] {
        let both = matches!(kind, Body::Ping | Body::Pong);
        let client = kind.0 <= Body::Pong.0;
        assert_eq!(is_client_body(kind), client, "{kind:?}");
        assert_eq!(is_server_body(kind), !client || both, "{kind:?}");
    }
    assert!(!is_client_body(Body::NONE) && !is_server_body(Body::NONE));
    assert!(!is_client_body(Body(29)) && !is_server_body(Body(29)));
}

#[test]
fn fixed_samples_of_every_kind_round_trip() {
    let samples = support::frames::every_kind();
    let kinds: Vec<Body> = samples.iter().map(|f| f.body.body_type()).collect();
    assert_eq!(kinds, Body::ENUM_VALUES[1..]);
    for f in &samples {
        let bytes = Encoder::new().frame(f);
        assert_eq!(&support::frames::parse(&bytes), f);
    }
}

// ---- the dedicated encoders match the object API ---------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn message_encoder_matches_object_api(m in owned_message()) {
        let bytes = Encoder::new().message(&m.as_ref());
        // The hand-laid frame passes the generic verifier and the fast one.
        prop_assert!(wire::root_as_frame_with_opts(&DecodeLimits::SERVER_TO_CLIENT.verifier_options(), &bytes).is_ok());
        prop_assert!(herald_protocol::fast_verifier_accepts(&bytes));
        let expected = obj!(wire::FrameT { request_id: 0, body: BodyT::Message(Box::new(message_t(&m.as_ref()))) });
        prop_assert_eq!(decode_unpack(&bytes)?, expected);
    }

    #[test]
    fn publish_encoder_matches_object_api(
        request_id in any::<u32>(),
        room in text(),
        payload in bytes(),
        content_type in opt_text(),
        volatile in any::<bool>(),
        idempotency_key in opt_text(),
    ) {
        let p = PublishRef {
            room: &room,
            payload: &payload,
            content_type: content_type.as_deref(),
            volatile,
            idempotency_key: idempotency_key.as_deref(),
        };
        let bytes = Encoder::new().publish(request_id, &p);
        let expected = obj!(wire::FrameT {
            request_id,
            body: BodyT::Publish(Box::new(obj!(wire::PublishT {
                room: room.clone(),
                payload: Some(payload.clone()),
                content_type: content_type.clone(),
                volatile,
                idempotency_key: idempotency_key.clone(),
            }))),
        });
        prop_assert_eq!(decode_unpack(&bytes)?, expected);
    }

    #[test]
    fn reply_encoder_matches_object_api(
        request_id in any::<u32>(),
        code in code(),
        message in opt_text(),
        epoch in any::<u64>(),
        offset in any::<u64>(),
    ) {
        let bytes = Encoder::new().reply(request_id, code, message.as_deref(), epoch, offset);
        let expected = obj!(wire::FrameT {
            request_id,
            body: BodyT::Reply(Box::new(obj!(wire::ReplyT { code, message, epoch, offset }))),
        });
        prop_assert_eq!(decode_unpack(&bytes)?, expected);
    }

    #[test]
    fn error_encoder_matches_object_api(
        request_id in any::<u32>(),
        code in code(),
        message in text(),
        room in opt_text(),
    ) {
        let bytes = Encoder::new().error(request_id, code, &message, room.as_deref());
        let expected = obj!(wire::FrameT {
            request_id,
            body: BodyT::Error(Box::new(obj!(wire::ErrorT { code, message: Some(message), room }))),
        });
        prop_assert_eq!(decode_unpack(&bytes)?, expected);
    }

    #[test]
    fn go_away_encoder_matches_object_api(code in code(), reason in text(), after in any::<u32>()) {
        let bytes = Encoder::new().go_away(code, &reason, after);
        let expected = obj!(wire::FrameT {
            request_id: 0,
            body: BodyT::GoAway(Box::new(obj!(wire::GoAwayT { code, reason: Some(reason), reconnect_after_ms: after }))),
        });
        prop_assert_eq!(decode_unpack(&bytes)?, expected);
    }

    #[test]
    fn ping_and_pong_encoders_match_object_api(nonce in any::<u64>()) {
        let ping = obj!(wire::FrameT { request_id: 0, body: BodyT::Ping(Box::new(obj!(wire::PingT { nonce }))) });
        let pong = obj!(wire::FrameT { request_id: 0, body: BodyT::Pong(Box::new(obj!(wire::PongT { nonce }))) });
        prop_assert_eq!(decode_unpack(&Encoder::new().ping(nonce))?, ping);
        prop_assert_eq!(decode_unpack(&Encoder::new().pong(nonce))?, pong);
    }

    #[test]
    fn subscribed_encoder_matches_object_api(
        request_id in any::<u32>(),
        room in text(),
        epoch in any::<u64>(),
        offset in any::<u64>(),
        recovered in any::<bool>(),
        history in vec(owned_message(), 0..4),
        presence in option::of((vec(text(), 0..4), any::<u64>())),
    ) {
        let history_refs: Vec<MessageRef<'_>> = history.iter().map(OwnedMessage::as_ref).collect();
        let users: Option<Vec<&str>> = presence.as_ref().map(|(u, _)| u.iter().map(String::as_str).collect());
        let s = SubscribedRef {
            room: &room,
            epoch,
            offset,
            recovered,
            history: &history_refs,
            presence: presence.as_ref().zip(users.as_deref()).map(|((_, count), users)| PresenceRef {
                users,
                count: *count,
            }),
        };
        let bytes = Encoder::new().subscribed(request_id, &s);
        let expected = obj!(wire::FrameT {
            request_id,
            body: BodyT::Subscribed(Box::new(obj!(wire::SubscribedT {
                room: room.clone(),
                epoch,
                offset,
                recovered,
                history: Some(history_refs.iter().map(message_t).collect()),
                presence: presence.as_ref().map(|(users, count)| Box::new(obj!(wire::PresenceSnapshotT {
                    room: room.clone(),
                    users: Some(users.clone()),
                    count: *count,
                    truncated: (users.len() as u64) < *count,
                }))),
            }))),
        });
        prop_assert_eq!(decode_unpack(&bytes)?, expected);
    }
}

#[test]
fn one_encoder_encodes_many_frames_in_a_row() {
    // The builder is reset between frames: nothing leaks from one to the next.
    let mut encoder = Encoder::new();
    let big = encoder.publish(
        1,
        &PublishRef {
            room: "r",
            payload: &[1; 10_000],
            ..PublishRef::default()
        },
    );
    let ping = encoder.ping(9);
    assert!(ping.len() < 64, "ping is {} bytes after a big frame", ping.len());
    assert_eq!(ping, Encoder::new().ping(9));
    assert_eq!(decode_unpack(&big).map(|f| f.request_id).ok(), Some(1));
}
