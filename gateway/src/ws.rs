//! WebSocket (RFC 6455) frames, server side, as plain functions over byte
//! slices: the shard reads into its own buffer and only a connection with a
//! partial frame keeps bytes of its own, so an idle connection holds no
//! buffer at all (tungstenite keeps a read buffer per connection).
//!
//! No extensions are negotiated (no permessage-deflate: it costs tens of KiB
//! per connection), so every RSV bit must be zero.
//!
//! Violations of RFC 6455 close with its own codes (1002, 1003, 1007, 1009);
//! Herald's protocol errors close with 4000 + the Herald code.

use thiserror::Error;

/// Frame opcodes we act on.
pub(crate) mod opcode {
    pub(crate) const CONTINUATION: u8 = 0x0;
    pub(crate) const TEXT: u8 = 0x1;
    pub(crate) const BINARY: u8 = 0x2;
    pub(crate) const CLOSE: u8 = 0x8;
    pub(crate) const PING: u8 = 0x9;
    pub(crate) const PONG: u8 = 0xA;
}

/// Close codes from RFC 6455 §7.4.1 that the transport itself uses (herald
/// errors close with 4000 + code, see [`crate::close_code`]).
pub(crate) mod close {
    pub(crate) const NORMAL: u16 = 1000;
    pub(crate) const PROTOCOL_ERROR: u16 = 1002;
    /// A kind of data the endpoint does not accept (text: Herald is binary).
    pub(crate) const UNSUPPORTED_DATA: u16 = 1003;
    /// A close reason that is not UTF-8.
    pub(crate) const INVALID_PAYLOAD: u16 = 1007;
    pub(crate) const TOO_BIG: u16 = 1009;
}

/// Whether a peer may close with `code` (RFC 6455 §7.4.1, §7.4.2 and the
/// IANA registry): 1004-1006 and 1015 are reserved or only for reports,
/// 1016-2999 are unassigned, 3000-4999 are for libraries and applications.
pub(crate) fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A client frame that breaks RFC 6455 or our limits.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum WsError {
    #[error("websocket frame is not masked")]
    Unmasked,
    #[error("websocket frame uses reserved bits")]
    ReservedBits,
    #[error("websocket frame uses reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    #[error("websocket control frame is fragmented or longer than 125 bytes")]
    BadControl,
    #[error("websocket 64-bit payload length has its most significant bit set")]
    LengthTopBit,
    #[error("websocket frame of {size} bytes exceeds the limit of {max}")]
    TooLarge { size: u64, max: usize },
}

impl WsError {
    /// The close code RFC 6455 gives this violation.
    pub(crate) fn close_code(&self) -> u16 {
        match self {
            WsError::TooLarge { .. } => close::TOO_BIG,
            _ => close::PROTOCOL_ERROR,
        }
    }
}

/// A parsed client frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) fin: bool,
    pub(crate) opcode: u8,
    pub(crate) mask: [u8; 4],
    /// Bytes of header, including the mask.
    pub(crate) header_len: usize,
    pub(crate) payload_len: usize,
}

impl Head {
    /// Header plus payload.
    pub(crate) fn frame_len(&self) -> usize {
        self.header_len + self.payload_len
    }
}

/// Parses the header of the client frame at the start of `buf`. `Ok(None)`
/// means more bytes are needed. The payload length is checked against
/// `max_payload` before anything is buffered.
pub(crate) fn parse_head(buf: &[u8], max_payload: usize) -> Result<Option<Head>, WsError> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    let fin = b0 & 0x80 != 0;
    if b0 & 0x70 != 0 {
        return Err(WsError::ReservedBits);
    }
    let opcode = b0 & 0x0F;
    if !matches!(
        opcode,
        opcode::CONTINUATION | opcode::TEXT | opcode::BINARY | opcode::CLOSE | opcode::PING | opcode::PONG
    ) {
        return Err(WsError::ReservedOpcode(opcode));
    }
    if b1 & 0x80 == 0 {
        return Err(WsError::Unmasked);
    }
    let (len, ext) = match b1 & 0x7F {
        126 => {
            let Some(b) = buf.get(2..4) else { return Ok(None) };
            (u64::from(u16::from_be_bytes([b[0], b[1]])), 2)
        }
        127 => {
            let Some(b) = buf.get(2..10) else { return Ok(None) };
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            let len = u64::from_be_bytes(a);
            if len >> 63 != 0 {
                return Err(WsError::LengthTopBit);
            }
            (len, 8)
        }
        n => (u64::from(n), 0),
    };
    let is_control = opcode & 0x8 != 0;
    if is_control && (!fin || len > 125) {
        return Err(WsError::BadControl);
    }
    if len > max_payload as u64 {
        return Err(WsError::TooLarge {
            size: len,
            max: max_payload,
        });
    }
    let Some(m) = buf.get(2 + ext..6 + ext) else {
        return Ok(None);
    };
    Ok(Some(Head {
        fin,
        opcode,
        mask: [m[0], m[1], m[2], m[3]],
        header_len: 6 + ext,
        payload_len: len as usize,
    }))
}

/// Removes the client's mask from a payload in place.
pub(crate) fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (b, m) in chunks.into_remainder().iter_mut().zip(mask) {
        *b ^= m;
    }
}

/// The header of an unmasked, final server frame.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServerHead {
    bytes: [u8; 10],
    len: u8,
}

impl ServerHead {
    pub(crate) fn new(opcode: u8, payload_len: usize) -> Self {
        let mut bytes = [0u8; 10];
        bytes[0] = 0x80 | opcode;
        let len = if payload_len < 126 {
            bytes[1] = payload_len as u8;
            2
        } else if payload_len <= usize::from(u16::MAX) {
            bytes[1] = 126;
            bytes[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
            4
        } else {
            bytes[1] = 127;
            bytes[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
            10
        };
        Self { bytes, len }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// A whole server frame (for control frames and tests).
pub(crate) fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let head = ServerHead::new(opcode, payload.len());
    let mut v = Vec::with_capacity(head.as_bytes().len() + payload.len());
    v.extend_from_slice(head.as_bytes());
    v.extend_from_slice(payload);
    v
}

/// A close frame with a code and a reason cut to fit the 125-byte limit.
pub(crate) fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    server_frame(opcode::CLOSE, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_frame(fin: bool, op: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut v = vec![(if fin { 0x80 } else { 0 }) | op];
        let n = payload.len();
        if n < 126 {
            v.push(0x80 | n as u8);
        } else if n <= 65535 {
            v.push(0x80 | 126);
            v.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            v.push(0x80 | 127);
            v.extend_from_slice(&(n as u64).to_be_bytes());
        }
        v.extend_from_slice(&mask);
        v.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        v
    }

    #[test]
    fn parses_and_unmasks_every_length_encoding() {
        for n in [0usize, 1, 5, 125, 126, 1000, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let frame = client_frame(true, opcode::BINARY, &payload, [1, 2, 3, 4]);
            // Every strict prefix of the header asks for more bytes.
            let head = parse_head(&frame, 1 << 20).unwrap().unwrap();
            for cut in 0..head.header_len {
                assert_eq!(parse_head(&frame[..cut], 1 << 20), Ok(None), "n={n} cut={cut}");
            }
            assert_eq!(head.payload_len, n);
            assert_eq!(head.frame_len(), frame.len());
            let mut body = frame[head.header_len..].to_vec();
            unmask(&mut body, head.mask);
            assert_eq!(body, payload);
        }
    }

    #[test]
    fn rejects_what_rfc_6455_forbids() {
        let ok = client_frame(true, opcode::BINARY, b"hi", [9, 9, 9, 9]);
        let mut unmasked = ok.clone();
        unmasked[1] &= 0x7F;
        assert_eq!(parse_head(&unmasked, 100), Err(WsError::Unmasked));
        for bit in [0x40, 0x20, 0x10] {
            let mut rsv = ok.clone();
            rsv[0] |= bit;
            assert_eq!(parse_head(&rsv, 100), Err(WsError::ReservedBits));
        }
        for op in (0x3..=0x7).chain(0xB..=0xF) {
            let reserved_op = client_frame(true, op, b"", [0; 4]);
            assert_eq!(parse_head(&reserved_op, 100), Err(WsError::ReservedOpcode(op)));
        }
        let fragmented_ping = client_frame(false, opcode::PING, b"", [0; 4]);
        assert_eq!(parse_head(&fragmented_ping, 100), Err(WsError::BadControl));
        let long_ping = client_frame(true, opcode::PING, &[0; 126], [0; 4]);
        assert_eq!(parse_head(&long_ping, 1000), Err(WsError::BadControl));
    }

    #[test]
    fn length_is_checked_before_the_payload_arrives() {
        // Only the 10-byte header of a 2^63-byte frame: refused at once, as
        // a protocol error (the top bit must be 0), not as too large.
        let mut head = vec![0x82, 0x80 | 127];
        head.extend_from_slice(&(1u64 << 63).to_be_bytes());
        assert_eq!(parse_head(&head, 65536), Err(WsError::LengthTopBit));
        assert_eq!(WsError::LengthTopBit.close_code(), close::PROTOCOL_ERROR);
        let mut head = vec![0x82, 0x80 | 127];
        head.extend_from_slice(&(1u64 << 40).to_be_bytes());
        assert!(matches!(parse_head(&head, 65536), Err(WsError::TooLarge { .. })));
        let frame = client_frame(true, opcode::BINARY, &[0; 70_000], [0; 4]);
        assert_eq!(
            parse_head(&frame[..10], 65_536),
            Err(WsError::TooLarge {
                size: 70_000,
                max: 65_536
            })
        );
    }

    #[test]
    fn close_codes_follow_rfc_6455_and_the_registry() {
        for code in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999,
        ] {
            assert!(valid_close_code(code), "{code}");
        }
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
            assert!(!valid_close_code(code), "{code}");
        }
    }

    #[test]
    fn server_heads_use_the_shortest_length_encoding() {
        assert_eq!(ServerHead::new(opcode::BINARY, 5).as_bytes(), &[0x82, 5]);
        assert_eq!(ServerHead::new(opcode::BINARY, 300).as_bytes(), &[0x82, 126, 1, 44]);
        assert_eq!(ServerHead::new(opcode::BINARY, 65536).as_bytes().len(), 10);
        let close = close_frame(4208, &"é".repeat(100));
        assert_eq!(close[0], 0x88);
        assert!(close.len() <= 2 + 125, "control payload at most 125 bytes");
        assert_eq!(&close[2..4], &4208u16.to_be_bytes());
        assert!(std::str::from_utf8(&close[4..]).is_ok(), "cut on a char boundary");
    }
}
