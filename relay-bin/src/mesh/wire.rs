//! What PoPs say to each other on a link: control messages on the link's control stream, and live frames on
//! one transport stream per carried stream.
//!
//! A link is one encrypted transport connection between two nodes. Its stream [`CONTROL_STREAM`] carries
//! [`Control`] messages, each one transport frame of kind `Metadata` (essential: never dropped by a drop
//! policy, delivered reliably and in order). A carried stream gets its own transport stream, announced by
//! [`Control::Open`] before its first frame; each of its frames is one transport frame whose kind, capture
//! time and remaining budget the transport carries itself, and whose payload is a [`MediaHeader`] (track,
//! DTS, PTS) followed by the body. The transport drops in priority order and resumes on a keyframe, so the
//! far side never gets a frame whose reference was lost.
//!
//! Control messages are serde values in postcard's stable 1.0 wire format behind a one-byte version. Decoding
//! hostile bytes never panics or reads past its input; sizes are bounded ([`MAX_CONTROL_BYTES`]) and every
//! stream key is checked ([`StreamKey`]) before a message is handed on.

use crate::media::frame::Track;
use crate::stream_key::StreamKey;
use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// The transport stream of a link's control messages.
pub const CONTROL_STREAM: u32 = 0;
/// The first transport stream id a node opens for a carried stream (ids are per direction and never reused
/// on one link).
pub const FIRST_MEDIA_STREAM: u32 = 1;
/// The wire version this node speaks.
pub const VERSION: u8 = 1;
/// The largest control message accepted (a ban reason or a node id is short; a hostile peer's megabyte is not
/// parsed).
pub const MAX_CONTROL_BYTES: usize = 16 * 1024;
/// Bytes of a [`MediaHeader`].
pub const MEDIA_HEADER_BYTES: usize = 17;

/// Why a carried stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CloseReason {
    /// The publisher stopped.
    Unpublished,
    /// The stream is forbidden.
    Forbidden,
    /// Nobody on the far side needs it any more.
    Unpulled,
    /// The sender moved the stream elsewhere (its home changed).
    Moved,
}

/// A control message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// The first message each side sends on a new link.
    Hello {
        /// The sender's node id.
        node: String,
        /// For each node that decided bans, the highest of its ban numbers the sender holds: the peer sends
        /// what is newer (a node that was down learns what it missed).
        bans_through: Vec<(String, u64)>,
    },
    /// The sender will carry stream `key` on transport stream `stream` (a push to its home, or the answer
    /// to a pull).
    Open {
        /// The transport stream its frames travel on.
        stream: u32,
        /// The stream key (`app/name`).
        key: String,
        /// The node where it is published.
        origin: String,
        /// Links it crossed before this one (0: the sender is the origin).
        hops: u8,
    },
    /// The stream on transport stream `stream` has ended.
    Close {
        /// The transport stream.
        stream: u32,
        /// Why.
        reason: CloseReason,
    },
    /// Send me stream `key` (an edge's first viewer asked for it).
    Pull {
        /// The stream key.
        key: String,
    },
    /// I no longer need stream `key` (its last viewer left, after the grace period).
    Unpull {
        /// The stream key.
        key: String,
    },
    /// I do not carry stream `key` (not published here, and not its home).
    NotFound {
        /// The stream key.
        key: String,
    },
    /// A ban, replicated to every node.
    Ban {
        /// The node that decided it.
        origin: String,
        /// Its number among that node's bans (1, 2, ...).
        seq: u64,
        /// The stream key.
        key: String,
        /// When it ends (Unix ms); `None`: never.
        until_unix_ms: Option<u64>,
        /// Why.
        reason: String,
        /// Who decided it (an operator or a token's name).
        by: String,
    },
}

/// Why bytes from a peer were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Empty, or over [`MAX_CONTROL_BYTES`].
    #[error("control message of {0} bytes (1 to {MAX_CONTROL_BYTES} accepted)")]
    Size(usize),
    /// A version this node does not speak.
    #[error("control message version {0} (this node speaks {VERSION})")]
    Version(u8),
    /// Not a control message of this version.
    #[error("malformed control message: {0}")]
    Malformed(String),
    /// A stream key that is not `app/name` with allowed characters.
    #[error("bad stream key {key:?}: {why}")]
    StreamKey {
        /// The key, as sent (cut to 64 characters).
        key: String,
        /// What is wrong with it.
        why: String,
    },
    /// A frame shorter than its header, or with an unknown track.
    #[error("bad media frame: {0}")]
    Media(&'static str),
}

impl Control {
    /// The message's wire form: the version byte, then postcard.
    pub fn encode(&self) -> Bytes {
        // Serializing this type into a Vec cannot fail (no maps, no I/O); were it to, the bare version byte
        // that remains is refused by the peer as malformed rather than misread.
        Bytes::from(postcard::to_extend(self, vec![VERSION]).unwrap_or_else(|_| vec![VERSION]))
    }

    /// Parses and checks a control message from a peer.
    pub fn decode(bytes: &[u8]) -> Result<Control, WireError> {
        if bytes.is_empty() || bytes.len() > MAX_CONTROL_BYTES {
            return Err(WireError::Size(bytes.len()));
        }
        let (&version, rest) = bytes.split_first().ok_or(WireError::Size(0))?;
        if version != VERSION {
            return Err(WireError::Version(version));
        }
        let (msg, trailing) =
            postcard::take_from_bytes::<Control>(rest).map_err(|e| WireError::Malformed(e.to_string()))?;
        if !trailing.is_empty() {
            return Err(WireError::Malformed(format!(
                "{} bytes after the message",
                trailing.len()
            )));
        }
        msg.check()?;
        Ok(msg)
    }

    /// Checks what a peer cannot be trusted with: stream keys.
    fn check(&self) -> Result<(), WireError> {
        let key = match self {
            Control::Open { key, .. }
            | Control::Pull { key }
            | Control::Unpull { key }
            | Control::NotFound { key }
            | Control::Ban { key, .. } => key,
            Control::Hello { .. } | Control::Close { .. } => return Ok(()),
        };
        StreamKey::parse(key)
            .map(|_| ())
            .map_err(|e| WireError::StreamKey {
                key: key.chars().take(64).collect(),
                why: e.to_string(),
            })
    }
}

/// What precedes a carried frame's body: the parts of a frame the transport does not carry itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaHeader {
    /// Audio, video or data.
    pub track: Track,
    /// Decode timestamp, ms.
    pub dts_ms: u64,
    /// Presentation timestamp, ms.
    pub pts_ms: u64,
}

impl MediaHeader {
    fn track_code(track: Track) -> u8 {
        match track {
            Track::Audio => 0,
            Track::Video => 1,
            Track::Data => 2,
        }
    }

    /// The frame's payload on the link: this header, then `body` (one copy, made once per frame and shared by
    /// every link that carries it).
    pub fn encode_with(&self, body: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(MEDIA_HEADER_BYTES + body.len());
        out.put_u8(Self::track_code(self.track));
        out.put_u64(self.dts_ms);
        out.put_u64(self.pts_ms);
        out.put_slice(body);
        out.freeze()
    }

    /// Splits a carried frame's payload into its header and its body (a slice of the same buffer, no copy).
    pub fn decode(payload: &Bytes) -> Result<(MediaHeader, Bytes), WireError> {
        let head = payload
            .get(..MEDIA_HEADER_BYTES)
            .ok_or(WireError::Media("shorter than its header"))?;
        let track = match head[0] {
            0 => Track::Audio,
            1 => Track::Video,
            2 => Track::Data,
            _ => return Err(WireError::Media("unknown track")),
        };
        let u64_at = |at: usize| {
            head.get(at..at + 8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .ok_or(WireError::Media("shorter than its header"))
        };
        let header = MediaHeader {
            track,
            dts_ms: u64_at(1)?,
            pts_ms: u64_at(9)?,
        };
        Ok((header, payload.slice(MEDIA_HEADER_BYTES..)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_messages() -> Vec<Control> {
        vec![
            Control::Hello {
                node: "pop-jkt-1".into(),
                bans_through: vec![("pop-jkt-1".into(), 42), ("pop-mnl-2".into(), 3)],
            },
            Control::Open {
                stream: 7,
                key: "live/sale".into(),
                origin: "pop-jkt-1".into(),
                hops: 1,
            },
            Control::Close {
                stream: 7,
                reason: CloseReason::Forbidden,
            },
            Control::Pull {
                key: "live/sale".into(),
            },
            Control::Unpull {
                key: "live/sale".into(),
            },
            Control::NotFound {
                key: "live/none".into(),
            },
            Control::Ban {
                origin: "pop-jkt-1".into(),
                seq: 9,
                key: "live/bad".into(),
                until_unix_ms: Some(1_800_000_000_000),
                reason: "unlawful".into(),
                by: "ops".into(),
            },
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for m in all_messages() {
            let wire = m.encode();
            assert_eq!(wire[0], VERSION);
            assert_eq!(Control::decode(&wire).unwrap(), m);
        }
    }

    #[test]
    fn hostile_bytes_are_refused_with_a_reason() {
        assert_eq!(Control::decode(&[]), Err(WireError::Size(0)));
        assert!(matches!(
            Control::decode(&vec![1u8; MAX_CONTROL_BYTES + 1]),
            Err(WireError::Size(_))
        ));
        assert_eq!(Control::decode(&[9, 0]), Err(WireError::Version(9)));
        assert!(matches!(
            Control::decode(&[VERSION, 200]),
            Err(WireError::Malformed(_))
        ));
        // A string length far past the input.
        assert!(matches!(
            Control::decode(&[VERSION, 3, 0xff, 0xff, 0x03]),
            Err(WireError::Malformed(_))
        ));
        let mut extra = Control::Pull { key: "live/a".into() }.encode().to_vec();
        extra.push(0);
        assert!(matches!(Control::decode(&extra), Err(WireError::Malformed(_))));
        let bad_key = Control::Pull {
            key: "../../etc/passwd".into(),
        }
        .encode();
        assert!(matches!(
            Control::decode(&bad_key),
            Err(WireError::StreamKey { .. })
        ));
        // Every truncation of every message is an error, never a panic.
        for m in all_messages() {
            let wire = m.encode();
            for cut in 0..wire.len() {
                assert!(Control::decode(&wire[..cut]).is_err(), "{m:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn a_media_frame_splits_without_a_copy() {
        let h = MediaHeader {
            track: Track::Video,
            dts_ms: 1_000,
            pts_ms: 1_066,
        };
        let wire = h.encode_with(b"nal units");
        let (back, body) = MediaHeader::decode(&wire).unwrap();
        assert_eq!(back, h);
        assert_eq!(&body[..], b"nal units");
        assert_eq!(
            body.as_ptr(),
            wire[MEDIA_HEADER_BYTES..].as_ptr(),
            "the body is a slice of the payload"
        );
        assert!(MediaHeader::decode(&wire.slice(..MEDIA_HEADER_BYTES - 1)).is_err());
        let mut unknown = wire.to_vec();
        unknown[0] = 3;
        assert_eq!(
            MediaHeader::decode(&Bytes::from(unknown)),
            Err(WireError::Media("unknown track"))
        );
        let empty = MediaHeader::decode(&h.encode_with(b"")).unwrap().1;
        assert!(empty.is_empty());
    }
}
