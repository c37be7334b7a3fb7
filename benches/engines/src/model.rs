//! Herald's history data model, the deterministic workload, and the
//! key/value encoding shared by the key-value engines (fjall, redb).

/// Epoch written into every head record.
pub const EPOCH: u64 = 1;
/// Timestamp of message 0 (ms since the Unix epoch); message `seq` is `TS0 + seq`.
const TS0: u64 = 1_767_225_600_000;

/// One history message, as Herald stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub room: String,
    pub offset: u64,
    pub publisher: [u8; 8],
    pub ts_ms: u64,
    pub content_type: Option<String>,
    pub payload: Vec<u8>,
}

/// A room's head: its epoch and the last offset written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub epoch: u64,
    pub last: u64,
}

/// A head record written in the same batch as the room's messages.
#[derive(Debug, Clone)]
pub struct HeadUpdate {
    pub room: String,
    pub head: Head,
}

/// Number of messages, and the first and last offsets, that a room holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub count: u64,
    pub first: Option<u64>,
    pub last: Option<u64>,
}

impl Span {
    #[cfg_attr(not(any(feature = "fjall", feature = "redb")), allow(dead_code))]
    pub fn add(&mut self, offset: u64) {
        self.count += 1;
        self.first = Some(self.first.map_or(offset, |f| f.min(offset)));
        self.last = Some(self.last.map_or(offset, |l| l.max(offset)));
    }
}

pub fn room_name(room: u32) -> String {
    format!("chat:room-{room:05}")
}

pub fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Message number `seq` of the workload: room `seq % rooms`, offset `seq / rooms`,
/// so every room's offsets are dense from 0 and the set of messages committed up to
/// any `seq` is known. Payloads are pseudo-random (incompressible).
pub fn message(seq: u64, rooms: u32, payload_len: usize, names: &[String]) -> Msg {
    let rooms = u64::from(rooms);
    let room = (seq % rooms) as usize;
    let mut publisher = [0u8; 8];
    publisher.copy_from_slice(format!("u{:07}", seq % 10_000_000).as_bytes());
    let mut payload = Vec::with_capacity(payload_len);
    let mut x = seq;
    while payload.len() < payload_len {
        x = splitmix64(x);
        let take = (payload_len - payload.len()).min(8);
        payload.extend_from_slice(&x.to_le_bytes()[..take]);
    }
    Msg {
        room: names[room].clone(),
        offset: seq / rooms,
        publisher,
        ts_ms: TS0 + seq,
        content_type: seq.is_multiple_of(4).then(|| "application/json".to_owned()),
        payload,
    }
}

/// How many of the first `committed` messages belong to `room`.
pub fn expected_count(committed: u64, rooms: u32, room: u32) -> u64 {
    let rooms = u64::from(rooms);
    committed / rooms + u64::from(u64::from(room) < committed % rooms)
}

/// Produces consecutive batches of the workload with their head updates.
#[derive(Debug)]
pub struct Generator {
    pub rooms: u32,
    pub payload: usize,
    pub names: Vec<String>,
    pub next_seq: u64,
    last: Vec<Option<u64>>,
    touched: Vec<u32>,
}

impl Generator {
    pub fn new(rooms: u32, payload: usize) -> Self {
        Self {
            rooms,
            payload,
            names: (0..rooms).map(room_name).collect(),
            next_seq: 0,
            last: vec![None; rooms as usize],
            touched: Vec::new(),
        }
    }

    pub fn next_batch(&mut self, n: usize, msgs: &mut Vec<Msg>, heads: &mut Vec<HeadUpdate>) {
        msgs.clear();
        heads.clear();
        for _ in 0..n {
            let seq = self.next_seq;
            self.next_seq += 1;
            let room = (seq % u64::from(self.rooms)) as u32;
            let m = message(seq, self.rooms, self.payload, &self.names);
            let slot = &mut self.last[room as usize];
            if slot.is_none() {
                self.touched.push(room);
            }
            *slot = Some(m.offset);
            msgs.push(m);
        }
        for room in self.touched.drain(..) {
            if let Some(last) = self.last[room as usize].take() {
                heads.push(HeadUpdate {
                    room: self.names[room as usize].clone(),
                    head: Head { epoch: EPOCH, last },
                });
            }
        }
    }
}

/// Key/value layout of the key-value engines: key = room, 0x00, big-endian offset,
/// so that a room's messages are contiguous and ordered.
#[cfg_attr(not(any(feature = "fjall", feature = "redb")), allow(dead_code))]
pub mod kv {
    use super::{Head, Msg};
    use anyhow::{Context, Result, ensure};

    pub fn msg_key(room: &str, offset: u64) -> Vec<u8> {
        let mut k = Vec::with_capacity(room.len() + 9);
        k.extend_from_slice(room.as_bytes());
        k.push(0);
        k.extend_from_slice(&offset.to_be_bytes());
        k
    }

    /// Inclusive key bounds of a room's messages.
    pub fn room_bounds(room: &str) -> (Vec<u8>, Vec<u8>) {
        (msg_key(room, 0), msg_key(room, u64::MAX))
    }

    pub fn key_offset(key: &[u8]) -> Result<u64> {
        ensure!(key.len() >= 9, "short key");
        let tail: [u8; 8] = key[key.len() - 8..].try_into()?;
        Ok(u64::from_be_bytes(tail))
    }

    /// Value: publisher length (u8), publisher, timestamp (u64 BE), content-type
    /// length (u8, 0 = none), content type, payload.
    pub fn msg_value(m: &Msg) -> Vec<u8> {
        let ct = m.content_type.as_deref().unwrap_or("");
        let mut v = Vec::with_capacity(1 + 8 + 8 + 1 + ct.len() + m.payload.len());
        v.push(m.publisher.len() as u8);
        v.extend_from_slice(&m.publisher);
        v.extend_from_slice(&m.ts_ms.to_be_bytes());
        v.push(ct.len() as u8);
        v.extend_from_slice(ct.as_bytes());
        v.extend_from_slice(&m.payload);
        v
    }

    pub fn decode(room: &str, key: &[u8], v: &[u8]) -> Result<Msg> {
        let offset = key_offset(key)?;
        let plen = usize::from(*v.first().context("empty value")?);
        ensure!(plen == 8, "publisher length {plen}");
        let rest = v.get(1..).context("short value")?;
        ensure!(rest.len() > 8 + 8, "short value");
        let publisher: [u8; 8] = rest[..8].try_into()?;
        let ts_ms = u64::from_be_bytes(rest[8..16].try_into()?);
        let clen = usize::from(rest[16]);
        let rest = &rest[17..];
        ensure!(rest.len() >= clen, "short content type");
        let content_type = if clen == 0 {
            None
        } else {
            Some(String::from_utf8(rest[..clen].to_vec())?)
        };
        Ok(Msg {
            room: room.to_owned(),
            offset,
            publisher,
            ts_ms,
            content_type,
            payload: rest[clen..].to_vec(),
        })
    }

    pub fn head_value(h: &Head) -> [u8; 16] {
        let mut v = [0u8; 16];
        v[..8].copy_from_slice(&h.epoch.to_be_bytes());
        v[8..].copy_from_slice(&h.last.to_be_bytes());
        v
    }

    pub fn decode_head(v: &[u8]) -> Result<Head> {
        ensure!(v.len() == 16, "head length {}", v.len());
        Ok(Head {
            epoch: u64::from_be_bytes(v[..8].try_into()?),
            last: u64::from_be_bytes(v[8..].try_into()?),
        })
    }
}
