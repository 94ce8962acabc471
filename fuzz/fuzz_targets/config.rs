//! `cargo +nightly fuzz run config`: see `dotkv::fuzz::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dotkv::fuzz::config(data));
