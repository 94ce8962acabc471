# dotkv tasks. `just --list` shows them all.

set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# Build every crate and the binaries (debug).
build:
    cargo build --workspace --bins

# Run the whole test suite (what CI runs after fmt and lint).
test:
    cargo build --workspace --bins
    cargo test --workspace --no-fail-fast

# Run the storage conformance suite for one backend: lmdb, sqlite or memory.
test-storage backend:
    cargo test -p dotkv-storage --lib conformance::tests::{{backend}}

# Clippy on every target, warnings are errors.
lint:
    cargo clippy --workspace --all-targets --all-features -- -D warnings

# Format the code (mutating; `verify` only checks).
fmt:
    cargo fmt --all

# Read-only gate: formatting, lints, tests. CI runs this.
verify:
    cargo fmt --all -- --check
    just lint
    just test

# Criterion micro-benchmarks (release build). Reports land in target/criterion.
bench:
    cargo bench --workspace

# API docs for the workspace.
doc:
    cargo doc --workspace --no-deps
