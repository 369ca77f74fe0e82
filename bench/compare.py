"""vchat and the seed's Jina Flow side by side, on this machine, in one run.

Run through bench/compare.sh, which builds vchat and installs Jina first. For each
repeat, each system is started fresh (start-to-ready and idle RSS are taken), then
driven by the same `vchat bench` load generator (one thread): one user unthrottled,
then the sweep of users at 30 fps. Medians over the repeats go into a Markdown
table and an SVG plot, both written into BENCHMARKS.md between the `compare`
markers, and kept with the raw figures under target/bench/compare/.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "target/bench/compare"
VCHAT = ROOT / "target/release/vchat"
JINA_PY = ROOT / "target/jina-venv/bin/python"
BEGIN, END = "<!-- compare:begin -->", "<!-- compare:end -->"

# The seed's files, word for word (../shared/seeds/jina-video-chat.md).
SEED = ROOT / "tests/jina/seed"


def log(msg):
    print(f"compare: {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree(pid):
    """pid and all its descendants."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return pids


def rss_mb(pid):
    """Resident memory of the process tree, in MB (RSS summed over processes)."""
    total = 0
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def cpu_s(pid):
    """CPU seconds (user + system) used so far by the live processes of the tree."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError):
            pass
    return total / tick


def accepting(port):
    """Whether something accepts TCP connections on `port`."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def ready(port):
    """Whether the gateway on `port` answers dry_run with SUCCESS."""
    # A channel of its own each time (no shared subchannel and its reconnect
    # back-off): the probe must not add its own delays.
    options = [("grpc.use_local_subchannel_pool", 1)]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as ch:
        call = ch.unary_unary("/jina.JinaGatewayDryRunRPC/dry_run")
        try:
            status = call(b"", timeout=2)
        except grpc.RpcError:
            return False
        # StatusProto: field 1 (code) absent or 0 means SUCCESS.
        return status == b"" or status[:2] == b"\x08\x00"


class System:
    def __init__(self, name, workdir):
        self.name, self.workdir = name, workdir
        self.proc = None

    def command(self, port):
        raise NotImplementedError

    def start(self):
        """Starts the system; returns (seconds to ready, idle RSS in MB)."""
        self.port = free_port()
        cmd, env = self.command(self.port)
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd, cwd=self.workdir, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=open(self.workdir / "server.log", "ab"),
            start_new_session=True)
        # Start to ready: until the port accepts (polled every 0.5 ms), then until
        # dry_run answers SUCCESS.
        while not (accepting(self.port) and ready(self.port)):
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited: see {self.workdir / 'server.log'}")
            if time.perf_counter() - t0 > 120:
                raise SystemExit(f"{self.name} not ready after 120 s")
            time.sleep(0.0005)
        ready_s = time.perf_counter() - t0
        time.sleep(2)
        return ready_s, rss_mb(self.proc.pid)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


class Vchat(System):
    def __init__(self, workdir, flow):
        super().__init__("vchat", workdir)
        self.flow = flow

    def command(self, port):
        # `vchat bench` runs every user over one connection from one address:
        # lift the per-address and per-connection stream limits meant for peers.
        return [str(VCHAT), "flow", "--uses", str(self.flow), "--host", "127.0.0.1",
                "--port", str(port), "--max-streams-per-ip", "1024",
                "--max-concurrent-streams", "1024"], dict(os.environ)


class Jina(System):
    def __init__(self, workdir):
        super().__init__("jina", workdir)
        shutil.copytree(SEED / "executor", workdir / "executor", dirs_exist_ok=True)

    def command(self, port):
        # The seed's flow.yml, with the port chosen here.
        flow = (SEED / "flow.yml").read_text()
        (self.workdir / "flow.yml").write_text(
            flow.replace("jtype: Flow\n", f"jtype: Flow\nwith:\n  port: {port}\n", 1))
        env = dict(os.environ, JINA_LOG_LEVEL="ERROR", JINA_OPTOUT_TELEMETRY="1")
        return [str(JINA_PY), "-m", "jina", "flow", "--uses", "flow.yml"], env


def bench(system, args, extra):
    """One `vchat bench` run against `system`; the JSON report plus the server's
    CPU (% of one core) and peak RSS over the run."""
    cmd = [str(VCHAT), "--threads", "1", "bench", f"grpc://127.0.0.1:{system.port}",
           "--json", "--warmup", str(args.warmup), "--duration", str(args.duration)] + extra
    peak = [0.0]
    done = threading.Event()

    def sample():
        while not done.wait(0.2):
            peak[0] = max(peak[0], rss_mb(system.proc.pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    c0, t0 = cpu_s(system.proc.pid), time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    finally:
        done.set()
        sampler.join()
    cpu = (cpu_s(system.proc.pid) - c0) / (time.perf_counter() - t0) * 100
    if out.returncode != 0:
        log(f"{system.name} {' '.join(extra)}: bench failed: {out.stderr.strip()[-300:]}")
        return None
    r = json.loads(out.stdout)
    r.update(server_cpu=cpu, peak_rss=peak[0])
    return r


def held(r, fps):
    """A point is held when ≥ 99% of the frames due were answered within a p99 of
    50 ms."""
    if not r or r["target_rate"] <= 0:
        return False
    return r["answered"] >= 0.99 * fps * r["users"] * r["seconds"] and r["p99_ms"] <= 50


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def run(args):
    OUT.mkdir(parents=True, exist_ok=True)
    systems = {"vchat": Vchat(OUT / "vchat", ROOT / "flow.yml"), "jina": Jina(OUT / "jina")}
    (OUT / "vchat").mkdir(parents=True, exist_ok=True)
    points = [("1 unthrottled", ["--users", "1", "--fps", "0", "--window", "4"])]
    points += [(f"{u} x {args.fps:g} fps", ["--users", str(u), "--fps", str(args.fps)])
               for u in args.users]
    raw = {name: {"start": [], "points": {p: [] for p, _ in points}} for name in systems}
    for rep in range(args.repeats):
        for name in args.systems:
            system = systems[name]
            ready_s, idle = system.start()
            log(f"repeat {rep + 1}/{args.repeats}: {name} ready in {ready_s * 1e3:.0f} ms, "
                f"idle RSS {idle:.1f} MB")
            raw[name]["start"].append({"ready_ms": ready_s * 1e3, "idle_rss": idle})
            try:
                for label, extra in points:
                    r = bench(system, args, extra)
                    raw[name]["points"][label].append(r)
                    if r:
                        log(f"  {name} {label}: p50 {r['p50_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms, "
                            f"{r['rate']:.1f}/s, cpu {r['server_cpu']:.0f}%")
                    time.sleep(1)
            finally:
                system.stop()
    extras = run_extras(args)
    (OUT / "raw.json").write_text(json.dumps({"points": raw, "extras": extras}, indent=1))
    return summarize(args, raw, extras, [p for p, _ in points])


# vchat alone: what its Flow options add. (title, Flow, bench options, users).
EXTRAS = [
    ("vertical, mosaic_fps 30 (bench/vertical-tick.yml), raw 200x300 frames",
     "bench/vertical-tick.yml", [], "tick"),
    ("JPEG grid (bench/grid.yml: 480x640 canvas, mosaic_fps 30), textured 200x300 JPEG frames",
     "bench/grid.yml", ["--encoding", "jpeg", "--frames", "textured"], "grid"),
]


def run_extras(args):
    """The vchat-only sweeps, in one room each: {title: [reports]}."""
    out = {}
    for title, flow, extra, key in EXTRAS:
        users = getattr(args, key)
        if not users:
            continue
        system = Vchat(OUT / "vchat", ROOT / flow)
        out[title] = []
        for rep in range(args.repeats):
            system.start()
            try:
                for u in users:
                    r = bench(system, args, ["--users", str(u), "--fps", str(args.fps),
                                             "--room", f"room{u}"] + extra)
                    out[title].append(r)
                    if r:
                        log(f"  vchat {key} {u}: p50 {r['p50_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms, "
                            f"{r['rate']:.1f}/s of {r['target_rate']:.0f}")
                    time.sleep(1)
            finally:
                system.stop()
    return out


def summarize(args, raw, extras, labels):
    med = {}
    for name, data in raw.items():
        if not data["start"]:
            continue
        m = {"ready_ms": median([s["ready_ms"] for s in data["start"]]),
             "idle_rss": median([s["idle_rss"] for s in data["start"]]), "points": {}}
        for label in labels:
            runs = [r for r in data["points"][label] if r]
            if not runs:
                continue
            keys = ["p50_ms", "p99_ms", "rate", "target_rate", "server_cpu", "peak_rss",
                    "answered", "seconds"]
            p = {k: median([r[k] for r in runs]) for k in keys}
            p["users"] = runs[0]["users"]
            p["held"] = sum(held(r, args.fps) for r in runs) * 2 > len(runs)
            m["points"][label] = p
        med[name] = m
    md = table(args, med, labels, extras)
    svg = plot(args, med, labels)
    (OUT / "results.md").write_text(md)
    (ROOT / "bench/compare.svg").write_text(svg)
    bm = ROOT / "BENCHMARKS.md"
    text = bm.read_text()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + BEGIN + "\n" + md + "\n![vchat and Jina](bench/compare.svg)\n\n" + END + rest.split(END, 1)[1]
        bm.write_text(text)
        log("results written into BENCHMARKS.md and bench/compare.svg")
    else:
        log(f"BENCHMARKS.md has no {BEGIN} marker: results are in {OUT / 'results.md'}")
    print(md)


def fmt(v, spec):
    return "—" if v is None else format(v, spec)


def table(args, med, labels, extras):
    cpu = os.cpu_count()
    lines = [f"Medians of {args.repeats} runs, {args.duration:g} s each after {args.warmup:g} s of "
             f"warm-up, 200x300 raw frames, vertical mosaic; the load generator (`vchat bench`, "
             f"one thread) on the same {cpu}-core machine. Ratios are Jina / vchat.", ""]
    lines.append("| load | vchat p50 / p99 ms | Jina p50 / p99 ms | vchat responses/s | "
                 "Jina responses/s | vchat CPU | Jina CPU | p50 ratio | rate ratio |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    v, j = med.get("vchat", {}), med.get("jina", {})
    for label in labels:
        a, b = v.get("points", {}).get(label), j.get("points", {}).get(label)
        def cell(p, k, spec):
            return fmt(p and p[k], spec)
        def lat(p):
            if not p:
                return "—"
            mark = "" if p["target_rate"] == 0 or p["held"] else " (not held)"
            return f"{p['p50_ms']:.3f} / {p['p99_ms']:.3f}{mark}"
        def rate(p):
            if not p:
                return "—"
            target = f" of {p['target_rate']:.0f}" if p["target_rate"] else ""
            return f"{p['rate']:.1f}{target}"
        p50r = fmt(b["p50_ms"] / a["p50_ms"], ".1f") + "×" if a and b else "—"
        rater = fmt(a["rate"] / b["rate"], ".1f") + "×" if a and b and b["rate"] else "—"
        lines.append(f"| {label} | {lat(a)} | {lat(b)} | {rate(a)} | {rate(b)} | "
                     f"{cell(a, 'server_cpu', '.0f')}% | {cell(b, 'server_cpu', '.0f')}% | "
                     f"{p50r} | {rater} |")
    def held_max(m):
        users = [p["users"] for l, p in m.get("points", {}).items() if p["target_rate"] and p["held"]]
        return max(users) if users else 0
    lines += ["", "| figure | vchat | Jina | ratio |", "|---|---|---|---|"]
    if v and j:
        lines.append(f"| start to ready (dry_run answers) | {v['ready_ms']:.0f} ms | "
                     f"{j['ready_ms']:.0f} ms | {j['ready_ms'] / v['ready_ms']:.0f}× |")
        lines.append(f"| idle RSS (process tree) | {v['idle_rss']:.1f} MB | {j['idle_rss']:.1f} MB | "
                     f"{j['idle_rss'] / v['idle_rss']:.0f}× |")
        at3 = f"3 x {args.fps:g} fps"
        if at3 in v["points"] and at3 in j["points"]:
            a3, b3 = v["points"][at3]["peak_rss"], j["points"][at3]["peak_rss"]
            lines.append(f"| peak RSS at {at3} | {a3:.1f} MB | {b3:.1f} MB | {b3 / max(a3, 1e-9):.0f}× |")
        peak = lambda m: max((p["peak_rss"] for p in m["points"].values()), default=0)
        lines.append(f"| peak RSS over the sweep (overloaded points queue mosaics) | {peak(v):.1f} MB | "
                     f"{peak(j):.1f} MB | {peak(j) / max(peak(v), 1e-9):.0f}× |")
        lines.append(f"| users held at {args.fps:g} fps (≥ 99% answered, p99 ≤ 50 ms) | "
                     f"{held_max(v)} | {held_max(j)} | |")
    for title, runs in extras.items():
        lines += ["", f"vchat alone, {title}, one room:", "",
                  "| users x fps | p50 / p99 ms | responses/s | answered | held | bytes per response |",
                  "|---|---|---|---|---|---|"]
        by_users = {}
        for r in runs:
            if r:
                by_users.setdefault(r["users"], []).append(r)
        for u, rs in sorted(by_users.items()):
            m = {k: median([r[k] for r in rs]) for k in ["p50_ms", "p99_ms", "rate", "target_rate"]}
            share = median([r["answered"] / max(r["target_rate"] * r["seconds"], 1) for r in rs])
            size = median([r["bytes_in"] / max(r["answered"], 1) for r in rs])
            ok = "yes" if sum(held(r, args.fps) for r in rs) * 2 > len(rs) else "no"
            lines.append(f"| {u} x {args.fps:g} | {m['p50_ms']:.3f} / {m['p99_ms']:.3f} | "
                         f"{m['rate']:.1f} of {m['target_rate']:.0f} | {share * 100:.1f}% | {ok} | "
                         f"{size / 1e3:.1f} KB |")
    return "\n".join(lines) + "\n"


def plot(args, med, labels):
    """Two panels: p50 and p99 latency (log scale) and responses per second,
    against users at the sweep's frame rate, for both systems."""
    W, H, PAD = 900, 380, 60
    pw = (W - 3 * PAD) / 2
    colours = {"vchat": "#1f77b4", "jina": "#d62728"}
    series = {}
    for name, m in med.items():
        pts = [p for l, p in m["points"].items() if p["target_rate"]]
        series[name] = sorted(pts, key=lambda p: p["users"])
    users = sorted({p["users"] for s in series.values() for p in s}) or [1]
    xmax = max(users)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'font-family="sans-serif" font-size="12">', f'<rect width="{W}" height="{H}" fill="white"/>']

    def panel(x0, title, ylabel, value, ylog, ymax):
        y0, ph = 40, H - 40 - PAD
        out.append(f'<text x="{x0 + pw / 2}" y="24" text-anchor="middle" font-size="14">{title}</text>')
        out.append(f'<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>')
        import math
        lo = 0.1 if ylog else 0
        def ty(v):
            if ylog:
                v = max(v, lo)
                return y0 + ph - (math.log10(v) - math.log10(lo)) / (math.log10(ymax) - math.log10(lo)) * ph
            return y0 + ph - v / ymax * ph
        def tx(u):
            return x0 + u / xmax * pw
        if ylog:
            ticks = [10 ** e for e in range(-1, int(math.log10(ymax)) + 1)]
        else:
            # A round step: 1, 2 or 5 times a power of ten, about 5 ticks.
            raw = ymax / 5
            base = 10 ** math.floor(math.log10(raw))
            step = next(m * base for m in (1, 2, 5, 10) if m * base >= raw)
            ticks = [step * i for i in range(int(ymax // step) + 1)]
        for t in ticks:
            out.append(f'<line x1="{x0}" x2="{x0 + pw}" y1="{ty(t):.1f}" y2="{ty(t):.1f}" stroke="#ddd"/>')
            out.append(f'<text x="{x0 - 4}" y="{ty(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
        for u in users:
            out.append(f'<text x="{tx(u):.1f}" y="{y0 + ph + 16}" text-anchor="middle">{u}</text>')
        out.append(f'<text x="{x0 + pw / 2}" y="{y0 + ph + 34}" text-anchor="middle">users at '
                   f'{args.fps:g} fps</text>')
        out.append(f'<text x="{x0 - 44}" y="{y0 + ph / 2}" text-anchor="middle" '
                   f'transform="rotate(-90 {x0 - 44} {y0 + ph / 2})">{ylabel}</text>')
        return tx, ty

    lat_max = max([p["p99_ms"] for s in series.values() for p in s] + [1]) * 2
    tx, ty = panel(PAD, "latency: p50 (solid), p99 (dashed)", "ms (log)", None, True, lat_max)
    for name, pts in series.items():
        for key, dash in (("p50_ms", ""), ("p99_ms", ' stroke-dasharray="5,4"')):
            d = " ".join(f"{tx(p['users']):.1f},{ty(p[key]):.1f}" for p in pts)
            out.append(f'<polyline points="{d}" fill="none" stroke="{colours[name]}" stroke-width="2"{dash}/>')
            for p in pts:
                out.append(f'<circle cx="{tx(p["users"]):.1f}" cy="{ty(p[key]):.1f}" r="3" fill="{colours[name]}"/>')
    rate_max = max([p["target_rate"] for s in series.values() for p in s] + [1]) * 1.1
    tx, ty = panel(2 * PAD + pw, "responses per second", "responses/s", None, False, rate_max)
    d = " ".join(f"{tx(u):.1f},{ty(u * args.fps):.1f}" for u in users)
    out.append(f'<polyline points="{d}" fill="none" stroke="#999" stroke-dasharray="2,3"/>')
    for name, pts in series.items():
        d = " ".join(f"{tx(p['users']):.1f},{ty(p['rate']):.1f}" for p in pts)
        out.append(f'<polyline points="{d}" fill="none" stroke="{colours[name]}" stroke-width="2"/>')
        for p in pts:
            out.append(f'<circle cx="{tx(p["users"]):.1f}" cy="{ty(p["rate"]):.1f}" r="3" fill="{colours[name]}"/>')
    lx = 2 * PAD + pw + 10
    for i, name in enumerate(list(series) + ["target"]):
        colour = colours.get(name, "#999")
        out.append(f'<line x1="{lx}" x2="{lx + 20}" y1="{52 + i * 16}" y2="{52 + i * 16}" stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{lx + 26}" y="{56 + i * 16}">{name}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", default="1,3,5,10,20,30", help="users of the sweep, comma-separated")
    ap.add_argument("--fps", type=float, default=30, help="frames per second per user in the sweep")
    ap.add_argument("--duration", type=float, default=10, help="seconds measured per point")
    ap.add_argument("--warmup", type=float, default=1, help="seconds of warm-up per point")
    ap.add_argument("--repeats", type=int, default=3, help="fresh starts of each system")
    ap.add_argument("--systems", default="vchat,jina", help="which systems: vchat,jina")
    ap.add_argument("--tick", default="15,20,25",
                    help="users of the vchat sweep with mosaic_fps (bench/vertical-tick.yml); "
                         "empty for none")
    ap.add_argument("--grid", default="25,50,100",
                    help="users of the vchat JPEG-grid sweep (bench/grid.yml); empty for none")
    ap.add_argument("--extras-only", action="store_true",
                    help="run only the vchat-only sweeps, keeping the side-by-side figures "
                         "of the last run (target/bench/compare/raw.json)")
    ap.add_argument("--summarize", action="store_true",
                    help="only rebuild the table and plot from target/bench/compare/raw.json")
    args = ap.parse_args()
    args.users = [int(u) for u in args.users.split(",") if u]
    args.grid = [int(u) for u in args.grid.split(",") if u]
    args.tick = [int(u) for u in args.tick.split(",") if u]
    args.systems = [s for s in args.systems.split(",") if s]
    labels = ["1 unthrottled"] + [f"{u} x {args.fps:g} fps" for u in args.users]
    if args.summarize or args.extras_only:
        data = json.loads((OUT / "raw.json").read_text())
        extras = data.get("extras", {})
        if args.extras_only:
            extras = run_extras(args)
            data["extras"] = extras
            (OUT / "raw.json").write_text(json.dumps(data, indent=1))
        return summarize(args, data["points"], extras, labels)
    run(args)


if __name__ == "__main__":
    main()
