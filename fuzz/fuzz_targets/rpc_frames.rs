//! `cargo +nightly fuzz run rpc_frames`: see `dotkv::fuzz::rpc_frames`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dotkv::fuzz::rpc_frames(data));
