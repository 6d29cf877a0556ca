//! Packet headers.
//!
//! ```text
//! byte 0: 1010 TT0K   magic 0xA, packet type TT, key phase K (data packets)
//! long header (Initial, Retry, Handshake): byte 0 | version u8 | dst cid u64 | src cid u64 | body
//!   Initial:   cookie_len u8 (0 or COOKIE_LEN) | cookie | msg_len varint | Noise message 1 | zero padding
//!   Retry:     cookie (COOKIE_LEN bytes)
//!   Handshake: msg_len varint | Noise message 2
//! data header: byte 0 | dst cid u64 | packet number u64 | AEAD(frames) | tag
//! ```
//! The data header is authenticated as the AEAD's associated data; the packet number is the nonce.

use super::codec::{put_varint, Reader, WireError};
use super::PROTOCOL_VERSION;

/// Length of a data packet's header in bytes.
pub const DATA_HEADER_LEN: usize = 17;
/// Initial packets are padded to at least this size, so that a server's answers to an unvalidated address
/// (Retry, Handshake) stay far below 3x what it received.
pub const MIN_INITIAL_SIZE: usize = 1200;
/// Longest Noise handshake message accepted.
pub const MAX_HANDSHAKE_MESSAGE: usize = 1024;
/// Longest cookie accepted.
pub const MAX_COOKIE: usize = 64;

const MAGIC: u8 = 0xa0;

/// The four packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    /// Client -> server: Noise message 1, optionally with a cookie.
    Initial = 0,
    /// Server -> client: a cookie to echo (address validation), no server state kept.
    Retry = 1,
    /// Server -> client: Noise message 2.
    Handshake = 2,
    /// Either way: AEAD-protected frames.
    Data = 3,
}

/// The header fields shared by Initial, Retry and Handshake packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongHeader {
    /// Protocol version.
    pub version: u8,
    /// Connection id of the receiver (0 when the client does not know the server's yet).
    pub dst_cid: u64,
    /// Connection id of the sender.
    pub src_cid: u64,
}

/// A data packet's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataHeader {
    /// Connection id chosen by the receiver.
    pub dst_cid: u64,
    /// Never reused within a connection and direction; the AEAD nonce.
    pub packet_number: u64,
    /// Which key generation sealed the packet (flips at each key update).
    pub key_phase: bool,
}

/// A parsed packet, borrowing its variable-length parts from the datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// See [`PacketType::Initial`].
    Initial {
        /// Header.
        header: LongHeader,
        /// Echoed cookie, empty on a first attempt.
        cookie: &'a [u8],
        /// Noise message 1.
        message: &'a [u8],
    },
    /// See [`PacketType::Retry`].
    Retry {
        /// Header.
        header: LongHeader,
        /// The cookie to echo.
        cookie: &'a [u8],
    },
    /// See [`PacketType::Handshake`].
    Handshake {
        /// Header.
        header: LongHeader,
        /// Noise message 2.
        message: &'a [u8],
    },
    /// See [`PacketType::Data`]; the protected payload is `datagram[DATA_HEADER_LEN..]`.
    Data(DataHeader),
}

/// Reads only the destination connection id, to route a datagram without parsing it.
pub fn peek_dst_cid(datagram: &[u8]) -> Option<u64> {
    let mut r = Reader::new(datagram);
    let first = r.u8().ok()?;
    if first & 0xf0 != MAGIC {
        return None;
    }
    if (first >> 2) & 3 != PacketType::Data as u8 {
        r.u8().ok()?;
    }
    r.u64().ok()
}

/// Parses a datagram's header (and, for long headers, its body).
pub fn parse(datagram: &[u8]) -> Result<Packet<'_>, WireError> {
    let mut r = Reader::new(datagram);
    let first = r.u8()?;
    if first & 0xf0 != MAGIC {
        return Err(WireError::UnknownType {
            what: "packet",
            code: first,
        });
    }
    let ty = (first >> 2) & 3;
    if ty == PacketType::Data as u8 {
        let dst_cid = r.u64()?;
        let packet_number = r.u64()?;
        return Ok(Packet::Data(DataHeader {
            dst_cid,
            packet_number,
            key_phase: first & 1 == 1,
        }));
    }
    let version = r.u8()?;
    if version != PROTOCOL_VERSION {
        return Err(WireError::Invalid {
            field: "version",
            value: u64::from(version),
        });
    }
    let header = LongHeader {
        version,
        dst_cid: r.u64()?,
        src_cid: r.u64()?,
    };
    match ty {
        0 => {
            let cookie_len = usize::from(r.u8()?);
            if cookie_len > MAX_COOKIE {
                return Err(WireError::Invalid {
                    field: "cookie length",
                    value: cookie_len as u64,
                });
            }
            let cookie = r.take(cookie_len)?;
            let len = r.length("handshake message length", MAX_HANDSHAKE_MESSAGE)?;
            let message = r.take(len)?;
            Ok(Packet::Initial {
                header,
                cookie,
                message,
            })
        }
        1 => {
            let len = r.remaining().min(MAX_COOKIE);
            Ok(Packet::Retry {
                header,
                cookie: r.take(len)?,
            })
        }
        _ => {
            let len = r.length("handshake message length", MAX_HANDSHAKE_MESSAGE)?;
            Ok(Packet::Handshake {
                header,
                message: r.take(len)?,
            })
        }
    }
}

fn put_long_header(out: &mut Vec<u8>, ty: PacketType, dst_cid: u64, src_cid: u64) {
    out.push(MAGIC | ((ty as u8) << 2));
    out.push(PROTOCOL_VERSION);
    out.extend_from_slice(&dst_cid.to_be_bytes());
    out.extend_from_slice(&src_cid.to_be_bytes());
}

/// Appends an Initial packet, zero-padded to [`MIN_INITIAL_SIZE`] (what `out` held before stays in front).
pub fn write_initial(out: &mut Vec<u8>, dst_cid: u64, src_cid: u64, cookie: &[u8], message: &[u8]) {
    let start = out.len();
    put_long_header(out, PacketType::Initial, dst_cid, src_cid);
    out.push(cookie.len().min(MAX_COOKIE) as u8);
    out.extend_from_slice(&cookie[..cookie.len().min(MAX_COOKIE)]);
    put_varint(out, message.len() as u64);
    out.extend_from_slice(message);
    if out.len() - start < MIN_INITIAL_SIZE {
        out.resize(start + MIN_INITIAL_SIZE, 0);
    }
}

/// Writes a Retry packet.
pub fn write_retry(out: &mut Vec<u8>, dst_cid: u64, cookie: &[u8]) {
    put_long_header(out, PacketType::Retry, dst_cid, 0);
    out.extend_from_slice(&cookie[..cookie.len().min(MAX_COOKIE)]);
}

/// Writes a Handshake packet.
pub fn write_handshake(out: &mut Vec<u8>, dst_cid: u64, src_cid: u64, message: &[u8]) {
    put_long_header(out, PacketType::Handshake, dst_cid, src_cid);
    put_varint(out, message.len() as u64);
    out.extend_from_slice(message);
}

/// Writes a data packet's header; the caller appends frames and seals.
pub fn write_data_header(out: &mut Vec<u8>, header: &DataHeader) {
    out.push(MAGIC | ((PacketType::Data as u8) << 2) | u8::from(header.key_phase));
    out.extend_from_slice(&header.dst_cid.to_be_bytes());
    out.extend_from_slice(&header.packet_number.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn headers_round_trip() {
        let mut out = Vec::new();
        write_initial(&mut out, 0, 7, b"cookie", b"noise1");
        assert_eq!(out.len(), MIN_INITIAL_SIZE);
        let mut appended = b"earlier".to_vec();
        write_initial(&mut appended, 0, 7, b"cookie", b"noise1");
        assert_eq!(&appended[..7], b"earlier");
        assert_eq!(&appended[7..], &out[..], "padded from its own start");
        let h = LongHeader {
            version: PROTOCOL_VERSION,
            dst_cid: 0,
            src_cid: 7,
        };
        assert_eq!(
            parse(&out),
            Ok(Packet::Initial {
                header: h,
                cookie: b"cookie",
                message: b"noise1"
            })
        );

        out.clear();
        write_retry(&mut out, 7, b"c00kie");
        assert_eq!(
            parse(&out),
            Ok(Packet::Retry {
                header: LongHeader {
                    dst_cid: 7,
                    src_cid: 0,
                    ..h
                },
                cookie: b"c00kie"
            })
        );

        out.clear();
        write_handshake(&mut out, 7, 9, b"noise2");
        assert_eq!(peek_dst_cid(&out), Some(7));
        assert_eq!(
            parse(&out),
            Ok(Packet::Handshake {
                header: LongHeader {
                    dst_cid: 7,
                    src_cid: 9,
                    ..h
                },
                message: b"noise2"
            })
        );

        out.clear();
        let d = DataHeader {
            dst_cid: 42,
            packet_number: 1 << 40,
            key_phase: true,
        };
        write_data_header(&mut out, &d);
        assert_eq!(out.len(), DATA_HEADER_LEN);
        assert_eq!(parse(&out), Ok(Packet::Data(d)));
        assert_eq!(peek_dst_cid(&out), Some(42));
    }

    #[test]
    fn bad_magic_and_version_are_rejected() {
        assert!(parse(&[0x00; 40]).is_err());
        let mut out = Vec::new();
        write_handshake(&mut out, 1, 2, b"x");
        out[1] = 99;
        assert!(matches!(
            parse(&out),
            Err(WireError::Invalid { field: "version", .. })
        ));
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), first in 0xa0u8..0xb0) {
            let mut b = bytes.clone();
            let _ = parse(&b);
            if !b.is_empty() { b[0] = first; }
            let _ = parse(&b);
            let _ = peek_dst_cid(&b);
        }
    }
}
