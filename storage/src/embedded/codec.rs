//! The value encoding: a version byte, then fields in a fixed order as
//! LEB128 varints, little-endian `f64`s and length-prefixed byte strings.
//!
//! Hand-written because the records are few and small, and every byte of a
//! message's value is paid again on each read. The version byte lets a
//! later release change a layout and still read the old one. Decoding
//! checks every length against what is left and rejects trailing bytes, so
//! a damaged value is a [`StorageError::Corrupt`], never a panic or a
//! silently wrong record.

use crate::{StorageError, StorageResult};

/// The layout version every value starts with.
pub(super) const VERSION: u8 = 1;

/// Builds one value.
#[derive(Debug)]
pub(super) struct Enc(Vec<u8>);

impl Enc {
    pub(super) fn new() -> Self {
        Self::with_capacity(16)
    }

    pub(super) fn with_capacity(capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity + 1);
        buf.push(VERSION);
        Self(buf)
    }

    pub(super) fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }

    pub(super) fn var(mut self, mut v: u64) -> Self {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
        self
    }

    pub(super) fn f64(mut self, v: f64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub(super) fn bytes(self, v: &[u8]) -> Self {
        let mut this = self.var(v.len() as u64);
        this.0.extend_from_slice(v);
        this
    }

    pub(super) fn str(self, v: &str) -> Self {
        self.bytes(v.as_bytes())
    }

    pub(super) fn finish(self) -> Vec<u8> {
        self.0
    }
}

/// Reads one value back; `what` names the record in errors.
#[derive(Debug)]
pub(super) struct Dec<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> Dec<'a> {
    pub(super) fn new(value: &'a [u8], what: &'static str) -> StorageResult<Self> {
        match value.split_first() {
            Some((&VERSION, rest)) => Ok(Self { rest, what }),
            Some((v, _)) => Err(corrupt(what, &format!("unknown version {v}"))),
            None => Err(corrupt(what, "empty value")),
        }
    }

    fn take(&mut self, n: usize) -> StorageResult<&'a [u8]> {
        if n > self.rest.len() {
            return Err(corrupt(self.what, "truncated"));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    pub(super) fn u8(&mut self) -> StorageResult<u8> {
        Ok(self.take(1)?[0])
    }

    pub(super) fn var(&mut self) -> StorageResult<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            let bits = u64::from(byte & 0x7f);
            // The tenth byte may only carry the top bit of a u64.
            if shift == 63 && bits > 1 {
                break;
            }
            v |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(corrupt(self.what, "varint overflow"))
    }

    pub(super) fn f64(&mut self) -> StorageResult<f64> {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(self.take(8)?);
        Ok(f64::from_le_bytes(raw))
    }

    pub(super) fn bytes(&mut self) -> StorageResult<&'a [u8]> {
        let len = usize::try_from(self.var()?).map_err(|_| corrupt(self.what, "length overflow"))?;
        self.take(len)
    }

    pub(super) fn str(&mut self) -> StorageResult<&'a str> {
        std::str::from_utf8(self.bytes()?).map_err(|_| corrupt(self.what, "not UTF-8"))
    }

    /// Bytes not read yet.
    pub(super) fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Checks nothing is left: a value longer than its layout is damaged.
    pub(super) fn end(self) -> StorageResult<()> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(corrupt(self.what, "trailing bytes"))
        }
    }
}

pub(super) fn corrupt(what: &str, why: &str) -> StorageError {
    StorageError::Corrupt(format!("{what}: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let value = Enc::new()
            .u8(7)
            .var(0)
            .var(127)
            .var(128)
            .var(u64::MAX)
            .f64(-2.5)
            .str("héllo")
            .bytes(&[0, 255, 0])
            .finish();
        let mut d = Dec::new(&value, "test").unwrap();
        assert_eq!(d.u8().unwrap(), 7);
        assert_eq!(d.var().unwrap(), 0);
        assert_eq!(d.var().unwrap(), 127);
        assert_eq!(d.var().unwrap(), 128);
        assert_eq!(d.var().unwrap(), u64::MAX);
        assert_eq!(d.f64().unwrap(), -2.5);
        assert_eq!(d.str().unwrap(), "héllo");
        assert_eq!(d.bytes().unwrap(), &[0, 255, 0]);
        d.end().unwrap();
    }

    #[test]
    fn damage_is_corrupt_not_a_panic() {
        let value = Enc::new().var(300).str("abc").finish();
        for cut in 0..value.len() {
            let outcome = Dec::new(&value[..cut], "test").and_then(|mut d| {
                d.var()?;
                d.str()?;
                d.end()
            });
            assert!(matches!(outcome, Err(StorageError::Corrupt(_))), "cut at {cut}");
        }
        let mut longer = value.clone();
        longer.push(0);
        let mut d = Dec::new(&longer, "test").unwrap();
        d.var().unwrap();
        d.str().unwrap();
        assert!(d.end().is_err());

        assert!(Dec::new(&[2, 0], "test").is_err());
        let overflow = [VERSION, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        assert!(Dec::new(&overflow, "test").unwrap().var().is_err());
        let huge_len = [VERSION, 0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(Dec::new(&huge_len, "test").unwrap().bytes().is_err());
        assert!(Dec::new(&[VERSION, 1, 0xff], "test").unwrap().str().is_err());
    }
}
