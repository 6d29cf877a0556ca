//! [`Reader`]: a bounds-checked big-endian reader over a peer's bytes, for chunk headers and AMF0.

/// Reads big-endian fields from a byte slice; every read returns `None` past the end and then reads nothing.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, position: 0 }
    }

    /// Bytes read so far.
    pub(crate) fn position(&self) -> usize {
        self.position
    }

    /// The next `count` bytes.
    pub(crate) fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        let end = self.position.checked_add(count)?;
        let bytes = self.bytes.get(self.position..end)?;
        self.position = end;
        Some(bytes)
    }

    /// Steps over `count` bytes.
    pub(crate) fn skip(&mut self, count: usize) -> Option<()> {
        self.take(count).map(|_| ())
    }

    /// One byte.
    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    /// A big-endian `u16`.
    pub(crate) fn be16(&mut self) -> Option<u16> {
        let bytes: [u8; 2] = self.take(2)?.try_into().ok()?;
        Some(u16::from_be_bytes(bytes))
    }

    /// A big-endian 24-bit value.
    pub(crate) fn be24(&mut self) -> Option<u32> {
        let [a, b, c]: [u8; 3] = self.take(3)?.try_into().ok()?;
        Some(u32::from_be_bytes([0, a, b, c]))
    }

    /// A big-endian `u32`.
    pub(crate) fn be32(&mut self) -> Option<u32> {
        let bytes: [u8; 4] = self.take(4)?.try_into().ok()?;
        Some(u32::from_be_bytes(bytes))
    }

    /// A little-endian `u32` (RTMP's message stream id).
    pub(crate) fn le32(&mut self) -> Option<u32> {
        let bytes: [u8; 4] = self.take(4)?.try_into().ok()?;
        Some(u32::from_le_bytes(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stop_at_the_end_and_consume_nothing_there() {
        let mut reader = Reader::new(&[1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(reader.be24(), Some(0x01_0203));
        assert_eq!(reader.be32(), Some(0x0405_0607));
        assert_eq!(reader.u8(), None);
        assert_eq!(reader.position(), 7);
        let mut reader = Reader::new(&[1, 0, 0, 0, 9]);
        assert_eq!(reader.le32(), Some(1));
        assert_eq!(reader.be16(), None);
        assert_eq!(reader.position(), 4);
        assert_eq!(reader.skip(usize::MAX), None);
        assert_eq!(reader.take(1), Some(&[9][..]));
    }
}
