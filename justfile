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

# Start N local nodes (PROFILE: default = LMDB, sqlite, memory, test) on 127.0.0.1:7001..,
# data under .cluster/PROFILE/, logs in .cluster/; wait until every node sees all up.
cluster n="3" profile="default": build
    #!/usr/bin/env bash
    set -euo pipefail
    mkdir -p .cluster
    for i in $(seq 1 {{n}}); do
        pidfile=.cluster/n$i.pid
        if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
            echo "n$i is already running (pid $(cat "$pidfile"))"; continue
        fi
        seeds=()
        if [ "$i" -gt 1 ]; then seeds=(--seeds 127.0.0.1:7001); fi
        nohup target/debug/dotkv-server --profile {{profile}} --node-id "n$i" \
            --listen "127.0.0.1:$((7000 + i))" --data-dir ".cluster/{{profile}}/n$i" "${seeds[@]}" \
            > ".cluster/n$i.log" 2>&1 &
        echo $! > "$pidfile"
    done
    echo "waiting for {{n}} nodes to see each other up..."
    for attempt in $(seq 1 100); do
        ready=1
        for i in $(seq 1 {{n}}); do
            up=$(target/debug/dotkv --node "127.0.0.1:$((7000 + i))" --json status 2>/dev/null \
                | grep -o '"status":"up"' | wc -l) || up=0
            [ "$up" -eq {{n}} ] || ready=0
        done
        if [ "$ready" -eq 1 ]; then target/debug/dotkv status; exit 0; fi
        sleep 0.3
    done
    echo "the cluster did not come up in 30 s; see .cluster/n*.log" >&2
    exit 1

# Stop the nodes `just cluster` started (SIGTERM by PID, then wait for them to exit).
stop:
    #!/usr/bin/env bash
    set -uo pipefail
    for pidfile in .cluster/n*.pid; do
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        if kill -TERM "$pid" 2>/dev/null; then
            for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            echo "stopped $(basename "$pidfile" .pid) (pid $pid)"
        fi
        rm -f "$pidfile"
    done

# Run the client CLI, e.g. `just client status` or `just client --node 127.0.0.1:7002 ring`.
client *args: build
    @target/debug/dotkv {{args}}

# Criterion micro-benchmarks (release build). Reports land in target/criterion.
bench:
    cargo bench --workspace

# API docs for the workspace.
doc:
    cargo doc --workspace --no-deps
