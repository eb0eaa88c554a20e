#!/usr/bin/env python3
"""Markdown tables and an SVG chart from wschat-bench CSV rows.

    bench_report.py tables results.csv          # markdown on stdout
    bench_report.py svg results.csv chart.svg   # delivered frames/s and p99
                                                # against offered rate

Python 3 standard library only. The CSV is what `wschat-bench --csv` appends
(one fixed column set for every mode; see src/bin/wschat-bench/report.rs).
"""
import csv
import math
import sys


def load(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def num(row, col):
    try:
        return float(row.get(col, ""))
    except ValueError:
        return None


def fmt(v, digits=0):
    if v is None:
        return "n/a"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def cell(row, col, digits=0, suffix=""):
    v = num(row, col)
    return "n/a" if v is None else fmt(v, digits) + suffix


def cpu(row):
    """'server / generator' CPU, percent of one core."""
    return f'{cell(row, "server_cpu_pct")} / {cell(row, "bench_cpu_pct")}'


def waited(row):
    """'server / generator' percent of the time spent waiting for a CPU."""
    if not row.get("server_wait_pct") and not row.get("bench_wait_pct"):
        return "n/a"
    return f'{cell(row, "server_wait_pct")} / {cell(row, "bench_wait_pct")}'


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def labels_in(rows):
    seen = []
    for r in rows:
        if r["label"] not in seen:
            seen.append(r["label"])
    return seen


def tables(rows):
    parts = []
    fan = [r for r in rows if r["mode"] == "fanout" and r["phase"] == "run"]
    if fan:
        parts.append("### Fan-out at fixed rates\n")
        parts.append(table(
            ["server", "clients", "senders", "offered msg/s", "delivered frames/s", "delivered %",
             "gaps / reorders", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "disconnects",
             "CPU % server / gen.", "waited % server / gen.", "verdict"],
            [[r["label"], r["clients"], r["senders"], cell(r, "offered_mps"), cell(r, "delivered_fps"),
              cell(r, "delivery_pct", 3), f'{r["gaps"]} / {r["reorders"]}', cell(r, "p50_ms", 2),
              cell(r, "p99_ms", 2), cell(r, "p999_ms", 2), cell(r, "max_ms", 1), r["disconnects"],
              cpu(r), waited(r),
              r["verdict"] + (f' ({r["bottleneck"]})' if r["bottleneck"] else "")] for r in fan]))
    ramp = [r for r in rows if r["mode"] == "fanout" and r["phase"] == "ramp-result"]
    if ramp:
        parts.append("\n### Highest sustained rate (ramp)\n")
        parts.append("Sustained: at least 99.9 % delivered, p99 at most 100 ms, no disconnects.\n")
        parts.append(table(
            ["server", "clients", "senders", "max sustained msg/s", "delivered frames/s there", "result"],
            [[r["label"], r["clients"], r["senders"], cell(r, "rate"), cell(r, "delivered_fps"), r["verdict"]]
             for r in ramp]))
        steps = [r for r in rows if r["mode"] == "fanout" and r["phase"] == "ramp"]
        if steps:
            parts.append("\nRamp steps:\n")
            parts.append(table(
                ["server", "clients", "offered msg/s", "delivered frames/s", "delivered %", "p99 ms",
                 "disconnects", "CPU % server / gen.", "waited % server / gen.", "verdict"],
                [[r["label"], r["clients"], cell(r, "rate"), cell(r, "delivered_fps"), cell(r, "delivery_pct", 3),
                  cell(r, "p99_ms", 2), r["disconnects"], cpu(r), waited(r),
                  r["verdict"]] for r in steps]))
    conn = [r for r in rows if r["mode"] == "connect" and r["phase"] == "run"]
    if conn:
        parts.append("\n### Idle connections\n")
        parts.append(table(
            ["server", "connections", "in flight", "open", "failed", "handshakes/s", "handshake p50 ms", "p99 ms",
             "server RSS before KiB", "after KiB", "KiB per connection", "CPU % server / gen.", "notes"],
            [[r["label"], r["clients"], r["in_flight"], r["conn_ok"], r["conn_failed"], cell(r, "handshakes_per_s"),
              cell(r, "p50_ms", 2), cell(r, "p99_ms", 2), cell(r, "rss_before_kib"), cell(r, "rss_after_kib"),
              cell(r, "rss_per_conn_kib", 2), cpu(r), r["bottleneck"]] for r in conn]))
    echo = [r for r in rows if r["mode"] == "echo" and r["phase"] == "run"]
    if echo:
        parts.append("\n### Echo round trips\n")
        parts.append(table(
            ["server", "connections", "in flight each", "round trips/s", "p50 ms", "p99 ms", "p99.9 ms",
             "max ms", "CPU % server / gen.", "waited % server / gen.", "notes"],
            [[r["label"], r["clients"], r["in_flight"], cell(r, "round_trips_per_s"), cell(r, "p50_ms", 3),
              cell(r, "p99_ms", 3), cell(r, "p999_ms", 3), cell(r, "max_ms", 2), cpu(r), waited(r),
              r["bottleneck"]] for r in echo]))
    errs = [r for r in rows if r["phase"] == "error"]
    if errs:
        parts.append("\n### Failed runs\n")
        parts.append(table(["server", "mode", "clients", "error"],
                           [[r["label"], r["mode"], r["clients"], r["verdict"]] for r in errs]))
    labels = labels_in(rows)
    if len(labels) >= 2:
        parts.append("\n" + ratios(rows, labels[0], labels[1]))
    return "\n".join(parts) + "\n"


def ratios(rows, a, b):
    """wschat (a) against the peer (b), case by case: a / b."""
    def last(pred):
        found = [r for r in rows if pred(r)]
        return found[-1] if found else None

    def ratio(x, y):
        if x is None or y is None or y == 0:
            return "n/a"
        return f"{x / y:.2f}x"

    out = []
    for r in rows:
        if r["label"] != a:
            continue
        same = lambda o: (o["label"] == b and o["mode"] == r["mode"] and o["phase"] == r["phase"]
                          and o["clients"] == r["clients"] and o["senders"] == r["senders"]
                          and o.get("in_flight", "") == r.get("in_flight", "")
                          and (r["phase"] != "run" or r["mode"] != "fanout" or o["rate"] == r["rate"]))
        if r["phase"] not in ("run", "ramp-result"):
            continue
        o = last(same)
        if o is None:
            continue
        def rel(col):
            return ratio(num(r, col), num(o, col))

        if r["mode"] == "fanout" and r["phase"] == "run":
            out.append([f'fan-out {r["clients"]} clients at {cell(r, "rate")} msg/s',
                        f'delivered frames/s {rel("delivered_fps")}',
                        f'p99 latency {rel("p99_ms")}',
                        f'server CPU {rel("server_cpu_pct")}'])
        elif r["mode"] == "fanout":
            out.append([f'ramp {r["clients"]} clients', f'max sustained rate {rel("rate")}', "", ""])
        elif r["mode"] == "connect":
            out.append([f'connect {r["clients"]} ({r.get("in_flight", "?")} in flight)',
                        f'handshakes/s {rel("handshakes_per_s")}',
                        f'RSS per connection {rel("rss_per_conn_kib")}',
                        f'server CPU {rel("server_cpu_pct")}'])
        elif r["mode"] == "echo":
            out.append([f'echo {r["clients"]} connections x {r.get("in_flight", "?")} in flight',
                        f'round trips/s {rel("round_trips_per_s")}',
                        f'p99 latency {rel("p99_ms")}',
                        f'server CPU {rel("server_cpu_pct")}'])
    if not out:
        return ""
    head = (f"### {a} / {b}\n\nEach figure is {a}'s divided by {b}'s in the same case: above 1 is better "
            "for throughput and rates, below 1 is better for latency, memory and CPU.\n")
    return head + "\n" + table(["case", "throughput", "latency / memory", "CPU"], out)


# ---------------------------------------------------------------- SVG chart

COLORS = {"wschat": "#1f77b4", "node-ws": "#ff7f0e", "vs": "#2ca02c"}
EXTRA = ["#d62728", "#9467bd", "#8c564b"]


def log_ticks(lo, hi):
    ticks = []
    e = math.floor(math.log10(lo))
    while 10 ** e <= hi * 1.0001:
        for m in (1, 2, 5):
            v = m * 10 ** e
            if lo * 0.9999 <= v <= hi * 1.0001:
                ticks.append(v)
        e += 1
    return ticks


def short(v):
    for unit, div in (("M", 1e6), ("k", 1e3)):
        if v >= div:
            s = f"{v / div:g}"
            return s + unit
    return f"{v:g}"


def panel(x0, y0, w, h, title, xlabel, ylabel, series, ykey, hline=None):
    pts = [(x, y) for s in series for (x, y) in s["pts"] if y is not None and y > 0]
    if not pts:
        return [f'<text x="{x0 + w / 2}" y="{y0 + h / 2}" text-anchor="middle">no data</text>']
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts] + ([hline[0]] if hline else [])
    xlo, xhi = 10 ** math.floor(math.log10(min(xs))), 10 ** math.ceil(math.log10(max(xs)))
    ylo, yhi = 10 ** math.floor(math.log10(min(ys))), 10 ** math.ceil(math.log10(max(ys)))
    if xlo == xhi:
        xhi *= 10
    if ylo == yhi:
        yhi *= 10

    def px(x):
        return x0 + (math.log10(x) - math.log10(xlo)) / (math.log10(xhi) - math.log10(xlo)) * w

    def py(y):
        return y0 + h - (math.log10(y) - math.log10(ylo)) / (math.log10(yhi) - math.log10(ylo)) * h

    el = [f'<text x="{x0 + w / 2}" y="{y0 - 12}" text-anchor="middle" font-weight="bold">{title}</text>',
          f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#888"/>']
    for t in log_ticks(xlo, xhi):
        X = px(t)
        el.append(f'<line x1="{X:.1f}" y1="{y0}" x2="{X:.1f}" y2="{y0 + h}" stroke="#eee"/>')
        el.append(f'<text x="{X:.1f}" y="{y0 + h + 16}" text-anchor="middle" font-size="11">{short(t)}</text>')
    for t in log_ticks(ylo, yhi):
        Y = py(t)
        el.append(f'<line x1="{x0}" y1="{Y:.1f}" x2="{x0 + w}" y2="{Y:.1f}" stroke="#eee"/>')
        el.append(f'<text x="{x0 - 6}" y="{Y + 4:.1f}" text-anchor="end" font-size="11">{short(t)}</text>')
    el.append(f'<text x="{x0 + w / 2}" y="{y0 + h + 36}" text-anchor="middle" font-size="12">{xlabel}</text>')
    el.append(f'<text transform="translate({x0 - 52},{y0 + h / 2}) rotate(-90)" text-anchor="middle" '
              f'font-size="12">{ylabel}</text>')
    if hline:
        Y = py(hline[0])
        el.append(f'<line x1="{x0}" y1="{Y:.1f}" x2="{x0 + w}" y2="{Y:.1f}" stroke="#c00" stroke-dasharray="6 4"/>')
        el.append(f'<text x="{x0 + w - 4}" y="{Y - 4:.1f}" text-anchor="end" font-size="11" fill="#c00">'
                  f'{hline[1]}</text>')
    for s in series:
        keep = [i for i, (x, y) in enumerate(s["pts"]) if y is not None and y > 0]
        p = [s["pts"][i] for i in keep]
        s = dict(s, ok=[s["ok"][i] for i in keep])
        if not p:
            continue
        d = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in p)
        dash = ' stroke-dasharray="5 3"' if s["dashed"] else ""
        el.append(f'<polyline points="{d}" fill="none" stroke="{s["color"]}" stroke-width="2"{dash}/>')
        for (x, y), ok in zip(p, s["ok"]):
            fill = s["color"] if ok else "white"
            el.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{fill}" stroke="{s["color"]}"/>')
    return el


def svg(rows, out_path):
    fan = [r for r in rows if r["mode"] == "fanout" and r["phase"] in ("run", "ramp") and num(r, "rate")]
    groups = {}
    for r in fan:
        groups.setdefault((r["label"], int(r["clients"])), []).append(r)
    series_fps, series_p99 = [], []
    extra = iter(EXTRA)
    color_of = {}
    client_counts = sorted({c for (_, c) in groups})
    for (label, clients), rs in sorted(groups.items()):
        if label not in color_of:
            color_of[label] = COLORS.get(label) or next(extra, "#333")
        by_rate = {}
        for r in rs:  # the last row at a rate wins
            by_rate[num(r, "rate")] = r
        rates = sorted(by_rate)
        name = f"{label}, {clients} clients"
        dashed = clients != client_counts[0]
        ok = [by_rate[x]["verdict"].startswith("sustained") for x in rates]
        series_fps.append({"name": name, "color": color_of[label], "dashed": dashed, "ok": ok,
                           "pts": [(x, num(by_rate[x], "delivered_fps")) for x in rates]})
        series_p99.append({"name": name, "color": color_of[label], "dashed": dashed, "ok": ok,
                           "pts": [(x, num(by_rate[x], "p99_ms")) for x in rates]})
    W, H = 980, 480
    el = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
          'font-family="sans-serif" font-size="13">', f'<rect width="{W}" height="{H}" fill="white"/>']
    el += panel(90, 40, 360, 300, "Delivered frames/s", "offered chat messages/s", "frames/s",
                series_fps, "delivered_fps")
    el += panel(590, 40, 360, 300, "p99 latency", "offered chat messages/s", "ms", series_p99, "p99_ms",
                hline=(100, "100 ms limit"))
    ly = 400
    for i, s in enumerate(series_fps):
        lx = 90 + (i % 3) * 300
        y = ly + (i // 3) * 22
        dash = ' stroke-dasharray="5 3"' if s["dashed"] else ""
        el.append(f'<line x1="{lx}" y1="{y}" x2="{lx + 30}" y2="{y}" stroke="{s["color"]}" stroke-width="2"{dash}/>')
        el.append(f'<text x="{lx + 38}" y="{y + 4}">{s["name"]}</text>')
    y = ly + ((len(series_fps) + 2) // 3) * 22 + 4
    el.append(f'<text x="90" y="{y}" font-size="12" fill="#555">Filled points: sustained (at least 99.9 % '
              f'delivered, p99 at most 100 ms, no disconnects); hollow: not. Both axes logarithmic.</text>')
    el.append("</svg>")
    with open(out_path, "w") as f:
        f.write("\n".join(el) + "\n")


def main(argv):
    if len(argv) >= 2 and argv[0] == "tables":
        sys.stdout.write(tables(load(argv[1])))
        return 0
    if len(argv) >= 3 and argv[0] == "svg":
        svg(load(argv[1]), argv[2])
        return 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
