//! `cargo fuzz run http_request`: any bytes, cut into reads as the input says, through the HTTP egress
//! request reader (`relay::egress::http::RequestReader`). It must never panic, must answer at most once
//! (a request or an error), stay done after it, and never hold more than its bound.
//!
//! Input: byte 0 picks how the rest is cut into reads, byte 1 the head bound (1 KiB to 64 KiB).
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay::egress::http::RequestReader;

/// Read sizes the input picks from (the last: whatever is left).
const READ_SIZES: [usize; 6] = [1, 3, 17, 512, 1500, usize::MAX];

fuzz_target!(|data: &[u8]| run(data));

fn run(data: &[u8]) {
    let [cut, bound, stream @ ..] = data else { return };
    let max = 1_024 + usize::from(*bound) * 253;
    let mut reader = RequestReader::new(max);
    let mut rest: &[u8] = stream;
    let mut answers = 0;
    let mut reads = 0usize;
    while !rest.is_empty() {
        let size = READ_SIZES[(usize::from(*cut) >> (reads % 3)) % READ_SIZES.len()].min(rest.len());
        reads += 1;
        let (read, after) = rest.split_at(size);
        rest = after;
        match reader.feed(read) {
            Ok(None) => {}
            Ok(Some(request)) => {
                answers += 1;
                assert!(request.target.chars().count() <= 256);
            }
            Err(error) => {
                answers += 1;
                let (status, _) = error.status();
                assert!((400..500).contains(&status));
            }
        }
    }
    assert!(answers <= 1, "a reader answers once");
}
