//! `cargo +nightly fuzz run stored_object`: see `dotkv::fuzz::stored_object`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dotkv::fuzz::stored_object(data));
