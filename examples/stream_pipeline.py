"""The stream-processing exercise: a GenStage pipeline over a file of a million events.

    python examples/stream_pipeline.py [--lines 1000000] [--seed 17] [--workdir DIR]
                                       [--kill-at 0.4] [--window 60]

1. It writes a data file (deterministic: ``--seed``), one event a line,
   ``timestamp_ms,user_id,event_type,amount_cents``, timestamps in order.
2. Four stages under one supervisor (``one_for_all``), demand-driven
   (``max_demand`` 1000)::

       Reader (producer)  ->  Parser  ->  Enricher  ->  Aggregator (consumer)
       reads lines on         bytes ->    user -> region   tumbling windows of --window s
       demand, from the       tuple       (lookup table)   (event time) per (region, type):
       checkpoint offset                                   count, sum; writes each closed
                                                           window, then checkpoints

3. When 40% of the events are aggregated it kills the Enricher (``exit(pid, "kill")``).
   The supervisor restarts all four stages; the Reader resumes at the checkpointed
   offset (the first line of the first window not yet written) and the Aggregator
   truncates its output to the checkpointed size, so every window is written once
   (exactly-once output on at-least-once replay, as stream processors do it).
4. It reads the results file back and compares it with a plain single-pass Python
   computation over the same file, and prints whether they are equal.

While it runs it prints progress four times a second: events/s, events in flight (read, not yet
aggregated), and each consumer stage's pending demand to its producer. Durations are
seconds. Results go to ``DIR/windows.csv`` (``window_start_ms,region,event_type,count,
sum_cents``), the checkpoint to ``DIR/checkpoint.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

try:
    import pyotp
except ImportError:  # running from a source checkout: python examples/stream_pipeline.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    import pyotp

from pyotp import GenStage, Supervisor

EVENT_TYPES = (b"view", b"click", b"cart", b"buy")
REGIONS = ("eu-west", "eu-north", "us-east", "us-west", "ap-south")
T0 = 1_700_000_000_000          # ms
MAX_DEMAND = 1000
# temporary: a stage whose producer dies does not exit by itself; the one_for_all
# supervisor stops and restarts them all, in order, from the checkpoint
SUB = {"max_demand": MAX_DEMAND, "cancel": "temporary"}
EOF = "eof"

Key = Tuple[int, str, str]      # (window start ms, region, event type)


# ---------------------------------------------------------------------------------------
# The data file and the reference

def generate(path: Path, lines: int, seed: int) -> None:
    """``lines`` events, timestamps increasing by 0..120 ms (about 1000 a minute)."""
    rng = random.Random(seed)
    ts = T0
    with open(path, "wb", buffering=1 << 20) as f:
        chunk: List[bytes] = []
        for _ in range(lines):
            ts += rng.randrange(121)
            chunk.append(b"%d,%d,%s,%d\n" % (ts, rng.randrange(10_000), rng.choice(EVENT_TYPES),
                                              rng.randrange(1, 50_000)))
            if len(chunk) == 10_000:
                f.write(b"".join(chunk))
                chunk.clear()
        f.write(b"".join(chunk))


def region_of(user: int) -> str:
    """The enrichment: a user's region (a stand-in for a lookup in a user table)."""
    return REGIONS[(user * 2654435761) % (1 << 32) % len(REGIONS)]


def reference(path: Path, window_ms: int) -> Dict[Key, Tuple[int, int]]:
    """The same aggregates, computed in one plain pass: the answer to check against."""
    out: Dict[Key, List[int]] = {}
    with open(path, "rb") as f:
        for line in f:
            ts, user, etype, cents = line.rstrip(b"\n").split(b",")
            t = int(ts)
            key = (t - t % window_ms, region_of(int(user)), etype.decode())
            agg = out.get(key)
            if agg is None:
                out[key] = agg = [0, 0]
            agg[0] += 1
            agg[1] += int(cents)
    return {k: (v[0], v[1]) for k, v in out.items()}


def read_results(path: Path) -> Dict[Key, Tuple[int, int]]:
    out: Dict[Key, Tuple[int, int]] = {}
    with open(path) as f:
        for line in f:
            w, region, etype, count, cents = line.rstrip("\n").split(",")
            key = (int(w), region, etype)
            if key in out:
                raise AssertionError("window row written twice: %r" % (key,))
            out[key] = (int(count), int(cents))
    return out


# ---------------------------------------------------------------------------------------
# Checkpoint: where to resume reading, and how much output is final. Written atomically.

def load_checkpoint(workdir: Path) -> Dict[str, Any]:
    try:
        data: Dict[str, Any] = json.loads((workdir / "checkpoint.json").read_text())
        return data
    except FileNotFoundError:
        return {"offset": 0, "out_size": 0, "windows": 0}


def save_checkpoint(workdir: Path, cp: Dict[str, Any]) -> None:
    tmp = workdir / "checkpoint.json.tmp"
    tmp.write_text(json.dumps(cp))
    os.replace(tmp, workdir / "checkpoint.json")


# ---------------------------------------------------------------------------------------
# The stages. `cfg` is shared by all: paths, window, where to report, and `stats`, a dict
# of plain counters the progress display reads (stages of one node share its memory).

class Reader(GenStage):
    """Reads up to `demand` lines per demand, from the checkpointed offset; at the end of
    the file it sends EOF down the pipeline and stops emitting."""

    def init(self, cfg: Dict[str, Any]) -> Any:
        self.cfg = cfg
        cp = load_checkpoint(cfg["workdir"])
        self.f = open(cfg["data"], "rb")
        self.f.seek(cp["offset"])
        self.pos = cp["offset"]
        self.done = False
        cfg["stats"]["read"] = 0
        pyotp.send(cfg["report"], ("started", "reader", pyotp.self(), cp["offset"]))
        return ("producer", None)

    def handle_demand(self, demand: int, state: Any) -> Any:
        if self.done:
            return ("noreply", [], state)
        out: List[Any] = []
        readline = self.f.readline
        pos = self.pos
        for _ in range(demand):
            line = readline()
            if not line:
                self.done = True
                out.append(EOF)
                break
            out.append((pos, line))
            pos += len(line)
        self.pos = pos
        self.cfg["stats"]["read"] += len(out)
        return ("noreply", out, state)

    def terminate(self, reason: Any, state: Any) -> Any:
        self.f.close()
        return "ok"


class Parser(GenStage):
    """bytes -> (offset, ts, user, event type)."""

    def init(self, cfg: Dict[str, Any]) -> Any:
        pyotp.send(cfg["report"], ("started", "parser", pyotp.self(), None))
        return ("producer_consumer", None,
                {"subscribe_to": [("stream_reader", SUB)]})

    def handle_events(self, events: List[Any], from_: Any, state: Any) -> Any:
        out = []
        for e in events:
            if e == EOF:
                out.append(e)
                continue
            pos, line = e
            ts, user, etype, cents = line.split(b",")
            out.append((pos, int(ts), int(user), etype.decode(), int(cents)))
        return ("noreply", out, state)


class Enricher(GenStage):
    """Adds the user's region (the lookup table is built once per start)."""

    def init(self, cfg: Dict[str, Any]) -> Any:
        self.table = {u: region_of(u) for u in range(10_000)}
        pyotp.send(cfg["report"], ("started", "enricher", pyotp.self(), None))
        return ("producer_consumer", None,
                {"subscribe_to": [("stream_parser", SUB)]})

    def handle_events(self, events: List[Any], from_: Any, state: Any) -> Any:
        table = self.table
        out = []
        for e in events:
            if e == EOF:
                out.append(e)
            else:
                pos, ts, user, etype, cents = e
                out.append((pos, ts, table[user], etype, cents))
        return ("noreply", out, state)


class Aggregator(GenStage):
    """Tumbling event-time windows. Events arrive in timestamp order, so the first event
    of a later window closes the current one: its rows are appended to the output, then
    the checkpoint records the output size and that event's offset (replay restarts at the
    first event of the first window not yet written)."""

    def init(self, cfg: Dict[str, Any]) -> Any:
        self.cfg = cfg
        self.window_ms = cfg["window_ms"]
        cp = load_checkpoint(cfg["workdir"])
        self.windows = cp["windows"]
        self.out = open(cfg["workdir"] / "windows.csv", "ab")
        self.out.truncate(cp["out_size"])       # rows after the checkpoint were not final
        self.current: Optional[int] = None
        self.aggs: Dict[Tuple[str, str], List[int]] = {}
        self.handled = 0
        cfg["stats"]["aggregated"] = 0
        pyotp.send(cfg["report"], ("started", "aggregator", pyotp.self(), None))
        return ("consumer", None, {"subscribe_to": [("stream_enricher", SUB)]})

    def _close(self, next_offset: int) -> None:
        w = self.current
        assert w is not None             # a window is open when one closes
        rows = "".join("%d,%s,%s,%d,%d\n" % (w, region, etype, c, s)
                       for (region, etype), (c, s) in sorted(self.aggs.items()))
        self.out.write(rows.encode())
        self.out.flush()
        self.windows += 1
        save_checkpoint(self.cfg["workdir"], {"offset": next_offset, "out_size": self.out.tell(),
                                              "windows": self.windows})
        self.aggs = {}

    def handle_events(self, events: List[Any], from_: Any, state: Any) -> Any:
        wms = self.window_ms
        aggs = self.aggs
        for e in events:
            if e == EOF:
                if self.current is not None:
                    self._close(-1)
                pyotp.send(self.cfg["report"], ("finished", self.windows))
                continue
            pos, ts, region, etype, cents = e
            w = ts - ts % wms
            if w != self.current:
                if self.current is not None:
                    self._close(pos)
                    aggs = self.aggs
                self.current = w
            a = aggs.get((region, etype))
            if a is None:
                aggs[(region, etype)] = a = [0, 0]
            a[0] += 1
            a[1] += cents
        self.handled += len(events)
        stats = self.cfg["stats"]
        stats["aggregated"] = self.handled
        stats["total"] += len(events)
        if self.handled >= self.cfg["mark"] and not stats.get("marked"):
            stats["marked"] = True
            pyotp.send(self.cfg["report"], ("mark", self.handled))
        return ("noreply", [], state)

    def terminate(self, reason: Any, state: Any) -> Any:
        self.out.close()
        return "ok"


STAGES = [("stream_reader", Reader), ("stream_parser", Parser), ("stream_enricher", Enricher),
          ("stream_aggregator", Aggregator)]


# ---------------------------------------------------------------------------------------
# Running it

async def progress_line(cfg: Dict[str, Any], t0: float, last: List[float]) -> str:
    stats = cfg["stats"]
    now = time.monotonic()
    rate = (stats["total"] - last[1]) / max(now - last[0], 1e-9)
    last[0], last[1] = now, stats["total"]
    demand = []
    for name, _ in STAGES[1:]:
        try:
            st = await GenStage.stats(name, 1.0)
            demand.append("%s %d" % (name[7:], sum(st["producers"].values())))
        except (pyotp.Exit, TimeoutError):
            demand.append("%s (restarting)" % name[7:])
    return ("[%5.1fs] %9d events  %9.0f ev/s  in flight %6d  demand: %s" % (
        now - t0, stats["total"], rate, max(stats["read"] - stats["aggregated"], 0), ", ".join(demand)))


async def run_pipeline(data: Path, workdir: Path, lines: int, window_s: float, kill_at: Optional[float],
                       interval: float = 0.25, quiet: bool = False) -> Dict[str, Any]:
    """Run the stages over `data` until the Aggregator has seen EOF; kill the Enricher once
    `kill_at` of the lines are aggregated. Returns what happened."""
    for f in ("checkpoint.json", "windows.csv"):
        (workdir / f).unlink(missing_ok=True)
    stats = {"read": 0, "aggregated": 0, "total": 0}
    cfg = {"data": data, "workdir": workdir, "window_ms": int(window_s * 1000), "report": pyotp.self(),
           "stats": stats, "mark": int(lines * kill_at) if kill_at is not None else lines + 2}
    children = [{"id": name, "start": (cls.start_link, (cfg,), {"name": name})} for name, cls in STAGES]
    sup = await Supervisor.start_link(children, strategy="one_for_all", max_restarts=3, max_seconds=5)
    t0 = time.monotonic()
    last = [t0, 0]
    starts: Dict[str, List[Any]] = {}
    killed: Optional[Tuple[Any, int]] = None
    windows = 0
    while True:
        try:
            m = await pyotp.receive(timeout=interval)
        except TimeoutError:
            if not quiet:
                print(await progress_line(cfg, t0, last), flush=True)
            continue
        if m[0] == "started":
            starts.setdefault(m[1], []).append(m[2])
            if len(starts[m[1]]) > 1 and m[1] == "reader" and not quiet:
                print("  supervisor restarted the stages; the reader resumes at byte %d" % m[3], flush=True)
        elif m[0] == "mark" and kill_at is not None and killed is None:
            victim = pyotp.whereis("stream_enricher")
            assert victim is not None, "the enricher is not running"
            killed = (victim, m[1])
            if not quiet:
                print("  killing the enricher %r after %d events" % (victim, m[1]), flush=True)
            pyotp.exit(victim, "kill")
        elif m[0] == "finished":
            windows = m[1]
            break
    elapsed = time.monotonic() - t0
    if not quiet:
        print(await progress_line(cfg, t0, last), flush=True)
    await Supervisor.stop(sup)
    return {"elapsed": elapsed, "windows": windows, "starts": starts, "killed": killed,
            "events_handled": stats["total"]}


async def main(lines: int = 1_000_000, seed: int = 17, workdir: Optional[str] = None,
               kill_at: Optional[float] = 0.4, window_s: float = 60.0, quiet: bool = False) -> Dict[str, Any]:
    wd = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="stream_pipeline_"))
    wd.mkdir(parents=True, exist_ok=True)
    data = wd / "events.csv"
    t = time.monotonic()
    generate(data, lines, seed)
    if not quiet:
        print("wrote %d events to %s (%.1f MB) in %.1fs" % (lines, data, data.stat().st_size / 1e6,
                                                            time.monotonic() - t), flush=True)
    r = await run_pipeline(data, wd, lines, window_s, kill_at, quiet=quiet)
    t = time.monotonic()
    expected = reference(data, int(window_s * 1000))
    ref_s = time.monotonic() - t
    got = read_results(wd / "windows.csv")
    r.update(equal=got == expected, rows=len(got), reference_rows=len(expected), reference_s=ref_s,
             lines=lines, workdir=str(wd), rate=lines / r["elapsed"])
    if not quiet:
        restarted = len(r["starts"].get("enricher", [])) - 1
        print("pipeline: %d events in %.2fs (%.0f events/s; %d handled in all, replay included), "
              "%d windows, %d rows; enricher restarted %d time(s)" % (
                  lines, r["elapsed"], r["rate"], r["events_handled"], r["windows"], r["rows"], restarted))
        print("reference (one plain pass): %d rows in %.2fs" % (len(expected), ref_s))
        print("aggregates equal the reference: %s" % r["equal"])
    return r


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--kill-at", type=float, default=0.4, help="fraction of events after which the "
                    "enricher is killed (negative: never)")
    ap.add_argument("--window", type=float, default=60.0, help="window length, seconds of event time")
    a = ap.parse_args()
    res = pyotp.run(main, a.lines, a.seed, a.workdir, a.kill_at if a.kill_at >= 0 else None, a.window)
    sys.exit(0 if res["equal"] else 1)
