"""Run every benchmark workload for pyotp and every available peer, in one go, and write
the report.

    python -m bench.compare            # full sizes (under 15 minutes on a 2-core machine)
    python -m bench.compare --quick    # small sizes (under 2 minutes)
    python bench/compare.py --quick    # the same

It runs ``pytest bench`` with pytest-benchmark (``--benchmark-json``), then the Erlang/OTP
escript when ``escript`` is installed, and writes into ``bench/results/`` (or ``--out``):

- ``results.json``: pytest-benchmark's JSON; compare two runs with
  ``pytest-benchmark compare old.json new.json --group-by=group``;
- ``summary.json``: every figure (pyotp, peers, Erlang) with the machine and versions;
- ``results.md``: the tables of rates and of ratios pyotp / peer, targets, what is missing;
- ``results.png``: the bar chart (log scale, grouped by workload).

Without pytest-benchmark installed (or with ``--direct``) the same workload code is run
directly with the same warm-up and rounds.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

if __package__ in (None, ""):          # python bench/compare.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench import workloads as W  # noqa: E402

COLUMNS = ["pyotp", "pyotp-asyncio", "asyncio", "uvloop", "pykka", "thespian", "xoscar", "erlang"]
PEERS = ["asyncio", "uvloop", "pykka", "thespian", "xoscar", "erlang"]
LABELS = {
    "pyotp": "pyotp", "pyotp-asyncio": "pyotp (asyncio loop)", "asyncio": "asyncio actor",
    "uvloop": "uvloop actor", "pykka": "Pykka", "thespian": "Thespian", "xoscar": "xoscar",
    "erlang": "Erlang/OTP",
}


# -----------------------------------------------------------------------------------------
# Running

def _env() -> Dict[str, str]:
    env = dict(os.environ)
    parts = [str(W.ROOT), str(W.ROOT / "src")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(parts)
    return env


def run_pytest(mode: str, out: Path, extra: List[str]) -> Tuple[List[Dict[str, Any]], Optional[str]]:
    """Run the pytest-benchmark suite; return its records (extra_info) and an error."""
    jpath = out / "results.json"
    cmd = [sys.executable, "-m", "pytest", str(W.HERE), "-q", "-p", "no:cacheprovider",
           "--benchmark-group-by=group", "--benchmark-json=%s" % jpath,
           "--benchmark-columns=min,median,max,rounds", "--durations=10"] + extra
    if mode == "quick":
        cmd.append("--bench-quick")
    print("$ " + " ".join(cmd), flush=True)
    rc = subprocess.call(cmd, env=_env(), cwd=str(W.ROOT))
    if not jpath.exists():
        return [], "pytest exited %d and wrote no JSON" % rc
    return read_json(jpath), (None if rc == 0 else "pytest exited %d (a workload failed its check?)" % rc)


def read_json(jpath: Path) -> List[Dict[str, Any]]:
    """Records from a pytest-benchmark JSON: this suite's extra_info, plus the group and
    name for the behaviour benchmarks of the other bench/test_bench_*.py files."""
    data = json.loads(jpath.read_text())
    recs = []
    for b in data.get("benchmarks", []):
        info = dict(b.get("extra_info", {}))
        if "rate" not in info:
            continue
        info["group"] = b.get("group") or info.get("workload") or b["name"]
        if info["group"] not in W.WORKLOADS:
            info["workload"] = info["group"]
            info.setdefault("impl", b["name"])
            info["test"] = b["name"]
        info["min_s"] = b["stats"]["min"]
        info["rounds"] = b["stats"]["rounds"]
        recs.append(info)
    return recs


def run_direct(mode: str) -> Tuple[List[Dict[str, Any]], Optional[str]]:
    recs, errors = [], []
    for w, i in W.cases():
        print("running %s / %s ..." % (w, i), flush=True)
        try:
            recs.append(W.run_direct(w, i, mode))
        except Exception as e:  # a failed check is reported, the others still run
            errors.append("%s/%s: %r" % (w, i, e))
    return recs, "; ".join(errors) or None


# -----------------------------------------------------------------------------------------
# Formatting

def fmt_rate(x: Optional[float]) -> str:
    if x is None:
        return "-"
    if x >= 1e6:
        return "%.2f M" % (x / 1e6)
    if x >= 1e3:
        return "%.0f k" % (x / 1e3) if x >= 1e5 else "%.1f k" % (x / 1e3)
    return "%.0f" % x


def fmt_ratio(x: Optional[float]) -> str:
    if x is None:
        return "-"
    return "%.0fx" % x if x >= 100 else "%.1fx" % x if x >= 10 else "%.2fx" % x


def figure(rec: Dict[str, Any]) -> Optional[float]:
    """The headline figure of a record: the rate, or bytes per process for memory."""
    if rec["workload"] == "memory":
        for k in ("bytes_per_process_tracemalloc", "bytes_per_process_vm"):
            if rec.get(k) is not None:
                return float(rec[k])
        return None
    return rec.get("rate")


def ratio(pyotp: Optional[float], peer: Optional[float], lower_is_better: bool) -> Optional[float]:
    """pyotp / peer for rates; peer / pyotp for memory: > 1 always means pyotp is better."""
    if not pyotp or not peer:
        return None
    return peer / pyotp if lower_is_better else pyotp / peer


def build_table(recs: List[Dict[str, Any]]) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """workload -> impl -> record, for this suite's workloads (bench/workloads.py)."""
    t: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for r in recs:
        if r["workload"] in W.WORKLOADS:
            t.setdefault(r["workload"], {})[r["impl"]] = r
    return t


def build_others(recs: List[Dict[str, Any]]) -> Dict[str, List[Dict[str, Any]]]:
    """group -> records, for the other bench/test_bench_*.py files."""
    o: Dict[str, List[Dict[str, Any]]] = {}
    for r in recs:
        if r["workload"] not in W.WORKLOADS:
            o.setdefault(r["workload"], []).append(r)
    return o


def why_not(workload: str, impl: str, peer_errors: Dict[str, str]) -> str:
    if (workload, impl) in W.NOT_APPLICABLE:
        return "n/a"
    if impl in peer_errors:
        return "missing"
    return "-"


def targets(table: Dict[str, Dict[str, Dict[str, Any]]]) -> List[Tuple[str, str, str, str]]:
    """(what, target, measured, verdict) for issue 2's targets, pyotp on its default loop."""
    def get(w: str, impl: str = "pyotp") -> Optional[float]:
        r = table.get(w, {}).get(impl)
        return figure(r) if r else None

    out = []

    def row(what: str, target: str, val: Optional[float], ok: Optional[bool], shown: str) -> None:
        out.append((what, target, shown if val is not None else "not measured",
                    "-" if ok is None else ("met" if ok else "**missed**")))

    cast, aio = get("cast"), get("cast", "asyncio")
    r = ratio(cast, aio, False)
    row("cast", ">= 3 M msg/s", cast, None if cast is None else cast >= 3e6, fmt_rate(cast) + " msg/s")
    row("cast vs asyncio", ">= 2.5x", r, None if r is None else r >= 2.5, fmt_ratio(r))
    for w, tgt, unit in [("call", 700e3, "calls/s"), ("thread_call", 50e3, "calls/s"),
                         ("spawn", 300e3, "procs/s")]:
        v = get(w)
        row(W.WORKLOADS[w].title, W.WORKLOADS[w].target_text, v,
            None if v is None else v >= tgt, fmt_rate(v) + " " + unit)
    rr, rg = get("ring_receive"), get("ring_genserver")
    best = max([x for x in (rr, rg) if x is not None], default=None)
    which = "receive" if best is not None and best == rr else "GenServer"
    row("1000-process ring (best of both styles)", ">= 3 M hops/s", best,
        None if best is None else best >= 3e6, "%s hops/s (%s)" % (fmt_rate(best), which))
    v = get("timers")
    row("timers inserted + cancelled", ">= 3 M/s", v, None if v is None else v >= 3e6, fmt_rate(v) + " /s")
    m = table.get("memory", {}).get("pyotp")
    if m:
        tm, rss = m.get("bytes_per_process_tracemalloc"), m.get("bytes_per_process_rss")
        worst = max(x for x in (tm, rss) if x is not None)
        row("memory per idle GenServer", "<= 1 KiB", worst, worst <= 1024,
            "%s B (tracemalloc), %s B (RSS)" % (tm, rss))
    else:
        row("memory per idle GenServer", "<= 1 KiB", None, None, "")
    return out


def gen_stage_targets(others: Dict[str, List[Dict[str, Any]]]) -> List[Tuple[str, str, str, str]]:
    """(what, target, measured, verdict) for issue 17's targets, from bench/test_bench_gen_stage.py."""
    def rec(group: str, impl: str) -> Optional[Dict[str, Any]]:
        return next((r for r in others.get(group, []) if r.get("impl") == impl), None)
    out: List[Tuple[str, str, str, str]] = []
    gs, aio = rec("gen_stage-3-stages", "pyotp-gen_stage"), rec("gen_stage-3-stages", "asyncio-queue")
    if gs is None:
        return out
    rate = gs["rate"]
    out.append(("events through 3 GenStage stages (max_demand 1000)", ">= 2 M events/s",
                fmt_rate(rate) + " events/s", "met" if rate >= 2e6 else "**missed**"))
    if aio is not None:
        r = rate / aio["rate"]
        out.append(("GenStage vs asyncio bounded queues", ">= 5x", fmt_ratio(r), "met" if r >= 5 else "**missed**"))
    m = rec("gen_stage-slow-consumer-memory", "pyotp-gen_stage")
    if m is not None and m.get("peak_event_bytes") is not None:
        ok = m["peak_event_bytes"] <= m["bound_bytes"]
        out.append(("peak heap for events, consumer 10x slower", "<= max_demand x stages x event (%.0f KiB)"
                    % (m["bound_bytes"] / 1024), "%.0f KiB for %d events" % (m["peak_event_bytes"] / 1024, m["events"]),
                    "met" if ok else "**missed**"))
    return out
def kvstore_section(others: Dict[str, List[Dict[str, Any]]]) -> List[str]:
    """The kvstore example against redis-server (bench/test_bench_kvstore.py): req/s, the
    ratio to redis-server in the same run, p50/p99, and issue 22's targets."""
    groups = [g for g in ("kvstore-get", "kvstore-set", "kvstore-get-P16", "kvstore-set-P16") if g in others]
    if not groups:
        return []
    L = ["## kvstore: examples/kvstore vs redis-server (redis-benchmark -c 50, same run)\n",
         "| benchmark | implementation | req/s | x redis-server | p50 ms | p99 ms |", "|---|---|---|---|---|---|"]
    rates: Dict[Tuple[str, str], float] = {}
    for g in groups:
        base = next((r["rate"] for r in others[g] if r.get("impl") == "redis-server"), None)
        for r in others[g]:
            rates[(g, r["impl"])] = r["rate"]
            L.append("| %s | %s | %s | %s | %s | %s |" % (
                g, r["impl"], fmt_rate(r["rate"]), fmt_ratio(ratio(r["rate"], base, False)) if base else "-",
                r.get("p50_ms", "-"), r.get("p99_ms", "-")))
    L.append("")
    for what, g, impl, want in (("GET, 1 node", "kvstore-get", "pyotp 1 node", 0.5),
                                ("SET, 2 nodes, replication factor 2", "kvstore-set", "pyotp 2 nodes (RF 2)", 0.25)):
        got, base = rates.get((g, impl)), rates.get((g, "redis-server"))
        x = got / base if got and base else None
        L.append("- target %s >= %.2fx redis-server: %s" % (
            what, want, "not measured" if x is None else "%.2fx, %s" % (x, "met" if x >= want else "**missed**")))
    L.append("")
    return L


def markdown(table: Dict[str, Dict[str, Dict[str, Any]]], machine: Dict[str, Any], mode: str,
             peer_errors: Dict[str, str], errors: List[str], elapsed: float,
             others: Optional[Dict[str, List[Dict[str, Any]]]] = None) -> str:
    others = others or {}
    groups = list(table) + list(others)
    cols = [c for c in COLUMNS if any(c in table.get(w, {}) for w in W.WORKLOADS) or c in peer_errors]
    L: List[str] = []
    v = machine["versions"]
    L.append("# pyotp benchmarks\n")
    L.append("Made by `python -m bench.compare%s` on %s (%s mode, %.0f s).\n" % (
        " --quick" if mode == "quick" else "", machine["date"], mode, elapsed))
    L.append("- Machine: %s CPU(s), %s; %s" % (machine["nproc"], machine["cpu"], machine["platform"]))
    L.append("- Python: %s; pyotp %s (pyotp's default loop here: %s)" % (
        machine["python"], v.get("pyotp"), machine.get("pyotp_loop", "?")))
    L.append("- Peers: " + ", ".join("%s %s" % (k, v[k] or "missing") for k in ("uvloop", "pykka", "thespian", "xoscar")))
    L.append("- Erlang/OTP: %s" % (machine.get("otp") or "missing (no `erl`)"))
    if machine.get("load"):
        L.append("- Load average (1 min) at the start / end of the run: %.1f / %.1f on %s CPUs "
                 "(other work on the machine lowers every figure; compare ratios from one run)" % (
                     machine["load"][0], machine["load"][1], machine["nproc"]))
    L.append("- Each figure: operations per round / median round time, after warm-up rounds "
             "(%d rounds, %d warm-up). Rounds check their results." % (
                 W.MODES[mode].rounds, W.MODES[mode].warmup))
    L.append("")
    L.append("## Rates (higher is better)\n")
    L.append("| workload | unit | " + " | ".join(LABELS[c] for c in cols) + " |")
    L.append("|---|---|" + "---|" * len(cols))
    for w in W.WORKLOADS.values():
        if w.id == "memory":
            continue
        cells = []
        for c in cols:
            r = table.get(w.id, {}).get(c)
            cells.append(fmt_rate(figure(r)) if r else why_not(w.id, c, peer_errors))
        L.append("| %s | %s | %s |" % (w.title, w.unit, " | ".join(cells)))
    L.append("")
    L.append("## Memory per idle server (lower is better)\n")
    L.append("| measure | " + " | ".join(LABELS[c] for c in cols) + " |")
    L.append("|---|" + "---|" * len(cols))
    mem = table.get("memory", {})
    for key, label in [("bytes_per_process_tracemalloc", "bytes/process, Python heap (tracemalloc)"),
                       ("bytes_per_process_rss", "bytes/process, RSS growth (fresh process)"),
                       ("bytes_per_process_vm", "bytes/process, `erlang:memory(processes)`"),
                       ("rate", "idle servers started per second")]:
        cells = []
        for c in cols:
            r = mem.get(c)
            x = r.get(key) if r else None
            if x is None:
                cells.append("-" if r else why_not("memory", c, peer_errors))
            else:
                cells.append(fmt_rate(x) if key == "rate" else "%.0f" % x)
        L.append("| %s | %s |" % (label, " | ".join(cells)))
    L.append("| processes kept alive | %s |" % " | ".join(
        str(mem[c]["n"]) if c in mem else "-" for c in cols))
    L.append("")
    L.append("## pyotp / peer (> 1: pyotp is faster, or smaller for memory)\n")
    pcols = [c for c in cols if c in PEERS]
    L.append("| workload | " + " | ".join(LABELS[c] for c in pcols) + " |")
    L.append("|---|" + "---|" * len(pcols))
    for w in W.WORKLOADS.values():
        p = table.get(w.id, {}).get("pyotp")
        cells = []
        for c in pcols:
            r = table.get(w.id, {}).get(c)
            if w.id == "memory" and c == "erlang" and r and p:
                # like with like: Erlang's VM measure against pyotp's RSS growth
                x = ratio(p.get("bytes_per_process_rss"), r.get("bytes_per_process_vm"), True)
            else:
                x = ratio(figure(p) if p else None, figure(r) if r else None, w.lower_is_better)
            cells.append(fmt_ratio(x) if x is not None else why_not(w.id, c, peer_errors))
        L.append("| %s | %s |" % (w.title, " | ".join(cells)))
    L.append("")
    L.append("## Targets (issue 2; pyotp on its default loop)\n")
    L.append("| what | target | measured | |")
    L.append("|---|---|---|---|")
    for what, tgt, val, verdict in targets(table):
        L.append("| %s | %s | %s | %s |" % (what, tgt, val, verdict))
    L.append("")
    if others:
        L.append("## Behaviour and codec workloads (the other bench/test_bench_*.py files, same run)\n")
        L.append("| group | benchmark | implementation | rate |")
        L.append("|---|---|---|---|")
        for g in sorted(others):
            for r in sorted(others[g], key=lambda r: -r["rate"]):
                mem = ""
                if r.get("peak_event_bytes") is not None:
                    mem = "; peak heap for the events %.0f KiB (input %.0f KiB)" % (
                        r["peak_event_bytes"] / 1024, r.get("input_bytes", 0) / 1024)
                L.append("| %s | `%s` | %s | %s %s%s |" % (g, r.get("test", ""), r["impl"], fmt_rate(r["rate"]),
                                                      r.get("unit", "ops/s"), mem))
        L.append("")
        gs = gen_stage_targets(others)
        if gs:
            L.append("## GenStage targets (issue 17; same run)\n")
            L.append("| what | target | measured | |")
            L.append("|---|---|---|---|")
            for what, tgt, val, verdict in gs:
                L.append("| %s | %s | %s | %s |" % (what, tgt, val, verdict))
            L.append("")
    L += kvstore_section(others)
    L.append("## Not measured\n")
    for c, why in sorted(peer_errors.items()):
        L.append("- **%s**: missing, %s" % (LABELS.get(c, c), why))
    for w, i, why in W.skipped_cases():
        if why.startswith("n/a"):
            L.append("- %s / %s: %s" % (W.WORKLOADS[w].title, LABELS.get(i, i), why))
    for wid, title, why in W.missing_workloads(groups):
        L.append("- workload **%s** (%s): missing, %s" % (title, wid, why))
    for e in errors:
        L.append("- error: %s" % e)
    L.append("")
    L.append("Sizes per round (ops): " + "; ".join(
        "%s: %s" % (w, ", ".join("%s %s" % (c, table[w][c]["ops_per_round"]) for c in cols if c in table.get(w, {})))
        for w in W.WORKLOADS if w in table) + ".\n")
    L.append("![pyotp and peers](results.png)\n")
    return "\n".join(L)


DOCS = W.ROOT / "docs" / "benchmarks.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def update_docs(md: str, docs: Path = DOCS) -> bool:
    """Put the report into docs/benchmarks.md between the results markers (headings one
    level down, the chart linked from docs/)."""
    if not docs.exists():
        return False
    text = docs.read_text()
    if START not in text or END not in text:
        return False
    body = []
    for line in md.splitlines():
        if line.startswith("# "):
            continue
        if line.startswith("#"):
            line = "#" + line
        body.append(line.replace("](results.png)", "](../bench/results/results.png)"))
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    docs.write_text(head + START + "\n" + "\n".join(body).strip() + "\n" + END + tail)
    return True


def chart(table: Dict[str, Dict[str, Dict[str, Any]]], path: Path, title: str) -> Optional[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib): no chart"
    cols = [c for c in COLUMNS if any(c in table.get(w, {}) for w in W.WORKLOADS)]
    rate_ws = [w for w in W.WORKLOADS if w != "memory" and w in table]
    colors = dict(zip(COLUMNS, ["#d62728", "#ff9896", "#1f77b4", "#aec7e8", "#2ca02c",
                                "#9467bd", "#8c564b", "#7f7f7f"]))
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(16, 6.5), gridspec_kw={"width_ratios": [5, 1.3]})
    width = 0.8 / max(1, len(cols))
    for j, c in enumerate(cols):
        xs, ys = [], []
        for i, w in enumerate(rate_ws):
            r = table[w].get(c)
            if r and figure(r):
                xs.append(i + (j - (len(cols) - 1) / 2) * width)
                ys.append(figure(r))
        ax.bar(xs, ys, width, label=LABELS[c], color=colors[c])
    ax.set_yscale("log")
    top = max((figure(r) or 0) for w in rate_ws for r in table[w].values())
    ax.set_ylim(top=top * 12)      # room for the legend above the bars
    ax.set_xticks(range(len(rate_ws)))
    ax.set_xticklabels(["%s\n(%s)" % (W.WORKLOADS[w].title.replace(" between two processes", "")
                                       .replace(" (receive)", "").replace(", coroutine processes", "\n(coroutines)")
                                       .replace(", GenServer handle_info", "\n(GenServer)"),
                                       W.WORKLOADS[w].unit) for w in rate_ws], fontsize=8)
    ax.set_ylabel("operations per second (log scale, higher is better)")
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=8, loc="upper center")
    ax.set_title(title, fontsize=10)
    mem = table.get("memory", {})
    mc = [c for c in cols if c in mem and figure(mem[c])]
    vals = [mem[c].get("bytes_per_process_rss") or figure(mem[c]) for c in mc]
    ax2.bar(range(len(mc)), vals, color=[colors[c] for c in mc])
    ax2.set_yscale("log")
    ax2.set_xticks(range(len(mc)))
    ax2.set_xticklabels([LABELS[c] for c in mc], rotation=60, ha="right", fontsize=8)
    ax2.set_ylabel("bytes per idle server (log, lower is better)")
    ax2.set_title("memory per idle server\n(RSS growth; Erlang: VM process memory)", fontsize=9)
    ax2.axhline(1024, color="k", lw=0.8, ls="--")
    ax2.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(str(path), dpi=110)
    plt.close(fig)
    return None


# -----------------------------------------------------------------------------------------

def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, 3 rounds (< 2 minutes)")
    ap.add_argument("--out", default=str(W.HERE / "results"), help="output directory (default bench/results)")
    ap.add_argument("--no-erlang", action="store_true", help="do not run the Erlang escript")
    ap.add_argument("--direct", action="store_true", help="run the workloads without pytest-benchmark")
    ap.add_argument("--no-docs", action="store_true",
                    help="do not refresh docs/benchmarks.md (only done when writing to bench/results)")
    ap.add_argument("--report-only", action="store_true",
                    help="do not run anything: rebuild the report from OUT/results.json and OUT/summary.json")
    ap.add_argument("-k", dest="select", default=None, help="pytest -k expression (subset of the suite)")
    args = ap.parse_args(argv)
    mode = "quick" if args.quick else "full"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    peer_errors = {c: why for c in COLUMNS if (why := W.peer_status(c)) is not None}
    if args.no_erlang:
        peer_errors["erlang"] = "not run (--no-erlang)"
    for c, why in peer_errors.items():
        print("peer %s: %s" % (c, why), flush=True)

    errors: List[str] = []
    if args.report_only:
        recs = read_json(out / "results.json")
        old = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
        recs += [r for r in old.get("results", []) if r.get("impl") == "erlang"]
        mode = old.get("mode", mode)
        return report(recs, out, mode, peer_errors, old.get("errors", []), old.get("elapsed", 0.0), args,
                      old.get("machine"))
    use_pytest = not args.direct
    if use_pytest:
        if importlib.util.find_spec("pytest_benchmark") is None:
            print("pytest-benchmark is not installed: running the workloads directly", flush=True)
            use_pytest = False
    if use_pytest:
        recs, err = run_pytest(mode, out, ["-k", args.select] if args.select else [])
    else:
        recs, err = run_direct(mode)
    if err:
        errors.append(err)

    if "erlang" not in peer_errors:
        print("running bench/erlang/bench.escript ...", flush=True)
        erecs, eerr = W.run_erlang(mode)
        recs += erecs
        if eerr:
            errors.append("erlang: " + eerr)

    machine = W.machine_info()
    machine["date"] = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    machine["pyotp_loop"] = W.loop_name(W.new_loop("default"))
    if load_start is not None:
        machine["load"] = [load_start, os.getloadavg()[0]]
    return report(recs, out, mode, peer_errors, errors, time.perf_counter() - t0, args, machine)


def report(recs: List[Dict[str, Any]], out: Path, mode: str, peer_errors: Dict[str, str],
           errors: List[str], elapsed: float, args: argparse.Namespace,
           machine: Optional[Dict[str, Any]] = None) -> int:
    if machine is None:
        machine = W.machine_info()
        machine["date"] = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        machine["pyotp_loop"] = W.loop_name(W.new_loop("default"))
    table = build_table(recs)
    others = build_others(recs)
    md = markdown(table, machine, mode, peer_errors, errors, elapsed, others)
    (out / "results.md").write_text(md)
    (out / "summary.json").write_text(json.dumps(
        {"mode": mode, "machine": machine, "results": recs, "missing_peers": peer_errors,
         "not_run": W.skipped_cases(), "elapsed": elapsed,
         "missing_workloads": W.missing_workloads(list(table) + list(others)), "errors": errors}, indent=1, default=str))
    cerr = chart(table, out / "results.png",
                 "pyotp vs peers, %s, %s, %s CPUs (%s mode)" % (machine["python"], machine.get("otp") or "no OTP",
                                                                machine["nproc"], mode))
    if cerr:
        errors.append(cerr)
        print(cerr)
    if not args.no_docs and out.resolve() == (W.HERE / "results").resolve() and not args.select:
        if update_docs(md):
            print("updated %s" % DOCS)
    print()
    print(md)
    print("wrote %s/results.md, results.png, results.json, summary.json in %.0f s" % (out, elapsed))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
