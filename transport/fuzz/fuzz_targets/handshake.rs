//! `cargo fuzz run handshake`: see `transport::fuzzing::handshake`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    transport::fuzzing::handshake(data);
});
