//! `cargo fuzz run endpoint`: see `transport::fuzzing::endpoint`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    transport::fuzzing::endpoint(data);
});
