//! `cargo +nightly fuzz run gossip_message`: see `dotkv::fuzz::gossip_message`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dotkv::fuzz::gossip_message(data));
