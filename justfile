# dotkv tasks. `just --list` shows them all.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Local clusters run with TLS (security.tls, on in the default profile): one throwaway CA
# and one node certificate in .cluster/certs (`just certs`), given to every local node
# and, as --ca, to the client.
tls_env := "export DOTKV_SECURITY__CA=.cluster/certs/ca.pem DOTKV_SECURITY__CERT=.cluster/certs/local.pem DOTKV_SECURITY__KEY=.cluster/certs/local.key DOTKV_CA=.cluster/certs/ca.pem"

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

# The nemesis and checker (tests/t50_chaos.rs) for SECONDS with SEED: 5 servers in
# network namespaces (3 zones, a router), clients recording a history, faults chosen from
# the seed, then the checker; the report is printed and kept in target/chaos/.
chaos seconds="90" seed="8":
    DOTKV_CHAOS_SECONDS={{seconds}} DOTKV_CHAOS_SEED={{seed}} cargo test -p dotkv --test t50_chaos -- --nocapture

# Fuzz TARGET (rpc_frames, context_token, stored_object, gossip_message, config) for
# SECONDS with libFuzzer (needs nightly and `cargo install cargo-fuzz`). Runs from the
# committed seeds (fuzz/corpus/TARGET); what it finds lands in fuzz/target/corpus/TARGET,
# crash inputs in fuzz/artifacts/TARGET (keep them, fixed, in fuzz/regressions/TARGET).
fuzz target seconds="180":
    cd fuzz && mkdir -p target/corpus/{{target}} && cargo +nightly fuzz run {{target}} target/corpus/{{target}} corpus/{{target}} -- -max_total_time={{seconds}} -rss_limit_mb=2048 -print_final_stats=1

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

# Make the CA and the node certificate local clusters use, once: .cluster/certs/ca.pem,
# ca.key, local.pem, local.key (with BIN, the dotkv CLI: `dotkv cert`).
certs bin="target/debug/dotkv":
    @[ -f .cluster/certs/local.pem ] || {{bin}} cert --dir .cluster/certs local

# Start N local nodes (PROFILE: default = LMDB, sqlite, memory, test) on 127.0.0.1:7001..
# (HTTP gateways and /metrics on 127.0.0.1:8001..),
# data under .cluster/PROFILE/, logs in .cluster/; wait until every node sees all up.
cluster n="3" profile="default": build certs
    #!/usr/bin/env bash
    set -euo pipefail
    mkdir -p .cluster
    {{tls_env}}
    # The test profile has security.tls off: its clients talk plaintext.
    if [ "{{profile}}" = test ]; then unset DOTKV_CA; fi
    echo "DOTKV_CA=${DOTKV_CA:-}" > .cluster/client.env
    for i in $(seq 1 {{n}}); do
        pidfile=.cluster/n$i.pid
        if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
            echo "n$i is already running (pid $(cat "$pidfile"))"; continue
        fi
        seeds=()
        if [ "$i" -gt 1 ]; then seeds=(--seeds 127.0.0.1:7001); fi
        DOTKV_HTTP__LISTEN="127.0.0.1:$((8000 + i))" \
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
        if [ "$ready" -eq 1 ]; then
            target/debug/dotkv status
            if [ -n "${DOTKV_CA:-}" ]; then
                echo "TLS is on: use \`just client ARGS\`, or export DOTKV_CA=$DOTKV_CA for target/debug/dotkv"
            fi
            exit 0
        fi
        sleep 0.3
    done
    echo "the cluster did not come up in 30 s; see .cluster/n*.log" >&2
    exit 1

# Add one node to a running `just cluster` (the next free n<i> on 127.0.0.1:70<i>): it starts
# alone, then `dotkv join --wait` shows its partitions arriving until the transition completes.
add profile="default": build certs
    #!/usr/bin/env bash
    set -euo pipefail
    mkdir -p .cluster
    {{tls_env}}
    if [ "{{profile}}" = test ]; then unset DOTKV_CA; fi
    i=1
    while [ -f ".cluster/n$i.pid" ] && kill -0 "$(cat ".cluster/n$i.pid")" 2>/dev/null; do i=$((i + 1)); done
    if [ "$i" -eq 1 ]; then echo "no cluster is running; start one with just cluster" >&2; exit 1; fi
    addr="127.0.0.1:$((7000 + i))"
    DOTKV_HTTP__LISTEN="127.0.0.1:$((8000 + i))" \
    nohup target/debug/dotkv-server --profile {{profile}} --node-id "n$i" --listen "$addr" \
        --data-dir ".cluster/{{profile}}/n$i" > ".cluster/n$i.log" 2>&1 &
    echo $! > ".cluster/n$i.pid"
    for attempt in $(seq 1 100); do
        target/debug/dotkv --node "$addr" status >/dev/null 2>&1 && break
        sleep 0.1
    done
    target/debug/dotkv --node "$addr" join 127.0.0.1:7001 --wait
    # The new node's own view: the others learn that it is up a gossip round later.
    target/debug/dotkv --node "$addr" status

# Make node n<N> of a `just cluster` leave: its partitions move to the others, then it exits.
leave n: build
    #!/usr/bin/env bash
    set -euo pipefail
    set -a; [ -f .cluster/client.env ] && . .cluster/client.env; set +a
    target/debug/dotkv --node "127.0.0.1:$((7000 + {{n}}))" leave --wait
    rm -f ".cluster/n{{n}}.pid"
    target/debug/dotkv status

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
    @set -a; [ -f .cluster/client.env ] && . .cluster/client.env; set +a; target/debug/dotkv {{args}}

# Point Prometheus at the running `just cluster`: writes .cluster/prometheus.yml (every
# node's /metrics on 127.0.0.1:8001.., over HTTPS with the cluster's CA when TLS is on) and runs `prometheus` on :9090 when it is installed
# (else says how); import config/grafana-dashboard.json into Grafana for the panels.
monitor:
    #!/usr/bin/env bash
    set -euo pipefail
    targets=()
    for pidfile in .cluster/n*.pid; do
        [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null || continue
        i=${pidfile#.cluster/n}; i=${i%.pid}
        targets+=("'127.0.0.1:$((8000 + i))'")
    done
    if [ "${#targets[@]}" -eq 0 ]; then echo "no cluster is running; start one with just cluster" >&2; exit 1; fi
    list=$(IFS=,; echo "${targets[*]}")
    printf 'global:\n  scrape_interval: 5s\nscrape_configs:\n  - job_name: dotkv\n    static_configs:\n      - targets: [%s]\n' "$list" > .cluster/prometheus.yml
    set -a; [ -f .cluster/client.env ] && . .cluster/client.env; set +a
    if [ -n "${DOTKV_CA:-}" ]; then
        # A TLS cluster serves /metrics over HTTPS with its CA's certificates.
        printf '    scheme: https\n    tls_config:\n      ca_file: %s\n' "$PWD/$DOTKV_CA" >> .cluster/prometheus.yml
    fi
    echo "wrote .cluster/prometheus.yml (targets: $list)"
    echo "Grafana: add the Prometheus data source http://127.0.0.1:9090, import config/grafana-dashboard.json"
    if command -v prometheus >/dev/null; then
        exec prometheus --config.file=.cluster/prometheus.yml --storage.tsdb.path=.cluster/prometheus
    fi
    echo "prometheus is not installed: run it with --config.file=.cluster/prometheus.yml"

# Every benchmark: the criterion micro-benchmarks, then the 3-node cluster benchmark.
bench: bench-micro bench-cluster

# Criterion micro-benchmarks (release build). Reports land in target/criterion.
bench-micro:
    cargo bench --workspace

# A 3-node cluster on 127.0.0.1:7101-7103 (release build, LMDB, storage.sync = true,
# N=3 R=2 W=2) driven by `dotkv bench`: 1 KiB values, 10 000 keys, 64 in flight,
# workloads ping, w, a, c for SECONDS each, THREADS runtime threads per server. JSON
# reports land in target/bench/. TLS: `on` (the default profile's mutual TLS) or `off`.
bench-cluster seconds="10" threads="0" tls="on":
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build --release -p dotkv-bins
    just certs target/release/dotkv
    {{tls_env}}
    mkdir -p target/bench
    data=$(mktemp -d target/bench/data.XXXXXX)
    pids=()
    cleanup() {
        for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
        for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
        rm -rf "$data"
    }
    trap cleanup EXIT
    nodes=127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103
    # Three servers and the client share the machine: THREADS runtime threads each (0: one
    # per core, the server's default).
    export DOTKV_SERVER__WORKER_THREADS={{threads}}
    if [ "{{tls}}" = off ]; then export DOTKV_SECURITY__TLS=false; unset DOTKV_CA; fi
    for i in 1 2 3; do
        seeds=()
        if [ "$i" -gt 1 ]; then seeds=(--seeds 127.0.0.1:7101); fi
        target/release/dotkv-server --profile default --node-id "b$i" --listen "127.0.0.1:710$i" \
            --data-dir "$data/b$i" "${seeds[@]}" > "target/bench/b$i.log" 2>&1 &
        pids+=($!)
    done
    for attempt in $(seq 1 100); do
        up=$(target/release/dotkv --node 127.0.0.1:7103 --json status 2>/dev/null \
            | grep -o '"status":"up"' | wc -l) || up=0
        [ "$up" -eq 3 ] && break
        sleep 0.3
    done
    echo "cluster: 3 nodes, LMDB, storage.sync = true, N=3 R=2 W=2; $(nproc) cores; server.worker_threads = {{threads}}; TLS {{tls}}"
    for workload in ping w a c; do
        extra=()
        if [ "$workload" = c ]; then extra=(--no-load); fi
        target/release/dotkv --json bench --nodes "$nodes" --workload "$workload" \
            --keys 10000 --value-size 1024 --concurrency 64 --duration {{seconds}} \
            --r 2 --w 2 "${extra[@]}" > "target/bench/cluster-$workload.json"
        python3 benches/summarize.py "target/bench/cluster-$workload.json"
        cp "target/bench/cluster-$workload.json" "target/bench/cluster-tls-{{tls}}-$workload.json"
    done

# The cost of TLS: `just bench-cluster` with security.tls off, then on, in one run so that
# the figures compare; reports in target/bench/cluster-tls-{off,on}-*.json.
bench-tls seconds="10":
    just bench-cluster {{seconds}} 0 off
    just bench-cluster {{seconds}} 0 on

# The scale curve: `a` then `c` with each of KEYS keys of 1 KiB (LMDB; SQLite for the first
# two counts), and `w` with each of SIZES value sizes (LMDB, 1 000 keys). A fresh 3-node
# release cluster on 127.0.0.1:7401-7403 per point (storage.sync = true, N=3 R=2 W=2, 64 in
# flight, SECONDS per workload; loads run 256 in flight); the servers' RSS after each run.
# Points land in target/bench/scale/points.jsonl, the plot in target/bench/scale/scale.svg
# (the README's copy of both: benches/results/).
bench-scale keys="10000 1000000 10000000" sizes="100 1024 65536 1048576" seconds="10":
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build --release -p dotkv-bins
    just certs target/release/dotkv
    {{tls_env}}
    out=target/bench/scale
    mkdir -p "$out"
    : > "$out/points.jsonl"
    pids=()
    data=""
    stop() {
        for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
        for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
        pids=()
        if [ -n "$data" ]; then rm -rf "$data"; fi
        data=""
    }
    trap stop EXIT
    start() {
        data=$(mktemp -d target/bench/scale-data.XXXXXX)
        for i in 1 2 3; do
            seeds=()
            if [ "$i" -gt 1 ]; then seeds=(--seeds 127.0.0.1:7401); fi
            target/release/dotkv-server --profile "$1" --node-id "s$i" --listen "127.0.0.1:740$i" \
                --data-dir "$data/s$i" "${seeds[@]}" > "$out/s$i.log" 2>&1 &
            pids+=($!)
        done
        for attempt in $(seq 1 100); do
            up=$(target/release/dotkv --node 127.0.0.1:7403 --json status 2>/dev/null \
                | grep -o '"status":"up"' | wc -l) || up=0
            [ "$up" -eq 3 ] && return 0
            sleep 0.3
        done
        echo "the cluster did not come up" >&2
        exit 1
    }
    run() {
        local backend=$1 name=$2; shift 2
        target/release/dotkv --json --timeout 30000 bench \
            --nodes 127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403 --concurrency 64 \
            --duration {{seconds}} --r 2 --w 2 --load-concurrency 256 "$@" > "$out/$name.json"
        # Each server's resident KiB, and of them the anonymous (heap) part: LMDB's memory
        # map makes the file's pages count as resident too.
        rss=$(for pid in "${pids[@]}"; do
            awk '/^VmRSS/ {t=$2} /^RssAnon/ {a=$2} END {print t "/" a}' "/proc/$pid/status"
        done | paste -sd, -)
        python3 benches/scale.py point "$out/points.jsonl" "$out/$name.json" "$backend" "$rss"
        echo "$backend $(python3 benches/summarize.py "$out/$name.json")  keys $2 value $4 B  RSS KiB $rss"
    }
    echo "3 nodes, storage.sync = true, N=3 R=2 W=2; $(nproc) cores"
    first_two=$(echo {{keys}} | cut -d' ' -f1-2)
    for backend in lmdb sqlite; do
        profile=default
        counts="{{keys}}"
        if [ "$backend" = sqlite ]; then profile=sqlite; counts=$first_two; fi
        for keys in $counts; do
            start "$profile"
            run "$backend" "$backend-a-$keys" --keys "$keys" --value-size 1024 --workload a
            run "$backend" "$backend-c-$keys" --keys "$keys" --value-size 1024 --workload c --no-load
            stop
        done
    done
    for size in {{sizes}}; do
        start default
        run lmdb "lmdb-w-$size" --keys 1000 --value-size "$size" --workload w
        stop
    done
    python3 benches/scale.py plot "$out/points.jsonl" "$out/scale.svg"
    echo "plot: $out/scale.svg"

# Elasticity under load: 3 release nodes on 127.0.0.1:7201-7203 (LMDB, storage.sync = true,
# N=3 R=2 W=2) loaded with KEYS keys of 1 KiB; `dotkv bench -w a` (64 in flight) before and
# while a 4th node joins (`dotkv join --wait`, timed); then the keys and bytes the joiner
# received against its ideal share (KEYS x 3 / 4). Reports land in target/bench/.
bench-join keys="100000" seconds="20":
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build --release -p dotkv-bins
    just certs target/release/dotkv
    {{tls_env}}
    mkdir -p target/bench
    data=$(mktemp -d target/bench/join.XXXXXX)
    pids=()
    cleanup() {
        for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
        for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
        rm -rf "$data"
    }
    trap cleanup EXIT
    start() {
        local i=$1; shift
        target/release/dotkv-server --profile default --node-id "j$i" --listen "127.0.0.1:720$i" \
            --data-dir "$data/j$i" "$@" > "target/bench/join-j$i.log" 2>&1 &
        pids+=($!)
    }
    start 1
    start 2 --seeds 127.0.0.1:7201
    start 3 --seeds 127.0.0.1:7201
    for attempt in $(seq 1 200); do
        up=$(target/release/dotkv --node 127.0.0.1:7201 --json status 2>/dev/null \
            | python3 -c 'import json,sys; s=json.load(sys.stdin); r=s.get("ring"); print(sum(n["status"]=="up" for n in s["nodes"]) if r and not r["pending"] else 0)') || up=0
        [ "$up" -eq 3 ] && break
        sleep 0.3
    done
    nodes=127.0.0.1:7201,127.0.0.1:7202,127.0.0.1:7203
    echo "cluster: 3 nodes, LMDB, storage.sync = true, N=3 R=2 W=2; $(nproc) cores; {{keys}} keys of 1 KiB"
    target/release/dotkv --json bench --nodes "$nodes" --workload a --keys {{keys}} --value-size 1024 \
        --concurrency 64 --duration {{seconds}} > target/bench/join-before.json
    python3 benches/summarize.py target/bench/join-before.json
    start 4
    sleep 1
    target/release/dotkv --json bench --nodes "$nodes" --workload a --keys {{keys}} --value-size 1024 \
        --concurrency 64 --duration {{seconds}} --no-load > target/bench/join-during.json &
    bench=$!
    began=$(date +%s.%N)
    target/release/dotkv --node 127.0.0.1:7204 join 127.0.0.1:7201 --wait
    ended=$(date +%s.%N)
    wait "$bench"
    python3 benches/summarize.py target/bench/join-during.json
    python3 - "$began" "$ended" {{keys}} target/bench/join-j4.log <<'PY'
    import re, sys
    began, ended, keys, log = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    moved_keys = moved_bytes = partitions = 0
    for line in open(log):
        if "partition transfer finished" in line:
            partitions += 1
            moved_keys += int(re.search(r"keys=(\d+)", line).group(1))
            moved_bytes += int(re.search(r"bytes=(\d+)", line).group(1))
    ideal = keys * 3 / 4
    print(f"join: {ended - began:.1f} s; {partitions} partition replicas, {moved_keys} keys "
          f"({moved_keys / ideal:.2f} x the ideal {ideal:.0f}), {moved_bytes / 2**20:.1f} MiB")
    PY

# Sloppy quorum: 5 release nodes on 127.0.0.1:7501-7505 (LMDB, storage.sync = true, N=3 R=2
# W=2); `dotkv bench -w w` (10 000 keys of 1 KiB, 64 in flight) with all 5 up, then with n4 and
# n5 killed (-9); then n4 and n5 restart and the time until every hint is delivered is printed.
bench-sloppy seconds="20":
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build --release -p dotkv-bins
    just certs target/release/dotkv
    {{tls_env}}
    mkdir -p target/bench
    data=$(mktemp -d target/bench/sloppy.XXXXXX)
    declare -A pids
    cleanup() {
        for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
        for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
        rm -rf "$data"
    }
    trap cleanup EXIT
    start() {
        local i=$1; shift
        target/release/dotkv-server --profile default --node-id "s$i" --listen "127.0.0.1:750$i" \
            --data-dir "$data/s$i" "$@" >> "target/bench/sloppy-s$i.log" 2>&1 &
        pids[$i]=$!
    }
    hints() {
        local total=0
        for i in "$@"; do
            n=$(target/release/dotkv --node "127.0.0.1:750$i" --json status 2>/dev/null \
                | python3 -c 'import json,sys; print(sum(h["keys"] for h in json.load(sys.stdin)["hints"]))') || n=0
            total=$((total + n))
        done
        echo "$total"
    }
    rm -f target/bench/sloppy-s*.log
    start 1
    for i in 2 3 4 5; do start $i --seeds 127.0.0.1:7501; done
    for attempt in $(seq 1 200); do
        up=$(target/release/dotkv --node 127.0.0.1:7501 --json status 2>/dev/null \
            | python3 -c 'import json,sys; s=json.load(sys.stdin); r=s.get("ring"); print(sum(n["status"]=="up" for n in s["nodes"]) if r and not r["pending"] else 0)') || up=0
        [ "$up" -eq 5 ] && break
        sleep 0.3
    done
    echo "cluster: 5 nodes, LMDB, storage.sync = true, N=3 R=2 W=2; $(nproc) cores"
    all=127.0.0.1:7501,127.0.0.1:7502,127.0.0.1:7503,127.0.0.1:7504,127.0.0.1:7505
    live=127.0.0.1:7501,127.0.0.1:7502,127.0.0.1:7503
    target/release/dotkv --json bench --nodes "$all" --workload w --keys 10000 --value-size 1024 \
        --concurrency 64 --duration {{seconds}} > target/bench/sloppy-healthy.json
    echo -n "5 up:     "; python3 benches/summarize.py target/bench/sloppy-healthy.json
    kill -9 "${pids[4]}" "${pids[5]}"; wait "${pids[4]}" "${pids[5]}" 2>/dev/null || true
    target/release/dotkv --json bench --nodes "$live" --workload w --keys 10000 --value-size 1024 \
        --concurrency 64 --duration {{seconds}} > target/bench/sloppy-two-down.json
    echo -n "2 killed: "; python3 benches/summarize.py target/bench/sloppy-two-down.json
    held=$(hints 1 2 3)
    began=$(date +%s.%N)
    start 4; start 5
    while [ "$(hints 1 2 3 4 5)" -gt 0 ]; do sleep 0.2; done
    ended=$(date +%s.%N)
    python3 -c 'import sys; print(f"hints: {sys.argv[1]} hinted keys delivered {float(sys.argv[3]) - float(sys.argv[2]):.1f} s after n4 and n5 were restarted")' "$held" "$began" "$ended"

# Anti-entropy figures (release build; nodes and client share the machine's cores):
# bench-aae-cost, then bench-aae-repair.
bench-aae: bench-aae-cost bench-aae-repair

# The write cost of keeping Merkle trees: `dotkv bench -w w` on 3 nodes with and without
# `aae.enabled`, alternating ROUNDS times, each run beside a `ping` of the same cluster.
bench-aae-cost rounds="3" seconds="10":
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build --release -p dotkv-bins
    just certs target/release/dotkv
    {{tls_env}}
    mkdir -p target/bench
    data=$(mktemp -d target/bench/aae.XXXXXX)
    declare -A pids
    cleanup() {
        for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
        for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
        rm -rf "$data"
    }
    trap cleanup EXIT
    start() {
        local i=$1; shift
        target/release/dotkv-server --node-id "a$i" --listen "127.0.0.1:760$i" \
            --data-dir "$data/a$i" "$@" >> "target/bench/aae-a$i.log" 2>&1 &
        pids[$i]=$!
    }
    stop_all() {
        for i in "${!pids[@]}"; do kill -TERM "${pids[$i]}" 2>/dev/null || true; wait "${pids[$i]}" 2>/dev/null || true; done
        pids=()
        rm -rf "$data"/*
    }
    settle() {
        for attempt in $(seq 1 300); do
            up=$(target/release/dotkv --node 127.0.0.1:7601 --json status 2>/dev/null \
                | python3 -c 'import json,sys; s=json.load(sys.stdin); r=s.get("ring"); print(sum(n["status"]=="up" for n in s["nodes"]) if r and not r["pending"] else 0)') || up=0
            [ "$up" -eq "$1" ] && return
            sleep 0.3
        done
        echo "the cluster did not settle" >&2; exit 1
    }
    rm -f target/bench/aae-a*.log
    echo "machine: $(nproc) cores; 3 nodes, LMDB, storage.sync = true, N=3 R=2 W=2, 1 KiB values, 10000 keys, 64 in flight, {{seconds}} s per workload"
    for round in $(seq 1 {{rounds}}); do
        for enabled in true false; do
            export DOTKV_AAE__ENABLED=$enabled
            start 1; start 2 --seeds 127.0.0.1:7601; start 3 --seeds 127.0.0.1:7601
            settle 3
            nodes=127.0.0.1:7601,127.0.0.1:7602,127.0.0.1:7603
            target/release/dotkv --json bench --nodes "$nodes" --workload ping --value-size 1024 \
                --concurrency 64 --duration 5 > "target/bench/aae-ping-$enabled-$round.json"
            target/release/dotkv --json bench --nodes "$nodes" --workload w --keys 10000 --value-size 1024 \
                --concurrency 64 --duration {{seconds}} > "target/bench/aae-w-$enabled-$round.json"
            echo -n "round $round, aae.enabled = $enabled: "; python3 benches/summarize.py "target/bench/aae-ping-$enabled-$round.json"
            echo -n "round $round, aae.enabled = $enabled: "; python3 benches/summarize.py "target/bench/aae-w-$enabled-$round.json"
            stop_all
        done
    done

# Repair: 2 nodes, N = 2, loaded with KEYS keys of 100 B; one is killed, DIFFER keys are
# written to the other alone, and the killed one restarts: its tree rebuild time, and the
# time and bytes to repair the keys.
bench-aae-repair keys="1000000" differ="100":
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build --release -p dotkv-bins
    just certs target/release/dotkv
    {{tls_env}}
    mkdir -p target/bench
    data=$(mktemp -d target/bench/aae.XXXXXX)
    declare -A pids
    cleanup() {
        for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
        for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
        rm -rf "$data"
    }
    trap cleanup EXIT
    start() {
        local i=$1; shift
        target/release/dotkv-server --node-id "a$i" --listen "127.0.0.1:760$i" \
            --data-dir "$data/a$i" "$@" >> "target/bench/aae-a$i.log" 2>&1 &
        pids[$i]=$!
    }
    stop_all() {
        for i in "${!pids[@]}"; do kill -TERM "${pids[$i]}" 2>/dev/null || true; wait "${pids[$i]}" 2>/dev/null || true; done
        pids=()
        rm -rf "$data"/*
    }
    settle() {
        for attempt in $(seq 1 300); do
            up=$(target/release/dotkv --node 127.0.0.1:7601 --json status 2>/dev/null \
                | python3 -c 'import json,sys; s=json.load(sys.stdin); r=s.get("ring"); print(sum(n["status"]=="up" for n in s["nodes"]) if r and not r["pending"] else 0)') || up=0
            [ "$up" -eq "$1" ] && return
            sleep 0.3
        done
        echo "the cluster did not settle" >&2; exit 1
    }
    rm -f target/bench/aae-a*.log
    # Profile test (no fsync), so that loading a million keys takes minutes, not more.
    export DOTKV_PROFILE=test DOTKV_REPLICATION__N=2 DOTKV_REPLICATION__R=1 DOTKV_REPLICATION__W=2 \
        DOTKV_AAE__INTERVAL_MS=1000 DOTKV_STORAGE__LMDB_MAP_SIZE_MB=16384
    start 1; start 2 --seeds 127.0.0.1:7601
    settle 2
    began=$(date +%s.%N)
    target/release/dotkv --json bench --nodes 127.0.0.1:7601,127.0.0.1:7602 --workload c \
        --keys {{keys}} --value-size 100 --concurrency 64 --ops 1 > /dev/null
    loaded=$(date +%s.%N)
    python3 -c 'import sys; print(f"repair: 2 nodes, N=2 W=2, LMDB without fsync, {sys.argv[1]} keys of 100 B loaded in {float(sys.argv[3]) - float(sys.argv[2]):.0f} s")' {{keys}} "$began" "$loaded"
    aae() {
        target/release/dotkv --node "127.0.0.1:760$1" --json aae 2>/dev/null \
            | python3 -c 'import json,sys; a=json.load(sys.stdin); print(a["keys_repaired"], sum(e["bytes"] for e in a["exchanges"] if e["keys_repaired"] > 0), a["trees_built"], a["partitions"])' || echo "0 0 0 1"
    }
    sleep 3
    read -r base _ _ _ <<< "$(aae 1)"
    kill -9 "${pids[2]}"; wait "${pids[2]}" 2>/dev/null || true
    for k in $(seq 1 {{differ}}); do
        target/release/dotkv --node 127.0.0.1:7601 put "aae-differ-$k" "value-$k" --w 1 > /dev/null
    done
    : > target/bench/aae-a2.log
    restarted=$(date +%s.%N)
    start 2
    while true; do
        read -r r1 b1 _ _ <<< "$(aae 1)"; read -r r2 b2 built parts <<< "$(aae 2)"
        [ $((r1 - base + r2)) -ge {{differ}} ] && break
        sleep 0.1
    done
    repaired=$(date +%s.%N)
    grep -o 'anti-entropy trees built.*' target/bench/aae-a2.log | head -1 || true
    python3 -c 'import sys; print(f"repair: {sys.argv[1]} keys repaired {float(sys.argv[4]) - float(sys.argv[3]):.1f} s after the restart (tree rebuild included); bytes of the exchanges that did it (hashes, key lists, objects): {sys.argv[2]}")' "$((r1 - base + r2))" "$((b1 + b2))" "$restarted" "$repaired"

# API docs for the workspace.
doc:
    cargo doc --workspace --no-deps
