//! `cargo fuzz run connection`: see `transport::fuzzing::connection`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    transport::fuzzing::connection(data);
});
