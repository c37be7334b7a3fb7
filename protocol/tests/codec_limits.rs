//! `decode` and its `DecodeLimits`: size, identifier, verifier depth and
//! table limits, missing and unknown bodies, and the wire codes of the
//! resulting errors.

#[macro_use]
mod support;

use std::time::Instant;

use flatbuffers::{FlatBufferBuilder, InvalidFlatbuffer};
use herald_protocol::wire::{self, Body, BodyT};
use herald_protocol::{
    DecodeLimits, Encoder, ErrorCode, ProtocolError, PublishRef, ServerConfig, ServerEvent, ServerSession, decode,
};
use support::frames;

fn subscribed_with_history() -> bytes::Bytes {
    frames::encode(
        1,
        BodyT::Subscribed(Box::new(obj!(wire::SubscribedT {
            room: "r".into(),
            history: Some(vec![obj!(wire::MessageT { room: "r".into() })]),
        }))),
    )
}

fn connect_resuming(rooms: usize, name_len: usize) -> bytes::Bytes {
    let resume: Vec<wire::RoomPositionT> = (0..rooms)
        .map(|i| {
            let mut room = format!("{i:0>width$}", width = name_len);
            room.truncate(name_len);
            obj!(wire::RoomPositionT {
                room,
                epoch: 1,
                offset: i as u64,
            })
        })
        .collect();
    frames::encode(
        0,
        BodyT::Connect(Box::new(obj!(wire::ConnectT {
            protocol: Some(herald_protocol::PROTOCOL_VERSION.into()),
            token: Some("user:alice".into()),
            resume: Some(resume),
        }))),
    )
}

#[test]
fn frame_over_max_frame_bytes_is_too_large() {
    let limits = DecodeLimits {
        max_frame_bytes: 100,
        ..DecodeLimits::CLIENT_TO_SERVER
    };
    let publish = |n: usize| {
        Encoder::new().publish(
            1,
            &PublishRef {
                room: "r",
                payload: &vec![0; n],
                ..PublishRef::default()
            },
        )
    };
    // Find the largest payload that still fits in 100 bytes.
    let fits = (0..100)
        .rev()
        .map(publish)
        .find(|f| f.len() <= 100)
        .expect("some size fits");
    assert!(decode(&fits, &limits).is_ok());
    let too_big = publish(100);
    assert_eq!(
        decode(&too_big, &limits).map(|_| ()),
        Err(ProtocolError::FrameTooLarge {
            size: too_big.len(),
            max: 100
        })
    );
    // The size is checked before anything else: garbage over the limit is
    // reported as too large, not malformed.
    assert!(matches!(
        decode(&[0xAB; 101], &limits),
        Err(ProtocolError::FrameTooLarge { size: 101, max: 100 })
    ));
}

#[test]
fn default_limits_are_the_client_to_server_ones() {
    assert_eq!(DecodeLimits::default(), DecodeLimits::CLIENT_TO_SERVER);
    assert_eq!(DecodeLimits::CLIENT_TO_SERVER.max_frame_bytes, 64 * 1024);
    let opts = DecodeLimits::CLIENT_TO_SERVER.verifier_options();
    assert_eq!(opts.max_depth, 16);
    assert_eq!(opts.max_tables, 1024);
    assert_eq!(opts.max_apparent_size, 4 * 64 * 1024);
}

#[test]
fn bad_identifier_is_refused() {
    let mut bytes = frames::ping(1).to_vec();
    assert_eq!(&bytes[4..8], b"HRL1");
    bytes[7] = b'2';
    assert!(matches!(
        decode(&bytes, &DecodeLimits::SERVER_TO_CLIENT),
        Err(ProtocolError::BadIdentifier)
    ));
    // A FlatBuffer of the same schema finished without the identifier.
    let mut fbb = FlatBufferBuilder::new();
    let ping = wire::Ping::create(&mut fbb, &wire::PingArgs { nonce: 1 });
    let frame = wire::Frame::create(
        &mut fbb,
        &wire::FrameArgs {
            request_id: 0,
            body_type: Body::Ping,
            body: Some(ping.as_union_value()),
        },
    );
    fbb.finish_minimal(frame);
    assert!(matches!(
        decode(fbb.finished_data(), &DecodeLimits::SERVER_TO_CLIENT),
        Err(ProtocolError::BadIdentifier)
    ));
    // Too short to even hold an identifier.
    for len in 0..8 {
        assert!(matches!(
            decode(&b"\x08\0\0\0HRL1"[..len], &DecodeLimits::SERVER_TO_CLIENT),
            Err(ProtocolError::BadIdentifier)
        ));
    }
}

#[test]
fn excessive_depth_is_refused() {
    // Frame > Subscribed > Message is three tables deep.
    let bytes = subscribed_with_history();
    let shallow = DecodeLimits {
        max_depth: 2,
        ..DecodeLimits::SERVER_TO_CLIENT
    };
    assert!(matches!(
        decode(&bytes, &shallow),
        Err(ProtocolError::Malformed(InvalidFlatbuffer::DepthLimitReached))
    ));
    let enough = DecodeLimits {
        max_depth: 3,
        ..DecodeLimits::SERVER_TO_CLIENT
    };
    assert!(decode(&bytes, &enough).is_ok());
}

#[test]
fn excessive_table_count_is_refused() {
    // The documented budget: a Connect resuming 256 rooms with names of the
    // maximum length fits the client-to-server limits...
    let max = connect_resuming(256, 128);
    assert!(decode(&max, &DecodeLimits::CLIENT_TO_SERVER).is_ok());
    // ...while a small frame with a thousand tables does not.
    let many = connect_resuming(1_100, 1);
    assert!(many.len() < DecodeLimits::CLIENT_TO_SERVER.max_frame_bytes);
    assert!(matches!(
        decode(&many, &DecodeLimits::CLIENT_TO_SERVER),
        Err(ProtocolError::Malformed(InvalidFlatbuffer::TooManyTables))
    ));
    assert!(decode(&many, &DecodeLimits::SERVER_TO_CLIENT).is_ok());
}

#[test]
fn a_server_refuses_a_frame_over_its_limits_as_fatal() {
    let now = Instant::now();
    let mut server = ServerSession::new(ServerConfig::default(), now);
    let err = server
        .handle_frame(now, connect_resuming(1_100, 1))
        .expect_err("refused");
    assert_eq!(err.code(), ErrorCode::MalformedFrame);
    assert!(server.is_closed());
    assert_eq!(server.close_reason().map(|(c, _)| c), Some(ErrorCode::MalformedFrame));

    // At the limits, the session takes the frame and hands every room over.
    let mut server = ServerSession::new(ServerConfig::default(), now);
    server.handle_frame(now, connect_resuming(256, 128)).expect("accepted");
    let Some(ServerEvent::Connect { resume, .. }) = server.poll_event() else {
        panic!("expected Connect");
    };
    assert_eq!(resume.len(), 256);
}

#[test]
fn missing_body_is_refused() {
    let bytes = frames::encode(5, BodyT::NONE);
    assert!(matches!(
        decode(&bytes, &DecodeLimits::SERVER_TO_CLIENT),
        Err(ProtocolError::MissingBody)
    ));
}

#[test]
fn unknown_body_type_is_refused() {
    let mut fbb = FlatBufferBuilder::new();
    let ping = wire::Ping::create(&mut fbb, &wire::PingArgs { nonce: 1 });
    let frame = wire::Frame::create(
        &mut fbb,
        &wire::FrameArgs {
            request_id: 0,
            body_type: Body(Body::ENUM_MAX + 1),
            body: Some(ping.as_union_value()),
        },
    );
    wire::finish_frame_buffer(&mut fbb, frame);
    let err = decode(fbb.finished_data(), &DecodeLimits::SERVER_TO_CLIENT)
        .map(|_| ())
        .expect_err("refused");
    assert_eq!(err, ProtocolError::UnknownBody(Body::ENUM_MAX + 1));
    assert_eq!(err.code(), ErrorCode::UnsupportedFrame);
}

#[test]
fn body_type_without_a_body_is_malformed() {
    let mut fbb = FlatBufferBuilder::new();
    let frame = wire::Frame::create(
        &mut fbb,
        &wire::FrameArgs {
            request_id: 0,
            body_type: Body::Ping,
            body: None,
        },
    );
    wire::finish_frame_buffer(&mut fbb, frame);
    assert!(matches!(
        decode(fbb.finished_data(), &DecodeLimits::SERVER_TO_CLIENT),
        Err(ProtocolError::Malformed(_))
    ));
}

#[test]
fn missing_required_field_is_malformed() {
    // A Subscribe table built without its required room.
    let mut fbb = FlatBufferBuilder::new();
    let start = fbb.start_table();
    fbb.push_slot::<u32>(wire::Subscribe::VT_HISTORY, 3, 0);
    let sub = fbb.end_table(start);
    let frame = wire::Frame::create(
        &mut fbb,
        &wire::FrameArgs {
            request_id: 1,
            body_type: Body::Subscribe,
            body: Some(sub.as_union_value()),
        },
    );
    wire::finish_frame_buffer(&mut fbb, frame);
    assert!(matches!(
        decode(fbb.finished_data(), &DecodeLimits::SERVER_TO_CLIENT),
        Err(ProtocolError::Malformed(InvalidFlatbuffer::MissingRequiredField { .. }))
    ));
}

#[test]
fn invalid_utf8_is_malformed() {
    let bytes = frames::subscribe(1, "room-\u{e9}");
    let at = bytes.windows(2).position(|w| w == [0xc3, 0xa9]).expect("the é");
    let mut bad = bytes.to_vec();
    bad[at] = 0xff;
    assert!(matches!(
        decode(&bad, &DecodeLimits::SERVER_TO_CLIENT),
        Err(ProtocolError::Malformed(InvalidFlatbuffer::Utf8Error { .. }))
    ));
}

#[test]
fn every_protocol_error_maps_to_a_fatal_code() {
    let errors = [
        (
            ProtocolError::FrameTooLarge { size: 2, max: 1 },
            ErrorCode::FrameTooLarge,
        ),
        (ProtocolError::BadIdentifier, ErrorCode::MalformedFrame),
        (
            ProtocolError::Malformed(InvalidFlatbuffer::TooManyTables),
            ErrorCode::MalformedFrame,
        ),
        (ProtocolError::MissingBody, ErrorCode::MalformedFrame),
        (ProtocolError::UnknownBody(99), ErrorCode::UnsupportedFrame),
        (ProtocolError::UnexpectedBody("Message"), ErrorCode::UnsupportedFrame),
        (ProtocolError::TextMessage, ErrorCode::UnsupportedFrame),
        (
            ProtocolError::DatagramNotVolatile("Publish"),
            ErrorCode::UnsupportedFrame,
        ),
    ];
    for (err, code) in errors {
        assert_eq!(err.code(), code, "{err}");
        assert!(err.code().is_fatal());
    }
    assert!(!ErrorCode::Ok.is_fatal());
    assert!(!ErrorCode::Timeout.is_fatal());
    assert!(ErrorCode::MalformedFrame.is_fatal());
}
