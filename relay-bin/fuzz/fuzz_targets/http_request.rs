//! `cargo fuzz run http_request`: any bytes, cut into reads as the input says, through the HTTP egress
//! request reader (`relay::egress::http::RequestReader`) of a kept-alive connection. It must never panic,
//! must answer each request once (a request or an error) and then wait for that answer, read no more than
//! its request limit, and never hold more than its bound.
//!
//! Input: byte 0 picks how the rest is cut into reads, byte 1 the head bound (1 KiB to 64 KiB) and the
//! request limit (1 to 8).
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay::egress::http::RequestReader;

/// Read sizes the input picks from (the last: whatever is left).
const READ_SIZES: [usize; 6] = [1, 3, 17, 512, 1500, usize::MAX];

fuzz_target!(|data: &[u8]| run(data));

fn run(data: &[u8]) {
    let [cut, bound, stream @ ..] = data else { return };
    let max = 1_024 + usize::from(*bound) * 253;
    let max_requests = u32::from(*bound % 8) + 1;
    let mut reader = RequestReader::new(max, max_requests);
    let mut rest: &[u8] = stream;
    let mut answers = 0u32;
    let mut reads = 0usize;
    let mut open = true;
    while open && !rest.is_empty() {
        let size = READ_SIZES[(usize::from(*cut) >> (reads % 3)) % READ_SIZES.len()].min(rest.len());
        reads += 1;
        let (read, after) = rest.split_at(size);
        rest = after;
        let mut input = read;
        // Each request read is answered at once; what followed it is read next, with no new bytes.
        loop {
            let outcome = reader.feed(input);
            input = &[];
            match outcome {
                Ok(None) => break,
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
            assert!(reader.is_waiting(), "a request read waits for its answer");
            assert!(reader.feed(b"GET / HTTP/1.1\r\n\r\n").ok().flatten().is_none(), "nothing more while it waits");
            assert!(answers <= max_requests, "at most the request limit");
            if !reader.answered() {
                open = false;
                break;
            }
        }
    }
}
