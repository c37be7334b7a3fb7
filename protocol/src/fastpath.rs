//! Specialised verification and encoding for the two frames on the hot path:
//! `Message` (every delivery) and `Publish` (every client publish).
//!
//! The generic FlatBuffers verifier costs ~350 ns per small frame on the
//! reference machine, ~25x the cost of reading the frame; most of it is
//! generic bookkeeping. This module checks exactly the fields the generated
//! accessors of `Frame`, `Message` and `Publish` read: every table, vtable,
//! scalar, string and vector in bounds and aligned, strings NUL-terminated
//! valid UTF-8, required fields present. It is at least as strict as the
//! generic verifier (the fuzz target and the corruption tests assert that
//! whatever it accepts the generic verifier accepts too); anything it does
//! not accept, including any other frame kind, falls back to the generic
//! verifier, so it can only make decoding faster, never more permissive.
//!
//! It also lays out a `Message` frame directly into one exact-size buffer,
//! skipping the builder; tests check that the result decodes under the
//! generic verifier to the same values.

use bytes::Bytes;

use crate::codec::MessageRef;
use crate::wire::{self, Body};

/// Read-only view with checked, aligned little-endian reads.
struct Buf<'a>(&'a [u8]);

impl Buf<'_> {
    #[inline(always)]
    fn bytes<const N: usize>(&self, pos: usize) -> Option<[u8; N]> {
        if !pos.is_multiple_of(N) {
            return None;
        }
        self.0.get(pos..pos.checked_add(N)?)?.try_into().ok()
    }
    #[inline(always)]
    fn u16(&self, pos: usize) -> Option<usize> {
        self.bytes::<2>(pos).map(|b| usize::from(u16::from_le_bytes(b)))
    }
    #[inline(always)]
    fn u32(&self, pos: usize) -> Option<usize> {
        self.bytes::<4>(pos).map(|b| u32::from_le_bytes(b) as usize)
    }
    #[inline(always)]
    fn i32(&self, pos: usize) -> Option<i64> {
        self.bytes::<4>(pos).map(|b| i64::from(i32::from_le_bytes(b)))
    }

    #[inline(always)]
    /// A verified table at `pos`.
    fn table(&self, pos: usize) -> Option<Table> {
        let soffset = self.i32(pos)?;
        let vtable = usize::try_from(pos as i64 - soffset).ok()?;
        let vtable_len = self.u16(vtable)?;
        let table_len = self.u16(vtable.checked_add(2)?)?;
        if vtable_len < 4 || !vtable_len.is_multiple_of(2) || table_len < 4 {
            return None;
        }
        self.0.get(vtable..vtable.checked_add(vtable_len)?)?;
        self.0.get(pos..pos.checked_add(table_len)?)?;
        Some(Table {
            pos,
            vtable,
            vtable_len,
            table_len,
        })
    }

    #[inline(always)]
    /// Position of field `id` of `size` bytes, None if absent; Err if the
    /// vtable entry points outside the table or is misaligned.
    fn field(&self, t: &Table, id: usize, size: usize) -> Result<Option<usize>, ()> {
        let slot = 4 + 2 * id;
        if slot + 2 > t.vtable_len {
            return Ok(None);
        }
        let offset = self.u16(t.vtable + slot).ok_or(())?;
        if offset == 0 {
            return Ok(None);
        }
        if offset < 4 || offset + size > t.table_len {
            return Err(());
        }
        let pos = t.pos + offset;
        if !pos.is_multiple_of(size) {
            return Err(());
        }
        Ok(Some(pos))
    }

    #[inline(always)]
    /// Follows the uoffset stored at `pos`.
    fn follow(&self, pos: usize) -> Option<usize> {
        let target = pos.checked_add(self.u32(pos)?)?;
        (target < self.0.len()).then_some(target)
    }

    #[inline(always)]
    /// A string field: absent, or a verified NUL-terminated UTF-8 string.
    fn string_field(&self, t: &Table, id: usize, required: bool) -> Option<()> {
        match self.field(t, id, 4).ok()? {
            None => (!required).then_some(()),
            Some(pos) => {
                let s = self.follow(pos)?;
                let len = self.u32(s)?;
                let start = s + 4;
                let end = start.checked_add(len)?;
                if *self.0.get(end)? != 0 {
                    return None;
                }
                let text = &self.0[start..end];
                // Room names, user ids and MIME types are ASCII: the word-at-a-
                // time ASCII check is much cheaper than full UTF-8 validation
                // on short strings.
                (text.is_ascii() || std::str::from_utf8(text).is_ok()).then_some(())
            }
        }
    }

    #[inline(always)]
    /// A `[ubyte]` field: absent or in bounds.
    fn bytes_field(&self, t: &Table, id: usize) -> Option<()> {
        match self.field(t, id, 4).ok()? {
            None => Some(()),
            Some(pos) => {
                let v = self.follow(pos)?;
                let len = self.u32(v)?;
                self.0.get(v + 4..(v + 4).checked_add(len)?).map(|_| ())
            }
        }
    }

    #[inline(always)]
    fn scalar_field(&self, t: &Table, id: usize, size: usize) -> Option<()> {
        self.field(t, id, size).ok().map(|_| ())
    }
}

struct Table {
    pos: usize,
    vtable: usize,
    vtable_len: usize,
    table_len: usize,
}

// Field ids, in schema order.
const FRAME_REQUEST_ID: usize = 0;
const FRAME_BODY_TYPE: usize = 1;
const FRAME_BODY: usize = 2;

/// Verifies `buf` as a `Frame` whose body is a `Message` or `Publish`.
/// Returns the body type on success; None means "use the generic verifier".
fn verify(buf: &[u8]) -> Option<Body> {
    let b = Buf(buf);
    let frame = b.table(b.u32(0)?)?;
    b.scalar_field(&frame, FRAME_REQUEST_ID, 4)?;
    let body_type = Body(*buf.get(b.field(&frame, FRAME_BODY_TYPE, 1).ok()??)?);
    let body = b.table(b.follow(b.field(&frame, FRAME_BODY, 4).ok()??)?)?;
    match body_type {
        Body::Message => {
            // room, epoch, offset, publisher, timestamp_ms, payload, content_type, volatile
            b.string_field(&body, 0, true)?;
            b.scalar_field(&body, 1, 8)?;
            b.scalar_field(&body, 2, 8)?;
            b.string_field(&body, 3, false)?;
            b.scalar_field(&body, 4, 8)?;
            b.bytes_field(&body, 5)?;
            b.string_field(&body, 6, false)?;
            b.scalar_field(&body, 7, 1)?;
        }
        Body::Publish => {
            // room, payload, content_type, volatile, idempotency_key
            b.string_field(&body, 0, true)?;
            b.bytes_field(&body, 1)?;
            b.string_field(&body, 2, false)?;
            b.scalar_field(&body, 3, 1)?;
            b.string_field(&body, 4, false)?;
        }
        _ => return None,
    }
    Some(body_type)
}

/// The frame, if the fast verifier accepts it.
pub(crate) fn decode(buf: &[u8]) -> Option<wire::Frame<'_>> {
    verify(buf)?;
    // SAFETY: `verify` checked the root offset, the Frame table and its
    // vtable, and every field the generated accessors of Frame and of the
    // Message/Publish body read (bounds, alignment, NUL-terminated UTF-8
    // strings, vector lengths, required fields). Accessors for other body
    // kinds return None after comparing body_type, without reading.
    #[allow(unsafe_code)]
    Some(unsafe { flatbuffers::root_unchecked::<wire::Frame<'_>>(buf) })
}

/// Whether the fast verifier accepts `buf` (for differential tests).
#[doc(hidden)]
pub fn accepts(buf: &[u8]) -> bool {
    verify(buf).is_some()
}

fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

/// Encodes a delivered `Message` frame (request id 0) with one exact-size
/// allocation and no builder.
///
/// Layout (offsets from the start; everything little-endian):
/// ```text
///  0 root uoffset -> 20        4 "HRL1"
///  8 Frame vtable (10 B)      18 pad
/// 20 Frame table: soffset, body uoffset @24, body_type @28, pad -> 32
/// 32 Message vtable (20 B)    52 pad
/// 56 Message table: soffset, room @60, epoch @64, offset @72,
///    timestamp_ms @80, publisher @88, payload @92, content_type @96,
///    volatile @100, pad -> 104
/// 104 strings and the payload vector, each 4-aligned
/// ```
pub(crate) fn encode_message(m: &MessageRef<'_>) -> Bytes {
    const FRAME_VT: usize = 8;
    const FRAME: usize = 20;
    const MSG_VT: usize = 32;
    const MSG: usize = 56;
    const DATA: usize = 104;
    let str_size = |s: &str| pad4(4 + s.len() + 1);
    let content_type = m.content_type.unwrap_or("");
    let total = DATA
        + str_size(m.room)
        + str_size(m.publisher)
        + pad4(4 + m.payload.len())
        + m.content_type.map_or(0, |_| str_size(content_type));
    let mut out = vec![0u8; total];
    let put16 = |out: &mut Vec<u8>, at: usize, v: usize| out[at..at + 2].copy_from_slice(&(v as u16).to_le_bytes());
    let put32 = |out: &mut Vec<u8>, at: usize, v: usize| out[at..at + 4].copy_from_slice(&(v as u32).to_le_bytes());
    let put64 = |out: &mut Vec<u8>, at: usize, v: u64| out[at..at + 8].copy_from_slice(&v.to_le_bytes());

    put32(&mut out, 0, FRAME);
    out[4..8].copy_from_slice(b"HRL1");
    // Frame vtable: len 10, table len 12, request_id absent, body_type @8, body @4.
    for (i, v) in [10, 12, 0, 8, 4].into_iter().enumerate() {
        put16(&mut out, FRAME_VT + 2 * i, v);
    }
    put32(&mut out, FRAME, FRAME - FRAME_VT);
    put32(&mut out, FRAME + 4, MSG - (FRAME + 4));
    out[FRAME + 8] = Body::Message.0;
    // Message vtable: len 20, table len 48, then field offsets in schema order.
    let ct_slot = if m.content_type.is_some() { 40 } else { 0 };
    for (i, v) in [20, 48, 4, 8, 16, 32, 24, 36, ct_slot, 44].into_iter().enumerate() {
        put16(&mut out, MSG_VT + 2 * i, v);
    }
    put32(&mut out, MSG, MSG - MSG_VT);
    put64(&mut out, MSG + 8, m.epoch);
    put64(&mut out, MSG + 16, m.offset);
    put64(&mut out, MSG + 24, m.timestamp_ms);
    out[MSG + 44] = u8::from(m.volatile);

    let mut at = DATA;
    let mut put_str = |out: &mut Vec<u8>, field: usize, s: &[u8], nul: bool| {
        put32(out, field, at - field);
        put32(out, at, s.len());
        out[at + 4..at + 4 + s.len()].copy_from_slice(s);
        at += pad4(4 + s.len() + usize::from(nul));
    };
    put_str(&mut out, MSG + 4, m.room.as_bytes(), true);
    put_str(&mut out, MSG + 32, m.publisher.as_bytes(), true);
    put_str(&mut out, MSG + 36, m.payload, false);
    if m.content_type.is_some() {
        put_str(&mut out, MSG + 40, content_type.as_bytes(), true);
    }
    Bytes::from(out)
}
