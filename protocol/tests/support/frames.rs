//! Frame builders and inspectors for tests: `frames::subscribe(7, "chat:lobby")`
//! builds the bytes a client would send; `frames::parse(&bytes)` turns any
//! frame back into its object-API form for assertions.

use bytes::Bytes;
use herald_protocol::wire::{self, BodyT, ErrorCode, FrameT};
use herald_protocol::{DecodeLimits, Encoder, PROTOCOL_VERSION, decode};

/// Encodes a frame from a request id and a body.
pub(crate) fn encode(request_id: u32, body: BodyT) -> Bytes {
    Encoder::new().body(request_id, body)
}

/// Decodes (with the client's generous limits) and unpacks a frame; panics
/// with the decode error if the bytes are not a valid frame.
pub(crate) fn parse(bytes: &[u8]) -> wire::FrameT {
    decode(bytes, &DecodeLimits::SERVER_TO_CLIENT)
        .unwrap_or_else(|e| panic!("not a valid frame: {e}"))
        .unpack()
}

/// The name of a frame's body kind ("Pong", "Error", ...).
pub(crate) fn kind(bytes: &[u8]) -> &'static str {
    parse(bytes).body.body_type().variant_name().unwrap_or("Unknown")
}

/// The code and message of an `Error` frame; panics for any other frame.
pub(crate) fn error_of(bytes: &[u8]) -> (ErrorCode, String) {
    match parse(bytes).body {
        BodyT::Error(e) => (e.code, e.message.unwrap_or_default()),
        other => panic!("expected an Error frame, got {:?}", other.body_type()),
    }
}

/// The request id, code and position of a `Reply` frame.
pub(crate) fn reply_of(bytes: &[u8]) -> (u32, ErrorCode, u64, u64) {
    let frame = parse(bytes);
    match frame.body {
        BodyT::Reply(r) => (frame.request_id, r.code, r.epoch, r.offset),
        other => panic!("expected a Reply frame, got {:?}", other.body_type()),
    }
}

pub(crate) fn connect(token: &str) -> Bytes {
    connect_resuming(token, &[])
}

pub(crate) fn connect_resuming(token: &str, resume: &[(&str, u64, u64)]) -> Bytes {
    let resume: Vec<_> = resume
        .iter()
        .map(|&(room, epoch, offset)| {
            obj!(wire::RoomPositionT {
                room: room.to_owned(),
                epoch,
                offset,
            })
        })
        .collect();
    encode(
        0,
        BodyT::Connect(Box::new(obj!(wire::ConnectT {
            protocol: Some(PROTOCOL_VERSION.to_owned()),
            token: Some(token.to_owned()),
            client_name: Some("test".to_owned()),
            client_version: Some("0".to_owned()),
            resume: (!resume.is_empty()).then_some(resume),
        }))),
    )
}

pub(crate) fn subscribe(request_id: u32, room: &str) -> Bytes {
    encode(
        request_id,
        BodyT::Subscribe(Box::new(obj!(wire::SubscribeT { room: room.to_owned() }))),
    )
}

pub(crate) fn publish(request_id: u32, room: &str, payload: &[u8]) -> Bytes {
    encode(
        request_id,
        BodyT::Publish(Box::new(obj!(wire::PublishT {
            room: room.to_owned(),
            payload: Some(payload.to_vec()),
        }))),
    )
}

pub(crate) fn typing(request_id: u32, room: &str) -> Bytes {
    encode(
        request_id,
        BodyT::Typing(Box::new(obj!(wire::TypingT {
            room: room.to_owned(),
            active: true,
        }))),
    )
}

pub(crate) fn ping(nonce: u64) -> Bytes {
    Encoder::new().ping(nonce)
}

fn message(room: &str, offset: u64, volatile: bool) -> wire::MessageT {
    obj!(wire::MessageT {
        room: room.to_owned(),
        epoch: 3,
        offset,
        publisher: Some("alice".to_owned()),
        timestamp_ms: 1_700_000_000_000 + offset,
        payload: Some(format!("payload {offset}").into_bytes()),
        content_type: Some("text/plain".to_owned()),
        volatile,
    })
}

fn kv(key: &str, value: &str) -> wire::KeyValueT {
    obj!(wire::KeyValueT {
        key: key.to_owned(),
        value: Some(value.to_owned()),
    })
}

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

/// One frame of every body kind, every field set to a non-default value
/// (so that corrupting any byte touches something that matters).
pub(crate) fn every_kind() -> Vec<FrameT> {
    let presence = obj!(wire::PresenceSnapshotT {
        room: "chat:lobby".into(),
        users: Some(vec!["alice".into(), "bob".into()]),
        count: 3,
        truncated: true,
    });
    let notification = obj!(wire::NotificationT {
        id: 42,
        kind: s("mention"),
        title: s("Hi"),
        body: s("bob mentioned you"),
        data: Some(b"{\"room\":\"chat:lobby\"}".to_vec()),
        created_ms: 1_700_000_000_000,
        read: true,
    });
    let bodies = vec![
        BodyT::Connect(Box::new(obj!(wire::ConnectT {
            protocol: s(PROTOCOL_VERSION),
            token: s("user:alice"),
            client_name: s("test"),
            client_version: s("1.2.3"),
            resume: Some(vec![obj!(wire::RoomPositionT {
                room: "chat:lobby".into(),
                epoch: 3,
                offset: 17,
            })]),
        }))),
        BodyT::Subscribe(Box::new(obj!(wire::SubscribeT {
            room: "chat:lobby".into(),
            history: 20,
            recover_epoch: 3,
            recover_offset: 17,
            presence: false,
        }))),
        BodyT::Unsubscribe(Box::new(obj!(wire::UnsubscribeT {
            room: "chat:lobby".into(),
        }))),
        BodyT::Publish(Box::new(obj!(wire::PublishT {
            room: "chat:lobby".into(),
            payload: Some(b"hello".to_vec()),
            content_type: s("text/plain"),
            volatile: true,
            idempotency_key: s("c-1"),
        }))),
        BodyT::Typing(Box::new(obj!(wire::TypingT {
            room: "chat:lobby".into(),
            active: false,
        }))),
        BodyT::PresenceQuery(Box::new(obj!(wire::PresenceQueryT {
            room: "chat:lobby".into(),
        }))),
        BodyT::HistoryQuery(Box::new(obj!(wire::HistoryQueryT {
            room: "chat:lobby".into(),
            before: 100,
            after: 10,
            limit: 7,
        }))),
        BodyT::NotificationsQuery(Box::new(obj!(wire::NotificationsQueryT {
            unread_only: false,
            before_id: 99,
            limit: 9,
        }))),
        BodyT::NotificationsMarkRead(Box::new(obj!(wire::NotificationsMarkReadT {
            ids: Some(vec![1, 2, 3]),
            up_to: 7,
        }))),
        BodyT::AnalyticsEvent(Box::new(obj!(wire::AnalyticsEventT {
            name: "click".into(),
            value: 2.5,
            dimensions: Some(vec![kv("page", "/home")]),
        }))),
        BodyT::MetricsSubscribe(Box::new(obj!(wire::MetricsSubscribeT {
            names: Some(vec!["connections".into(), "publishes".into()]),
            interval_ms: 500,
        }))),
        BodyT::Ping(Box::new(obj!(wire::PingT {
            nonce: 0x0123_4567_89ab,
        }))),
        BodyT::Pong(Box::new(obj!(wire::PongT {
            nonce: 0x0123_4567_89ab,
        }))),
        BodyT::Connected(Box::new(obj!(wire::ConnectedT {
            session_id: s("s-1"),
            node_id: s("node-1"),
            user_id: s("alice"),
            server_time_ms: 1_700_000_000_000,
            heartbeat_interval_ms: 15_000,
            limits: Some(Box::new(obj!(wire::LimitsT {
                max_frame_bytes: 65_536,
                max_payload_bytes: 32_768,
                max_rooms: 256,
                max_room_name_bytes: 128,
                publish_rate_per_sec: 50,
                publish_burst: 100,
                max_outbound_bytes: 1 << 20,
            }))),
        }))),
        BodyT::Reply(Box::new(obj!(wire::ReplyT {
            code: ErrorCode::RateLimited,
            message: s("slow down"),
            epoch: 3,
            offset: 18,
        }))),
        BodyT::Subscribed(Box::new(obj!(wire::SubscribedT {
            room: "chat:lobby".into(),
            epoch: 3,
            offset: 19,
            recovered: true,
            history: Some(vec![message("chat:lobby", 18, false), message("chat:lobby", 19, false)]),
            presence: Some(Box::new(presence.clone())),
        }))),
        BodyT::Message(Box::new(message("chat:lobby", 20, true))),
        BodyT::PresenceJoin(Box::new(obj!(wire::PresenceJoinT {
            room: "chat:lobby".into(),
            user: "bob".into(),
        }))),
        BodyT::PresenceLeave(Box::new(obj!(wire::PresenceLeaveT {
            room: "chat:lobby".into(),
            user: "bob".into(),
        }))),
        BodyT::PresenceSnapshot(Box::new(presence)),
        BodyT::TypingEvent(Box::new(obj!(wire::TypingEventT {
            room: "chat:lobby".into(),
            user: "bob".into(),
            active: false,
        }))),
        BodyT::HistoryPage(Box::new(obj!(wire::HistoryPageT {
            room: "chat:lobby".into(),
            epoch: 3,
            messages: Some(vec![message("chat:lobby", 1, false), message("chat:lobby", 2, false)]),
            has_more: true,
        }))),
        BodyT::Notification(Box::new(notification.clone())),
        BodyT::NotificationsPage(Box::new(obj!(wire::NotificationsPageT {
            notifications: Some(vec![notification]),
            unread: 5,
            has_more: true,
        }))),
        BodyT::MetricsUpdate(Box::new(obj!(wire::MetricsUpdateT {
            timestamp_ms: 1_700_000_000_000,
            samples: Some(vec![obj!(wire::MetricSampleT {
                name: "connections".into(),
                value: 1234.0,
                labels: Some(vec![kv("node", "node-1")]),
            })]),
        }))),
        BodyT::Alert(Box::new(obj!(wire::AlertT {
            name: "slow-consumers".into(),
            severity: wire::Severity::Critical,
            message: s("too many slow consumers"),
            value: 12.0,
            threshold: 10.0,
            timestamp_ms: 1_700_000_000_000,
        }))),
        BodyT::Error(Box::new(obj!(wire::ErrorT {
            code: ErrorCode::NotFound,
            message: s("no such room"),
            room: s("chat:lobby"),
        }))),
        BodyT::GoAway(Box::new(obj!(wire::GoAwayT {
            code: ErrorCode::ServerShutdown,
            reason: s("restart"),
            reconnect_after_ms: 2_000,
        }))),
    ];
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            obj!(wire::FrameT {
                request_id: 1000 + i as u32,
                body,
            })
        })
        .collect()
}
