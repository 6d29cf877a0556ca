//! `cargo fuzz run handshake_response`: see `transport::fuzzing::handshake_response`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    transport::fuzzing::handshake_response(data);
});
