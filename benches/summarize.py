"""One line per `dotkv bench --json` report: what `just bench-cluster` prints."""
import json
import sys

for path in sys.argv[1:]:
    with open(path) as f:
        r = json.load(f)
    lat = r["latency_ms"]
    print(
        f"{r['workload']:>5}: {r['throughput']:>9.0f} ops/s  p50 {lat['p50']:.2f} ms  "
        f"p99 {lat['p99']:.2f} ms  p99.9 {lat['p999']:.2f} ms  max {lat['max']:.2f} ms  "
        f"errors {r['errors'] or 'none'}"
    )
