//! The publisher's stamp (send time and frame number), carried inside each H.264 frame as an SEI NAL unit of
//! type `user_data_unregistered`.
//!
//! Layout of the NAL unit ([`SEI_NAL_LEN`] = 44 bytes): `0x06` (nal_unit_type 6, SEI), `0x05` (payload type
//! 5, user_data_unregistered), `0x28` (payload size 40), the 16-byte [`UUID`], the send time as 16 ASCII hex
//! digits (microseconds on [`super::clock`]), the frame number as 8 ASCII hex digits, `0x80` (rbsp trailing
//! bits). ASCII hex never holds a zero byte, so the unit needs no emulation-prevention bytes and stays a valid
//! NAL unit for any decoder that sees it.
//!
//! Players look for [`UUID`] in the first bytes of each video message instead of walking NAL lengths, so the
//! reader does not depend on the stream's NALU length size.

/// Identifies our SEI payload (random, with no zero byte).
pub const UUID: [u8; 16] = [
    0x70, 0x6f, 0x70, 0x6c, 0x69, 0x6e, 0x65, 0x2d, 0xb3, 0x9e, 0x41, 0xc7, 0x8a, 0x5d, 0x26, 0xf1,
];

/// Bytes of the SEI NAL unit, without its length prefix.
pub const SEI_NAL_LEN: usize = 3 + 16 + 16 + 8 + 1;

/// How far into a video message a player must look to read a stamp: the 5-byte FLV AVC header, a 4-byte
/// NALU length and the NAL unit's 3-byte header come first.
pub const SEARCH_PREFIX_BYTES: usize = 5 + 4 + 3 + 16 + 16 + 8;

/// What the publisher stamps on each video frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// When the publisher wrote the frame to its socket, in microseconds on [`super::clock`].
    pub send_us: u64,
    /// The frame's number in the publisher's video sequence (sequence headers are not counted).
    pub seq: u32,
}

/// Appends the SEI NAL unit carrying `stamp` to `out`.
pub fn write_sei_nal(out: &mut Vec<u8>, stamp: Stamp) {
    out.extend_from_slice(&[0x06, 0x05, 0x28]);
    out.extend_from_slice(&UUID);
    out.extend_from_slice(format!("{:016x}{:08x}", stamp.send_us, stamp.seq).as_bytes());
    out.push(0x80);
}

/// Finds the stamp in the first bytes of a video message, if the publisher put one there.
pub fn find_stamp(prefix: &[u8]) -> Option<Stamp> {
    let at = prefix.windows(UUID.len()).position(|w| w == UUID)? + UUID.len();
    let digits = prefix.get(at..at + 24)?;
    let text = std::str::from_utf8(digits).ok()?;
    let send_us = u64::from_str_radix(text.get(..16)?, 16).ok()?;
    let seq = u32::from_str_radix(text.get(16..)?, 16).ok()?;
    Some(Stamp { send_us, seq })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips_through_an_avc_frame() {
        for (send_us, seq) in [
            (0, 0),
            (1, 7),
            (0x1234_5678_9abc, 0xdead_beef),
            (u64::MAX, u32::MAX),
        ] {
            let stamp = Stamp { send_us, seq };
            // An FLV AVC NALU packet: header, then length-prefixed NAL units (SEI first).
            let mut frame = vec![0x27, 0x01, 0, 0, 0];
            frame.extend_from_slice(&(SEI_NAL_LEN as u32).to_be_bytes());
            write_sei_nal(&mut frame, stamp);
            frame.extend_from_slice(&[0, 0, 0, 3, 0x41, 0xaa, 0xaa]);
            assert_eq!(frame.len(), 5 + 4 + SEI_NAL_LEN + 7);
            assert!(
                !frame[9..9 + SEI_NAL_LEN].contains(&0),
                "no emulation prevention needed"
            );
            assert_eq!(find_stamp(&frame[..SEARCH_PREFIX_BYTES]), Some(stamp));
        }
        assert_eq!(find_stamp(&[0x17, 0x01, 0, 0, 0, 0, 0, 0, 3, 0x65, 1, 2]), None);
        // A truncated prefix holds the UUID but not all the digits.
        let mut frame = vec![0x27, 0x01, 0, 0, 0, 0, 0, 0, 44];
        write_sei_nal(&mut frame, Stamp { send_us: 42, seq: 1 });
        assert_eq!(find_stamp(&frame[..40]), None);
    }
}
