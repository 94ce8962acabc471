//! `cargo +nightly fuzz run context_token`: see `dotkv::fuzz::context_token`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dotkv::fuzz::context_token(data));
