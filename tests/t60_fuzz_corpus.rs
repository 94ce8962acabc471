//! The fuzz targets' corpora as ordinary tests: every seed and every kept crash input of
//! `fuzz/` runs through its target's body (`dotkv::fuzz`), so that a decoder that panics
//! on an input once found fails `just test` without nightly or libFuzzer.
//!
//! `cargo test --test t60_fuzz_corpus -- --ignored write_seed_corpora` writes the seeds
//! (`dotkv::fuzz::seeds`) into `fuzz/corpus/` after a format change.

use std::path::{Path, PathBuf};

use dotkv::fuzz::{TARGETS, seeds};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `dir` (none when it does not exist).
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_and_kept_crash_input_runs_cleanly() {
    for (name, body) in TARGETS {
        let corpus = inputs(&fuzz_dir().join("corpus").join(name));
        assert!(
            corpus.len() >= seeds(name).len(),
            "fuzz/corpus/{name} lacks its seeds: run write_seed_corpora"
        );
        // Crash inputs found by fuzzing, kept after the fix (`fuzz/regressions/NAME/`).
        let regressions = inputs(&fuzz_dir().join("regressions").join(name));
        for file in corpus.iter().chain(&regressions) {
            let data = std::fs::read(file).unwrap();
            let outcome = std::panic::catch_unwind(|| body(&data));
            assert!(outcome.is_ok(), "{name} panicked on {}", file.display());
        }
    }
}

#[test]
fn the_seeds_are_inputs_the_decoders_accept() {
    // A seed that decodes takes the fuzzer past the first check: each must.
    for input in seeds("rpc_frames") {
        let decoded = dotkv_rpc::fuzzing::server_input(&input, 1 << 20);
        assert!(
            decoded.hello && decoded.requests == decoded.frames,
            "{decoded:?}"
        );
    }
    assert!(
        seeds("rpc_frames")
            .iter()
            .any(|input| { dotkv_rpc::fuzzing::server_input(input, 1 << 20).requests >= 5 })
    );
    for input in seeds("context_token") {
        let text_ok = std::str::from_utf8(&input)
            .ok()
            .and_then(|t| t.parse::<dotkv::versioning::ContextToken>().ok())
            .is_some();
        assert!(text_ok || dotkv::versioning::ContextToken::decode_bytes(&input).is_ok());
    }
    for input in seeds("stored_object") {
        assert!(dotkv_replication::decode_object(&input, "seed").is_ok());
    }
    for input in seeds("gossip_message") {
        assert!(dotkv_rpc::fuzzing::gossip_message(&input).is_some());
    }
    for input in seeds("config") {
        let text = std::str::from_utf8(&input).unwrap();
        let parsed = ["default", "test"].map(|p| dotkv_bins::config::parse(text, p));
        assert!(parsed.iter().any(Result::is_ok), "{text}: {parsed:?}");
    }
    // And what they refuse, they refuse without allocating what a length claims.
    let mut huge = dotkv_rpc::fuzzing::seed_inputs()[0].clone();
    huge.extend_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(dotkv_rpc::fuzzing::server_input(&huge, 1 << 20).frames, 0);
}

#[test]
#[ignore = "writes fuzz/corpus/: run by hand after a format change"]
fn write_seed_corpora() {
    for (name, _) in TARGETS {
        let dir = fuzz_dir().join("corpus").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, seed) in seeds(name).iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), seed).unwrap();
        }
    }
}
