#!/usr/bin/env python3
"""bench/curve.svg from a CSV of bench/curve.sh: the gateway's CPU, the egress
in bytes per second (against the loopback limit) and the share of frames
answered, each against users, for the raw vertical mosaics, the JPEG grid in
one room and the rooms of a few users. Medians over repeats. Standard library
only: the SVG is written by hand.

    python3 bench/plot_curve.py bench/results/curve-DATE.csv bench/curve.svg
"""
import csv
import math
import statistics
import sys
from collections import defaultdict

SERIES = [  # scenario, label, colour
    ("vertical", "raw vertical, composed per frame (flow.yml), one room", "#d62728"),
    ("grid", "JPEG grid 480x640 (bench/grid.yml), one room", "#1f77b4"),
    ("rooms", "JPEG grid (bench/grid.yml), many small rooms", "#2ca02c"),
]
W, PANEL_H = 900, 250
LEFT, RIGHT, TOP, BOTTOM = 80, 30, 40, 45
X_TICKS = [1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 300]


def fnum(s):
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


def load(path):
    rows = list(csv.DictReader(open(path, newline="")))
    groups = defaultdict(list)
    for r in rows:
        groups[(r["scenario"], int(r["users"]))].append(r)
    med = {}
    for key, rs in groups.items():
        m = {}
        for col in ("server_cpu_pct", "bench_cpu_pct", "egress_bytes_per_s", "answered_pct",
                    "p99_ms", "server_peak_rss_mb"):
            vals = [v for v in (fnum(r[col]) for r in rs) if v is not None]
            m[col] = statistics.median(vals) if vals else None
        # What the egress would be with every offered frame answered: the
        # response size times the offered rate (n users' mosaics to n users).
        sizes = [v for v in (fnum(r["bytes_per_response"]) for r in rs) if v]
        offered = fnum(rs[0]["offered_per_s"])
        m["offered_bytes_per_s"] = statistics.median(sizes) * offered if sizes and offered else None
        m["rooms"] = int(rs[0]["rooms"] or 1)
        med[key] = m
    loop = [fnum(r["loopback_bytes_per_s"]) for r in rows]
    loop = [v for v in loop if v]
    return med, (statistics.median(loop) if loop else None)


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Panel:
    def __init__(self, y0, title, ylabel, ymin, ymax, log_y):
        self.y0, self.title, self.ylabel = y0, title, ylabel
        self.ymin, self.ymax, self.log_y = ymin, ymax, log_y
        self.out = []

    def x(self, users):
        lo, hi = math.log10(1), math.log10(300)
        return LEFT + (math.log10(users) - lo) / (hi - lo) * (W - LEFT - RIGHT)

    def y(self, v):
        h = PANEL_H - TOP - BOTTOM
        if self.log_y:
            v = max(v, self.ymin)
            f = (math.log10(v) - math.log10(self.ymin)) / (math.log10(self.ymax) - math.log10(self.ymin))
        else:
            f = (v - self.ymin) / (self.ymax - self.ymin)
        f = min(max(f, 0.0), 1.0)
        return self.y0 + TOP + h * (1 - f)

    def frame(self, yticks, fmt):
        o = self.out
        top, bottom = self.y0 + TOP, self.y0 + PANEL_H - BOTTOM
        o.append(f'<text x="{LEFT}" y="{self.y0 + 24}" font-size="15" font-weight="bold">{esc(self.title)}</text>')
        for t in yticks:
            yy = self.y(t)
            o.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#e5e5e5"/>')
            o.append(f'<text x="{LEFT - 6}" y="{yy + 4:.1f}" font-size="11" text-anchor="end">{esc(fmt(t))}</text>')
        for t in X_TICKS:
            xx = self.x(t)
            o.append(f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{top}" y2="{bottom}" stroke="#f0f0f0"/>')
            o.append(f'<text x="{xx:.1f}" y="{bottom + 15}" font-size="11" text-anchor="middle">{t}</text>')
        o.append(f'<rect x="{LEFT}" y="{top}" width="{W - LEFT - RIGHT}" height="{bottom - top}" fill="none" stroke="#888"/>')
        o.append(f'<text x="{(LEFT + W - RIGHT) / 2}" y="{bottom + 32}" font-size="12" text-anchor="middle">users (log scale)</text>')
        o.append(f'<text transform="translate(18,{(top + bottom) / 2}) rotate(-90)" font-size="12" text-anchor="middle">{esc(self.ylabel)}</text>')

    def series(self, pts, colour, dashed=False, note=None, thin=False):
        pts = [(u, v) for u, v in pts if v is not None]
        if not pts:
            return
        if note:
            u, v = pts[-1]
            self.out.append(f'<text x="{self.x(u) + 7:.1f}" y="{self.y(v) - 6:.1f}" font-size="11" fill="{colour}">{esc(note)}</text>')
        path = " ".join(f"{self.x(u):.1f},{self.y(v):.1f}" for u, v in pts)
        dash = ' stroke-dasharray="5,4"' if dashed else ""
        if thin:
            dash = ' stroke-dasharray="2,3" stroke-opacity="0.7"'
        width = 1.5 if thin else 2
        self.out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="{width}"{dash}/>')
        if thin:
            return
        for u, v in pts:
            self.out.append(f'<circle cx="{self.x(u):.1f}" cy="{self.y(v):.1f}" r="3.5" fill="{colour}"><title>{u} users: {v:.4g}</title></circle>')

    def hline(self, v, colour, label):
        yy = self.y(v)
        self.out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="{colour}" stroke-width="1.5" stroke-dasharray="8,4"/>')
        self.out.append(f'<text x="{W - RIGHT - 6}" y="{yy - 5:.1f}" font-size="11" text-anchor="end" fill="{colour}">{esc(label)}</text>')


def human_bytes(v):
    for unit, f in (("GB/s", 1e9), ("MB/s", 1e6), ("kB/s", 1e3)):
        if v >= f:
            return f"{v / f:g} {unit}"
    return f"{v:g} B/s"


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: plot_curve.py CURVE.csv OUT.svg")
    med, loopback = load(sys.argv[1])

    def pts(scenario, col):
        return sorted((u, m[col]) for (s, u), m in med.items() if s == scenario)

    def note(scenario):
        if scenario != "rooms":
            return None
        return ", ".join(f"{m['rooms']} rooms x {u // max(m['rooms'], 1)}"
                         for (s, u), m in sorted(med.items()) if s == scenario) or None

    cpu_max = max([m[c] or 0 for m in med.values() for c in ("server_cpu_pct", "bench_cpu_pct")] + [100])
    cpu_max = math.ceil(cpu_max / 50) * 50
    panels = []
    p = Panel(60, "Gateway CPU (solid) and load generator CPU (dashed)", "% of one core", 0, cpu_max, False)
    p.frame(range(0, int(cpu_max) + 1, 50), lambda t: f"{t}%")
    for s, _, c in SERIES:
        p.series(pts(s, "server_cpu_pct"), c, note=note(s))
        p.series(pts(s, "bench_cpu_pct"), c, dashed=True)
    if cpu_max >= 200:
        p.hline(200, "#555", "2 cores")
    panels.append(p)

    egress = [m[c] for m in med.values() for c in ("egress_bytes_per_s", "offered_bytes_per_s") if m[c]]
    top = max(egress + [loopback or 0, 1e6])
    low = 10 ** math.floor(math.log10(min(egress + [1e6])))
    p = Panel(60 + PANEL_H, "Egress of the gateway, bytes of responses a second (dotted: had every frame been answered)", "bytes per second (log scale)",
              low, 10 ** math.ceil(math.log10(top * 1.5)), True)
    p.frame([10 ** k for k in range(int(math.log10(low)), int(math.log10(p.ymax)) + 1)], human_bytes)
    for s, _, c in SERIES:
        p.series(pts(s, "offered_bytes_per_s"), c, thin=True)
        p.series(pts(s, "egress_bytes_per_s"), c, note=note(s))
    if loopback:
        p.hline(loopback, "#555", f"loopback limit, one TCP connection: {loopback / 1e9:.2f} GB/s")
    panels.append(p)

    p = Panel(60 + 2 * PANEL_H, "Frames answered, % of offered (30 fps per user)", "% answered", 0, 105, False)
    p.frame([0, 25, 50, 75, 99], lambda t: f"{t}%")
    for s, _, c in SERIES:
        p.series(pts(s, "answered_pct"), c, note=note(s))
    panels.append(p)

    height = 60 + 3 * PANEL_H + 20 * len(SERIES) + 10
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" viewBox="0 0 {W} {height}" font-family="sans-serif">',
           f'<rect width="{W}" height="{height}" fill="white"/>',
           f'<text x="{LEFT}" y="28" font-size="18" font-weight="bold">vchat cost curve: gateway and load generator on the same cores, 30 fps per user</text>']
    for pnl in panels:
        svg.extend(pnl.out)
    for i, (_, label, c) in enumerate(SERIES):
        ly = 60 + 3 * PANEL_H + 20 * i
        svg.append(f'<line x1="{LEFT}" x2="{LEFT + 22}" y1="{ly}" y2="{ly}" stroke="{c}" stroke-width="3"/>')
        svg.append(f'<text x="{LEFT + 28}" y="{ly + 4}" font-size="12">{esc(label)}</text>')
    svg.append("</svg>")
    with open(sys.argv[2], "w") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
