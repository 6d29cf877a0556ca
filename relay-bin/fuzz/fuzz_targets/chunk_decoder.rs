//! `cargo fuzz run chunk_decoder`: any bytes, cut into reads as the input says, through
//! `relay::rtmp::chunk::ChunkDecoder` with interleaving on (the mode the fanout bench's players use; the
//! guard runs it with interleaving off, which `rtmp_input` covers) and with aborts mixed in. The decoder
//! must never panic, must stop at its first error and stay failed, and what it hands out as payload must be
//! bytes of the input.
//!
//! Input: byte 0 picks how the rest is cut into reads, byte 1 which chunk stream (if any) is aborted after
//! each message end, the rest is the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay::rtmp::chunk::{ChunkDecoder, ChunkEvent, ChunkLimits};

/// Read sizes the input picks from (the last: whatever is left).
const READ_SIZES: [usize; 8] = [1, 2, 3, 7, 16, 128, 1500, usize::MAX];

fuzz_target!(|data: &[u8]| run(data));

fn run(data: &[u8]) {
    let [cut, abort, stream @ ..] = data else { return };
    let mut rest: &[u8] = stream;
    let mut decoder = ChunkDecoder::new(ChunkLimits::default());
    let mut reads = 0usize;
    let mut payload = 0usize;
    let total = rest.len();
    while !rest.is_empty() {
        let size = READ_SIZES[(usize::from(*cut) >> (reads % 3)) % READ_SIZES.len()].min(rest.len());
        reads += 1;
        let (mut read, after) = rest.split_at(size);
        rest = after;
        loop {
            match decoder.next_event(&mut read) {
                Ok(Some(ChunkEvent::Payload { bytes, .. })) => payload += bytes.len(),
                Ok(Some(ChunkEvent::MessageEnd(_))) => {
                    if *abort != 0 {
                        decoder.abort(u32::from(*abort));
                    }
                }
                Ok(Some(ChunkEvent::Chunk(_))) => {}
                Ok(None) => break,
                Err(first) => {
                    // Sticky: the same error, whatever comes next.
                    let mut more: &[u8] = &[0xc3, 0, 0, 0];
                    assert_eq!(decoder.next_event(&mut more).err(), Some(first));
                    return;
                }
            }
        }
        assert!(read.is_empty(), "the decoder left bytes of a read unconsumed without an error");
    }
    assert!(payload <= total, "more payload handed out than input given");
}
