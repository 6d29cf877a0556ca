//! Bounds-checked reading and the variable-length integer encoding (QUIC's, RFC 9000 §16).

use thiserror::Error;

/// Why a packet or frame did not decode.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    /// The input ended before a field it announced.
    #[error("truncated: needed {needed} more bytes at offset {offset}")]
    Truncated {
        /// Offset of the field that did not fit.
        offset: usize,
        /// Bytes that were missing.
        needed: usize,
    },
    /// A field had a value the protocol does not allow.
    #[error("invalid {field}: {value}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// The offending value.
        value: u64,
    },
    /// An unknown packet or frame type.
    #[error("unknown {what} type 0x{code:02x}")]
    UnknownType {
        /// `"packet"` or `"frame"`.
        what: &'static str,
        /// The type byte.
        code: u8,
    },
}

/// The largest value a varint can hold (2^62 - 1).
pub const VARINT_MAX: u64 = (1 << 62) - 1;

/// A cursor over a byte slice that never reads past its end.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    #[inline]
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes left.
    #[inline]
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// True when everything was consumed.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Takes the next `n` bytes.
    #[inline]
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.remaining() {
            return Err(WireError::Truncated {
                offset: self.pos,
                needed: n - self.remaining(),
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// Reads one byte.
    #[inline]
    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    /// Reads a big-endian u64.
    pub fn u64(&mut self) -> Result<u64, WireError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// Reads a fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let b = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    /// Reads a variable-length integer.
    #[inline]
    pub fn varint(&mut self) -> Result<u64, WireError> {
        let first = self.u8()?;
        let len = 1usize << (first >> 6);
        let mut v = u64::from(first & 0x3f);
        for &b in self.take(len - 1)? {
            v = (v << 8) | u64::from(b);
        }
        Ok(v)
    }

    /// Reads a varint that must fit in `u32`.
    #[inline]
    pub fn varint_u32(&mut self, field: &'static str) -> Result<u32, WireError> {
        let v = self.varint()?;
        u32::try_from(v).map_err(|_| WireError::Invalid { field, value: v })
    }

    /// Reads a varint used as a length and checks it against `max` and against what is left.
    #[inline]
    pub fn length(&mut self, field: &'static str, max: usize) -> Result<usize, WireError> {
        let v = self.varint()?;
        match usize::try_from(v) {
            Ok(n) if n <= max => Ok(n),
            _ => Err(WireError::Invalid { field, value: v }),
        }
    }
}

/// The encoded size of `v` as a varint.
#[inline]
pub fn varint_len(v: u64) -> usize {
    if v < 1 << 6 {
        1
    } else if v < 1 << 14 {
        2
    } else if v < 1 << 30 {
        4
    } else {
        8
    }
}

/// Up to `N` bytes of fields encoded on the stack, then appended to a packet in one copy: a header built
/// field by field costs one capacity check instead of one per field. Writes past `N` are dropped, so `N` must
/// be at least the header's largest encoding (checked in debug builds); 8 bytes more lets every varint be
/// one fixed-size store.
#[derive(Debug, Clone)]
pub struct StackBytes<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Default for StackBytes<N> {
    fn default() -> Self {
        StackBytes { buf: [0; N], len: 0 }
    }
}

impl<const N: usize> StackBytes<N> {
    /// Appends one byte.
    #[inline]
    pub fn u8(&mut self, b: u8) {
        self.put(&[b]);
    }

    /// Appends `v` as a varint, as [`put_varint`] does.
    #[inline]
    pub fn varint(&mut self, v: u64) {
        let v = v.min(VARINT_MAX);
        let n = varint_len(v);
        // The two-bit length prefix (0, 1, 2 or 3 for 1, 2, 4 or 8 bytes) in the top bits of those bytes,
        // which are moved to the top of the word: its first `n` big-endian bytes are the encoding.
        let tagged = (v | (u64::from(n.trailing_zeros()) << (8 * n - 2))) << (64 - 8 * n);
        let bytes = tagged.to_be_bytes();
        // One fixed 8-byte store where there is room (what follows overwrites the spare bytes), else exact.
        if let Some(dst) = self.buf.get_mut(self.len..self.len + 8) {
            dst.copy_from_slice(&bytes);
            self.len += n;
        } else {
            self.put(bytes.get(..n).unwrap_or_default());
        }
    }

    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        debug_assert!(end <= N, "StackBytes<{N}> overflow");
        if let Some(dst) = self.buf.get_mut(self.len..end) {
            dst.copy_from_slice(bytes);
            self.len = end;
        }
    }

    /// The bytes written so far.
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

/// Appends `v` as a varint. Values above [`VARINT_MAX`] are clamped to it (callers never produce them).
#[inline]
pub fn put_varint(out: &mut Vec<u8>, v: u64) {
    let v = v.min(VARINT_MAX);
    match varint_len(v) {
        1 => out.push(v as u8),
        2 => out.extend_from_slice(&((v as u16) | 0x4000).to_be_bytes()),
        4 => out.extend_from_slice(&((v as u32) | 0x8000_0000).to_be_bytes()),
        _ => out.extend_from_slice(&(v | 0xc000_0000_0000_0000).to_be_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc9000_examples_decode() {
        let cases: [(&[u8], u64); 4] = [
            (
                &[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c],
                151_288_809_941_952_652,
            ),
            (&[0x9d, 0x7f, 0x3e, 0x7d], 494_878_333),
            (&[0x7b, 0xbd], 15_293),
            (&[0x25], 37),
        ];
        for (bytes, v) in cases {
            assert_eq!(Reader::new(bytes).varint(), Ok(v));
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out, bytes);
        }
    }

    #[test]
    fn truncated_input_is_an_error() {
        assert!(matches!(
            Reader::new(&[0xc2, 0x19]).varint(),
            Err(WireError::Truncated { .. })
        ));
        assert!(Reader::new(&[]).u8().is_err());
        assert!(Reader::new(&[1, 2, 3]).u64().is_err());
        assert!(Reader::new(&[0x44]).length("len", 10).is_err());
    }

    #[test]
    fn stack_bytes_near_their_end_write_exactly() {
        // 1 + 2 bytes: no room for an 8-byte store, so the varint is written byte for byte.
        let mut b = StackBytes::<3>::default();
        b.u8(7);
        b.varint(300);
        assert_eq!(b.as_slice(), &[7, 0x41, 0x2c]);
    }

    proptest! {
        #[test]
        fn stack_bytes_encode_as_put_varint_does(vs in proptest::collection::vec(any::<u64>(), 0..8), b: u8) {
            let mut want = vec![b];
            let mut got = StackBytes::<65>::default();
            got.u8(b);
            for &v in &vs {
                put_varint(&mut want, v);
                got.varint(v);
            }
            prop_assert_eq!(got.as_slice(), &want[..]);
        }

        #[test]
        fn varints_round_trip(v in 0u64..=VARINT_MAX) {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            prop_assert_eq!(out.len(), varint_len(v));
            let mut r = Reader::new(&out);
            prop_assert_eq!(r.varint(), Ok(v));
            prop_assert!(r.is_empty());
        }

        #[test]
        fn reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
            let mut r = Reader::new(&bytes);
            while r.varint().is_ok() {}
        }
    }
}
