"""``python -m pyotp top --node NAME@HOST``: a top-like view of a running node in the
terminal, refreshed every second (plain ANSI, no dependencies): from ``pyotp.observer``
over rpc for a pyotp node, from erlang:process_info & co for an Erlang/Elixir node
(``pyotp.observer_beam``). Ctrl-C leaves it; ``--iterations N`` stops after N screens.
"""
import asyncio
import shutil
import sys
from typing import Any, Dict, List, Optional, TextIO, Tuple

__all__ = ["render", "run_top"]

CLEAR = "\x1b[H\x1b[2J"


def _n(v: Any) -> str:
    return "-" if v is None else str(v)


def render(snap: Dict[str, Any], rate: Optional[float], sort: str, width: int = 100) -> str:
    """One screen of text for a snapshot (``rate``: messages/s since the last one)."""
    node = snap["node"]
    timers = node.get("timers")
    lines: List[str] = [
        "pyotp top - %s  processes %d  run queue %d  %s/s %s  timers %s  memory %d"
        % (node["name"], node["processes"], node["run_queue"], node.get("rate_unit", "messages"),
           "-" if rate is None else "%d" % rate, "-" if timers is None else timers, node["memory"]),
        "sorted by %s" % sort]
    for c in node.get("connections") or []:
        lines.append("  %-30s msgs in %s out %s  bytes in %s out %s" % (
            c["node"], _n(c.get("msgs_in")), _n(c.get("msgs_out")),
            _n(c.get("bytes_in")), _n(c.get("bytes_out"))))
    lines += ["",
        "%-16s %-18s %-9s %8s %11s %9s  %s" % ("PID", "NAME", "STATUS", "MAILBOX", "REDUCTIONS",
                                                "MEMORY", "BEHAVIOUR/INITIAL CALL")]
    for r in snap["top"]:
        lines.append("%-16s %-18s %-9s %8d %11d %9d  %s" % (
            str(r["pid"])[:16], (r["name"] or "")[:18], r["status"], r["message_queue_len"],
            r["reductions"], r["memory"], r["behaviour"] or r["initial_call"] or ""))
    return "\n".join(line[:width] for line in lines) + "\n"


def run_top(target: str, cookie: str, sort: str = "reductions", n: int = 20,
            interval: float = 1.0, iterations: Optional[int] = None, tls: Any = None,
            out: TextIO = sys.stdout) -> int:
    """Show ``target``'s busiest processes until Ctrl-C; exit status 0, 1 if the node
    cannot be reached."""
    from . import runtime
    from .dashboard import DashboardError, _HttpError, source_for
    from .observer_beam import BeamError
    from .remsh import client_name

    async def main() -> int:
        last: Optional[Tuple[float, int]] = None
        shown = 0
        try:
            source = await source_for(target, 10.0)
        except DashboardError as e:
            print("pyotp top: cannot read %s: %s" % (target, e), file=sys.stderr, flush=True)
            return 1
        while iterations is None or shown < iterations:
            try:
                snap: Any = await source.snapshot(n, sort)
            except (BeamError, _HttpError) as e:
                print("pyotp top: cannot read %s: %s" % (target, e), file=sys.stderr, flush=True)
                return 1
            now = asyncio.get_running_loop().time()
            rate: Optional[float] = None
            if last is not None and now > last[0]:
                rate = (snap["node"]["dispatched"] - last[1]) / (now - last[0])
            last = (now, snap["node"]["dispatched"])
            width = shutil.get_terminal_size((100, 24)).columns
            out.write(CLEAR + render(snap, rate, sort, width))
            out.flush()
            shown += 1
            if iterations is None or shown < iterations:
                await asyncio.sleep(interval)
        return 0

    try:
        return int(runtime.run(main, node=client_name(target), cookie=cookie, hidden=True, tls=tls))
    except KeyboardInterrupt:
        return 0
