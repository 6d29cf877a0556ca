//! `cargo fuzz run packet_decoder`: see `transport::fuzzing::packet_decoder`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    transport::fuzzing::packet_decoder(data);
});
