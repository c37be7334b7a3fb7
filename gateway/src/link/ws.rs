//! A WebSocket's message layer above the frame codec (`crate::ws`):
//! reassembly of fragmented messages, the one pending pong, and the close
//! handshake, checked as RFC 6455 asks (and tungstenite does). It decides;
//! the shard acts. Small on purpose (32 bytes): every idle WebSocket holds
//! one, so what only some connections need is boxed.

use bytes::Bytes;

use crate::ws::{close, opcode, valid_close_code};

/// What one received frame means for the connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FrameAction {
    /// Nothing to do (a fragment, a control frame handled here).
    None,
    /// A complete binary message for the session.
    Message(Bytes),
    /// The peer closed with `code`: echo it and stop.
    Closed { code: u16 },
    /// The peer broke RFC 6455 (or sent text): close with `code`.
    Fail { code: u16, reason: &'static str },
}

#[derive(Debug, Default)]
pub(crate) struct WsFraming {
    /// The fragments of the binary message being received. Boxed on
    /// purpose: 8 bytes on every idle connection instead of a 24-byte `Vec`,
    /// for what few connections ever use.
    #[allow(clippy::box_collection)]
    fragments: Option<Box<Vec<u8>>>,
    /// The payload of the latest ping not answered yet: RFC 6455 §5.5.3 lets
    /// an endpoint answer only the most recent one, so pinging without
    /// reading holds one pong at most.
    pong: Option<Box<[u8]>>,
    /// A fragmented message is open.
    fragmenting: bool,
    /// Our close frame has been queued.
    pub(crate) close_sent: bool,
    /// Closed while its socket was full: dropped at the connection's
    /// deadline unless the peer reads by then.
    pub(crate) stuck: bool,
}

impl WsFraming {
    /// One unmasked frame whose header the codec accepted. `max` bounds a
    /// reassembled message.
    pub(crate) fn on_frame(&mut self, fin: bool, op: u8, payload: &[u8], max: usize) -> FrameAction {
        match op {
            opcode::TEXT if !self.fragmenting => FrameAction::Fail {
                code: close::UNSUPPORTED_DATA,
                reason: "herald speaks binary frames only",
            },
            opcode::BINARY if !self.fragmenting => {
                if fin {
                    FrameAction::Message(Bytes::copy_from_slice(payload))
                } else {
                    self.fragmenting = true;
                    self.fragments.get_or_insert_default().extend_from_slice(payload);
                    FrameAction::None
                }
            }
            opcode::TEXT | opcode::BINARY => FrameAction::Fail {
                code: close::PROTOCOL_ERROR,
                reason: "a new message began before the fragmented one ended",
            },
            opcode::CONTINUATION if !self.fragmenting => FrameAction::Fail {
                code: close::PROTOCOL_ERROR,
                reason: "a continuation frame with no message to continue",
            },
            opcode::CONTINUATION => {
                let fragments = self.fragments.get_or_insert_default();
                if fragments.len() + payload.len() > max {
                    return FrameAction::Fail {
                        code: close::TOO_BIG,
                        reason: "fragmented message exceeds the frame limit",
                    };
                }
                fragments.extend_from_slice(payload);
                if !fin {
                    return FrameAction::None;
                }
                self.fragmenting = false;
                let whole = self.fragments.take().map_or_else(Vec::new, |b| *b);
                FrameAction::Message(Bytes::from(whole))
            }
            opcode::PING => {
                self.pong = Some(payload.into());
                FrameAction::None
            }
            opcode::PONG => FrameAction::None,
            opcode::CLOSE => close_action(payload),
            // The codec refuses every other opcode before we get here.
            _ => FrameAction::Fail {
                code: close::PROTOCOL_ERROR,
                reason: "reserved opcode",
            },
        }
    }

    /// The pong to write, if a ping waits for one.
    pub(crate) fn take_pong(&mut self) -> Option<Box<[u8]>> {
        self.pong.take()
    }

    /// Gives back a reassembly buffer that is not in use.
    pub(crate) fn release_idle_memory(&mut self) {
        if !self.fragmenting {
            self.fragments = None;
        }
    }
}

/// §5.5.1 and §7.4: a close payload is empty, or a valid code and a UTF-8
/// reason.
fn close_action(payload: &[u8]) -> FrameAction {
    match payload {
        [] => FrameAction::Closed { code: close::NORMAL },
        [_] => FrameAction::Fail {
            code: close::PROTOCOL_ERROR,
            reason: "a close payload of one byte",
        },
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            if !valid_close_code(code) {
                FrameAction::Fail {
                    code: close::PROTOCOL_ERROR,
                    reason: "invalid close code",
                }
            } else if std::str::from_utf8(reason).is_err() {
                FrameAction::Fail {
                    code: close::INVALID_PAYLOAD,
                    reason: "close reason is not UTF-8",
                }
            } else {
                FrameAction::Closed { code }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 100;

    fn fail_code(a: FrameAction) -> u16 {
        match a {
            FrameAction::Fail { code, .. } => code,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fragments_reassemble_with_pings_between_them() {
        let mut f = WsFraming::default();
        assert_eq!(f.on_frame(false, opcode::BINARY, b"he", MAX), FrameAction::None);
        assert_eq!(f.on_frame(true, opcode::PING, b"p1", MAX), FrameAction::None);
        assert_eq!(f.on_frame(false, opcode::CONTINUATION, b"ll", MAX), FrameAction::None);
        assert_eq!(
            f.on_frame(true, opcode::CONTINUATION, b"o", MAX),
            FrameAction::Message(Bytes::from_static(b"hello"))
        );
        assert_eq!(f.take_pong().as_deref(), Some(&b"p1"[..]));
        assert_eq!(f.take_pong(), None);
    }

    #[test]
    fn only_the_latest_ping_is_answered() {
        let mut f = WsFraming::default();
        for i in 0..100u8 {
            f.on_frame(true, opcode::PING, &[i], MAX);
        }
        assert_eq!(f.take_pong().as_deref(), Some(&[99u8][..]));
        assert_eq!(f.take_pong(), None);
    }

    #[test]
    fn broken_sequences_fail_with_rfc_codes() {
        let mut f = WsFraming::default();
        assert_eq!(fail_code(f.on_frame(true, opcode::CONTINUATION, b"x", MAX)), 1002);
        assert_eq!(
            fail_code(f.on_frame(false, opcode::TEXT, b"x", MAX)),
            1003,
            "text at its first frame"
        );
        let mut f = WsFraming::default();
        f.on_frame(false, opcode::BINARY, b"x", MAX);
        assert_eq!(fail_code(f.on_frame(true, opcode::BINARY, b"y", MAX)), 1002);
        let mut f = WsFraming::default();
        f.on_frame(false, opcode::BINARY, b"x", MAX);
        assert_eq!(fail_code(f.on_frame(true, opcode::TEXT, b"y", MAX)), 1002);
        let mut f = WsFraming::default();
        f.on_frame(false, opcode::BINARY, &[0; 60], MAX);
        assert_eq!(fail_code(f.on_frame(true, opcode::CONTINUATION, &[0; 41], MAX)), 1009);
    }

    #[test]
    fn close_payloads_are_checked() {
        let close = |p: &[u8]| WsFraming::default().on_frame(true, opcode::CLOSE, p, MAX);
        assert_eq!(close(b""), FrameAction::Closed { code: 1000 });
        assert_eq!(fail_code(close(&[3])), 1002);
        assert_eq!(fail_code(close(&1005u16.to_be_bytes())), 1002);
        assert_eq!(close(&4001u16.to_be_bytes()), FrameAction::Closed { code: 4001 });
        let mut bad_reason = 1000u16.to_be_bytes().to_vec();
        bad_reason.extend_from_slice(&[0xFF, 0xFE]);
        assert_eq!(fail_code(close(&bad_reason)), 1007);
        let mut reason = 1001u16.to_be_bytes().to_vec();
        reason.extend_from_slice("é".repeat(60).as_bytes());
        assert_eq!(close(&reason), FrameAction::Closed { code: 1001 });
    }
}
