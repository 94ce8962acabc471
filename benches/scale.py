"""The scale curve of `just bench-scale`.

    scale.py point POINTS REPORT BACKEND RSS       append one point (a `dotkv bench --json`
                                                  report, the backend, the servers' RSS as
                                                  "total/anonymous" KiB, comma separated)
    scale.py plot POINTS SVG                      draw the curve, print a Markdown table

No plotting library: the SVG is written by hand, so that the recipe needs only Python.
"""
import json
import math
import sys


def point(points, report_path, backend, rss):
    with open(report_path) as f:
        r = json.load(f)
    entry = {
        "backend": backend,
        "workload": r["workload"],
        "keys": r["keys"],
        "value_size": r["value_size"],
        "throughput": round(r["throughput"], 1),
        "p50_ms": r["latency_ms"]["p50"],
        "p99_ms": r["latency_ms"]["p99"],
        "errors": r["errors"],
        # "total/anon" KiB per server (older points: total only).
        "rss_mib": [round(int(k.split("/")[0]) / 1024, 1) for k in rss.split(",") if k],
        "rss_anon_mib": [
            round(int(k.split("/")[1]) / 1024, 1) for k in rss.split(",") if "/" in k
        ],
    }
    with open(points, "a") as f:
        f.write(json.dumps(entry) + "\n")


def human(n):
    for unit, size in (("M", 1 << 20), ("K", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}i"
    return str(n)


def count(n):
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd"]


def panel(x0, title, xlabel, series, xfmt):
    """One log-x panel, 360 x 260 at x0; series: [(label, [(x, y, p99)])]."""
    w, h, left, top = 360, 220, 60, 40
    xs = [x for _, pts in series for x, _, _ in pts]
    ys = [y for _, pts in series for _, y, _ in pts]
    if not xs:
        return ""
    lx = [math.log10(x) for x in xs]
    lo, hi = min(lx), max(lx)
    if hi == lo:
        lo, hi = lo - 1, hi + 1
    ymax = max(ys) * 1.15
    fx = lambda x: x0 + left + (math.log10(x) - lo) / (hi - lo) * (w - left - 20)
    fy = lambda y: top + h - y / ymax * h
    out = [
        f'<text x="{x0 + left}" y="20" font-size="14" font-weight="bold">{title}</text>',
        f'<line x1="{x0 + left}" y1="{top + h}" x2="{x0 + w}" y2="{top + h}" stroke="#333"/>',
        f'<line x1="{x0 + left}" y1="{top}" x2="{x0 + left}" y2="{top + h}" stroke="#333"/>',
        f'<text x="{x0 + left + 100}" y="{top + h + 34}" font-size="12">{xlabel}</text>',
        f'<text x="{x0 + 4}" y="{top - 8}" font-size="11">ops/s</text>',
    ]
    for i in range(5):
        y = ymax * i / 4
        out.append(f'<text x="{x0 + 4}" y="{fy(y) + 4:.0f}" font-size="10">{y:,.0f}</text>')
        out.append(
            f'<line x1="{x0 + left}" y1="{fy(y):.0f}" x2="{x0 + w}" y2="{fy(y):.0f}" '
            'stroke="#ddd"/>'
        )
    for x in sorted(set(xs)):
        out.append(
            f'<text x="{fx(x) - 12:.0f}" y="{top + h + 16}" font-size="10">{xfmt(x)}</text>'
        )
    for k, (label, pts) in enumerate(series):
        color = COLORS[k % len(COLORS)]
        pts = sorted(pts)
        path = " ".join(f"{fx(x):.1f},{fy(y):.1f}" for x, y, _ in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        for x, y, p99 in pts:
            out.append(f'<circle cx="{fx(x):.1f}" cy="{fy(y):.1f}" r="3" fill="{color}"/>')
            out.append(
                f'<text x="{fx(x) + 4:.0f}" y="{fy(y) - 5:.0f}" font-size="9" fill="{color}">'
                f"p99 {p99:.1f}</text>"
            )
        out.append(
            f'<text x="{x0 + w - 90}" y="{top + 12 + 14 * k}" font-size="11" fill="{color}">'
            f"{label}</text>"
        )
    return "\n".join(out)


def plot(points_path, svg_path):
    with open(points_path) as f:
        points = [json.loads(line) for line in f if line.strip()]
    keyed = {}
    sized = []
    for p in points:
        if p["workload"] in ("a", "c"):
            label = f'{p["backend"]} {p["workload"]}'
            keyed.setdefault(label, []).append((p["keys"], p["throughput"], p["p99_ms"]))
        elif p["workload"] == "w":
            sized.append((p["value_size"], p["throughput"], p["p99_ms"]))
    svg = [
        '<svg xmlns="http://www.w3.org/2000/svg" width="760" height="310" '
        'font-family="sans-serif">',
        '<rect width="100%" height="100%" fill="white"/>',
        panel(0, "a and c by keys (1 KiB values)", "keys (log)", sorted(keyed.items()), count),
        panel(390, "w by value size (lmdb)", "value size (log)", [("lmdb w", sized)], human),
        "</svg>",
    ]
    with open(svg_path, "w") as f:
        f.write("\n".join(svg) + "\n")
    print(
        "| backend | workload | keys | value | ops/s | p50 ms | p99 ms "
        "| server RSS MiB (anonymous) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for p in points:
        anon = p.get("rss_anon_mib") or [None] * len(p["rss_mib"])
        rss = " / ".join(
            f"{r:.0f}" + (f" ({a:.0f})" if a is not None else "")
            for r, a in zip(p["rss_mib"], anon)
        )
        print(
            f'| {p["backend"]} | {p["workload"]} | {p["keys"]:,} | {human(p["value_size"])} B '
            f'| {p["throughput"]:,.0f} | {p["p50_ms"]:.2f} | {p["p99_ms"]:.2f} | {rss} |'
        )


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "point":
        point(*sys.argv[2:])
    elif len(sys.argv) == 4 and sys.argv[1] == "plot":
        plot(*sys.argv[2:])
    else:
        sys.exit(__doc__)
