"""Where a paced trickle's CPU goes: the CPU of both node processes, per thread, for
rounds of N calls paced by a sleep (bench/test_bench_busy.py's trickle, with more detail).

    python -m bench.trickle_probe [auto|none|fixed|beam] [N] [ROUNDS] [PAUSE_MS]

For each round: CPU seconds per 1000 calls of driver + sink (every thread's
/proc/PID/task/*/schedstat, nanoseconds), each node's share, voluntary context switches
per call, involuntary ones, the wall time and the busiest threads. Run it from the tree
whose build it measures, under both bench locks; with ``HOLD=N`` in the environment it
prints ``PIDS driver sink`` and then trickles N more calls, for strace/perf to attach to
(docs/benchmarks.md, "Round 5 (issue 20): the trickle's CPU").
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "helpers"))

from dist_helpers import ErlNode, NodeProc  # noqa: E402


def threads(pid: int) -> Dict[str, Tuple[str, int, int, int]]:
    """task -> (name, CPU ns, voluntary switches, involuntary switches)."""
    out = {}
    for t in glob.glob("/proc/%d/task/*" % pid):
        try:
            with open(t + "/schedstat") as f:
                ns = int(f.read().split()[0])
            with open(t + "/comm") as f:
                comm = f.read().strip()
            with open(t + "/status") as f:
                st = f.read()
        except OSError:
            continue        # the thread ended
        v = int(st.split("\nvoluntary_ctxt_switches:")[1].split()[0])
        nv = int(st.split("nonvoluntary_ctxt_switches:")[1].split()[0])
        out[t] = (comm, ns, v, nv)
    return out


def main(impl: str = "auto", n: int = 1000, rounds: int = 2, pause: str = "3") -> None:
    beams = None
    if impl == "beam":
        beams = tempfile.mkdtemp()
        subprocess.run(["erlc", "-o", beams, str(ROOT / "bench" / "erlang" / "distpeer.erl")], check=True)
        sink: Any = ErlNode("bsink", "distpeer:sink().", extra_args=["-pa", beams]).start()
        drv: Any = ErlNode("bdrv", "distpeer:driver().", extra_args=["-pa", beams]).start()
    else:
        kw = {"fixed": {"busy_wait": 100}, "none": {"busy_wait": "none"}}.get(impl, {})
        sink = NodeProc("psink", role="dist_roles:role_sink_bench", **kw).start()
        drv = NodeProc("pdrv", role="dist_roles:role_call_driver", **kw).start()
    zero = ("", 0, 0, 0)
    try:
        sink.expect("ready")
        drv.expect("ready")
        drv.send_line("call 200 %s" % sink.name)
        drv.expect("result", timeout=600)
        pids = [drv.proc.pid, sink.proc.pid]
        if os.environ.get("HOLD"):
            print("PIDS", *pids, flush=True)
        for r in range(rounds):
            before = [threads(p) for p in pids]
            drv.send_line("paced %d %s %s" % (n, sink.name, pause))
            wall = float(drv.expect("result", timeout=600))
            after = [threads(p) for p in pids]
            res = []
            for b, a in zip(before, after):
                d = {k: tuple(x - y for x, y in zip(a[k][1:], b.get(k, zero)[1:])) for k in a}
                busiest = sorted(((d[k][0] / 1e6, a[k][0]) for k in a), reverse=True)[:3]
                res.append((sum(x[0] for x in d.values()) / 1e6, sum(x[1] for x in d.values()),
                            sum(x[2] for x in d.values()), busiest))
            print("%s round %d: %.3f CPU s/1000 calls (driver %.1f ms, sink %.1f ms), voluntary "
                  "switches per call %.2f + %.2f, involuntary %d + %d, wall %.2f s, busiest threads "
                  "%s | %s" % (impl, r, (res[0][0] + res[1][0]) / n, res[0][0], res[1][0],
                               res[0][1] / n, res[1][1] / n, res[0][2], res[1][2], wall,
                               [(round(x, 1), c) for x, c in res[0][3]],
                               [(round(x, 1), c) for x, c in res[1][3]]), flush=True)
        if os.environ.get("HOLD"):
            drv.send_line("paced %d %s %s" % (int(os.environ["HOLD"]), sink.name, pause))
            drv.expect("result", timeout=600)
    finally:
        drv.kill()
        sink.kill()
        if beams:
            shutil.rmtree(beams, ignore_errors=True)


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0] if a else "auto", int(a[1]) if len(a) > 1 else 1000,
         int(a[2]) if len(a) > 2 else 2, a[3] if len(a) > 3 else "3")
