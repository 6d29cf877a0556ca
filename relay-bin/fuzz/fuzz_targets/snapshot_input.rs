//! `cargo fuzz run snapshot_input`: what a snapshot reads from peers and disks, from any bytes. Byte 0's low
//! bit picks the target: the keyframe-to-access-unit conversion (`relay::snapshot::Keyframe::annex_b`, the
//! rest cut into sequence header and keyframe at byte 1's share), or a recording's keyframe search
//! (`relay::snapshot::recorded::keyframe_in`, the rest as the FLV file, byte 1 as the time in seconds). It
//! must never panic, and an access unit never exceeds its inputs plus the start codes.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use relay::snapshot::recorded::keyframe_in;
use relay::snapshot::Keyframe;

fuzz_target!(|data: &[u8]| run(data));

fn run(data: &[u8]) {
    let [pick, param, rest @ ..] = data else { return };
    if pick & 1 == 0 {
        let cut = rest.len() * usize::from(*param) / 255;
        let (header, body) = rest.split_at(cut);
        let keyframe = Keyframe {
            header: Bytes::copy_from_slice(header),
            body: Bytes::copy_from_slice(body),
            dts_ms: 0,
            pts_ms: 0,
        };
        if let Ok(unit) = keyframe.annex_b() {
            // Each NAL unit gains a 4-byte start code for a prefix of at least 1 byte, or for a 2-byte
            // parameter-set length.
            assert!(unit.data.len() <= 4 * rest.len());
            assert!(unit.width > 0 && unit.height > 0);
        }
    } else if let Ok(keyframe) = keyframe_in(std::io::Cursor::new(rest), u64::from(*param) * 1_000) {
        assert!(keyframe.body.len() <= rest.len());
    }
}
