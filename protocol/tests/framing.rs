//! Transport framing: length-prefixed frames on QUIC streams (split at every
//! byte, several per read, oversized prefixes refused before the body) and
//! the datagram rule (volatile only).

#[macro_use]
mod support;

use bytes::{Bytes, BytesMut};
use herald_protocol::framing::{LENGTH_PREFIX_BYTES, LengthPrefixedReader, check_datagram, write_length_prefixed};
use herald_protocol::wire::{self, Body, BodyT};
use herald_protocol::{DecodeLimits, Encoder, MessageRef, ProtocolError, PublishRef, decode};
use support::frames;

fn stream_of(frames: &[Bytes]) -> BytesMut {
    let mut out = BytesMut::new();
    for f in frames {
        write_length_prefixed(f, &mut out);
    }
    out
}

fn drain(reader: &mut LengthPrefixedReader) -> Vec<Bytes> {
    let mut out = Vec::new();
    while let Some(f) = reader.next_frame().expect("valid stream") {
        out.push(f);
    }
    out
}

fn sample_frames() -> Vec<Bytes> {
    let mut encoder = Encoder::new();
    let mut v: Vec<Bytes> = frames::every_kind().iter().map(|f| encoder.frame(f)).collect();
    v.push(Bytes::new()); // an empty frame is still a frame on the stream
    v
}

#[test]
fn prefix_is_little_endian_length() {
    let mut out = BytesMut::new();
    write_length_prefixed(b"abc", &mut out);
    assert_eq!(&out[..], b"\x03\0\0\0abc");
    assert_eq!(LENGTH_PREFIX_BYTES, 4);
}

#[test]
fn several_frames_in_one_buffer() {
    let frames = sample_frames();
    let stream = stream_of(&frames);
    let mut reader = LengthPrefixedReader::new(64 * 1024);
    reader.extend(&stream);
    assert_eq!(reader.buffered(), stream.len());
    assert_eq!(drain(&mut reader), frames);
    assert_eq!(reader.buffered(), 0);
    assert_eq!(reader.next_frame(), Ok(None));
}

#[test]
fn split_at_every_byte_boundary() {
    let frames = sample_frames();
    let stream = stream_of(&frames);
    for split in 0..=stream.len() {
        let mut reader = LengthPrefixedReader::new(64 * 1024);
        reader.extend(&stream[..split]);
        let mut got = drain(&mut reader);
        reader.extend(&stream[split..]);
        got.extend(drain(&mut reader));
        assert_eq!(got, frames, "split at {split}");
        assert_eq!(reader.buffered(), 0);
    }
}

#[test]
fn one_byte_at_a_time() {
    let frames = sample_frames();
    let stream = stream_of(&frames);
    let mut reader = LengthPrefixedReader::new(64 * 1024);
    let mut got = Vec::new();
    for b in stream.iter() {
        reader.extend(&[*b]);
        got.extend(drain(&mut reader));
    }
    assert_eq!(got, frames);
}

#[test]
fn incomplete_input_is_ok_none() {
    let frame = frames::ping(1);
    let stream = stream_of(std::slice::from_ref(&frame));
    let mut reader = LengthPrefixedReader::new(1024);
    assert_eq!(reader.next_frame(), Ok(None), "empty");
    reader.extend(&stream[..2]);
    assert_eq!(reader.next_frame(), Ok(None), "half a prefix");
    reader.extend(&stream[2..LENGTH_PREFIX_BYTES]);
    assert_eq!(reader.next_frame(), Ok(None), "prefix only");
    reader.extend(&stream[LENGTH_PREFIX_BYTES..stream.len() - 1]);
    assert_eq!(reader.next_frame(), Ok(None), "one byte short");
    assert_eq!(reader.buffered(), stream.len() - 1, "nothing consumed while incomplete");
    reader.extend(&stream[stream.len() - 1..]);
    assert_eq!(reader.next_frame(), Ok(Some(frame)));
}

#[test]
fn frame_exactly_at_the_limit_is_accepted() {
    let mut reader = LengthPrefixedReader::new(10);
    reader.extend(&stream_of(&[Bytes::from_static(&[7; 10])]));
    assert_eq!(reader.next_frame(), Ok(Some(Bytes::from_static(&[7; 10]))));
}

#[test]
fn oversized_prefix_is_refused_before_the_body_arrives() {
    let mut reader = LengthPrefixedReader::new(1024);
    // Only the prefix: 1025 bytes announced, none sent.
    reader.extend(&1025u32.to_le_bytes());
    assert_eq!(
        reader.next_frame(),
        Err(ProtocolError::FrameTooLarge { size: 1025, max: 1024 })
    );
    assert_eq!(reader.buffered(), LENGTH_PREFIX_BYTES);

    // A hostile 4 GiB prefix behind a valid frame: the valid one comes out,
    // then the error.
    let mut reader = LengthPrefixedReader::new(1024);
    let mut stream = stream_of(&[frames::ping(2)]);
    stream.extend_from_slice(&u32::MAX.to_le_bytes());
    reader.extend(&stream);
    assert_eq!(reader.next_frame(), Ok(Some(frames::ping(2))));
    assert_eq!(
        reader.next_frame(),
        Err(ProtocolError::FrameTooLarge {
            size: u32::MAX as usize,
            max: 1024
        })
    );
    assert_eq!(
        reader.next_frame().map_err(|e| e.code()),
        Err(herald_protocol::ErrorCode::FrameTooLarge)
    );
}

fn datagram(bytes: &[u8]) -> Result<(), ProtocolError> {
    let frame = decode(bytes, &DecodeLimits::SERVER_TO_CLIENT).expect("valid frame");
    check_datagram(&frame)
}

#[test]
fn datagrams_carry_only_volatile_frames() {
    let publish = |volatile| {
        Encoder::new().publish(
            1,
            &PublishRef {
                room: "dash:cpu",
                payload: b"42",
                volatile,
                ..PublishRef::default()
            },
        )
    };
    let message = |volatile| {
        Encoder::new().message(&MessageRef {
            room: "dash:cpu",
            payload: b"42",
            volatile,
            ..MessageRef::default()
        })
    };
    assert_eq!(datagram(&publish(true)), Ok(()));
    assert_eq!(datagram(&message(true)), Ok(()));
    assert_eq!(
        datagram(&publish(false)),
        Err(ProtocolError::DatagramNotVolatile("Publish"))
    );
    assert_eq!(
        datagram(&message(false)),
        Err(ProtocolError::DatagramNotVolatile("Message"))
    );
    assert_eq!(datagram(&frames::ping(1)), Ok(()));
    assert_eq!(datagram(&Encoder::new().pong(1)), Ok(()));
}

#[test]
fn datagram_rule_for_every_kind() {
    for f in frames::every_kind() {
        let kind = f.body.body_type();
        let volatile = match &f.body {
            BodyT::Publish(p) => p.volatile,
            BodyT::Message(m) => m.volatile,
            _ => false,
        };
        let allowed = volatile || matches!(kind, Body::Typing | Body::TypingEvent | Body::Ping | Body::Pong);
        let result = datagram(&Encoder::new().frame(&f));
        if allowed {
            assert_eq!(result, Ok(()), "{kind:?}");
        } else {
            let name = kind.variant_name().expect("known kind");
            assert_eq!(result, Err(ProtocolError::DatagramNotVolatile(name)), "{kind:?}");
        }
    }
    // The same kinds, made non-volatile where that is possible.
    let durable = Encoder::new().frame(&obj!(wire::FrameT {
        request_id: 0,
        body: BodyT::Publish(Box::new(obj!(wire::PublishT {
            room: "r".into(),
            volatile: false,
        }))),
    }));
    assert!(datagram(&durable).is_err());
}
