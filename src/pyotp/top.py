"""``python -m pyotp top NAME@HOST``: a top-like view of a running node in the terminal,
refreshed every second from ``pyotp.observer.snapshot`` over rpc (plain ANSI, no
dependencies). Ctrl-C leaves it; ``--iterations N`` stops after N screens.
"""
import asyncio
import shutil
import sys
from typing import Any, Dict, List, Optional, TextIO, Tuple

__all__ = ["render", "run_top"]

CLEAR = "\x1b[H\x1b[2J"


def render(snap: Dict[str, Any], rate: Optional[float], sort: str, width: int = 100) -> str:
    """One screen of text for a snapshot (``rate``: messages/s since the last one)."""
    node = snap["node"]
    lines: List[str] = [
        "pyotp top - %s  processes %d  run queue %d  messages/s %s  timers %d  memory %d"
        % (node["name"], node["processes"], node["run_queue"],
           "-" if rate is None else "%d" % rate, node["timers"], node["memory"]),
        "sorted by %s" % sort, "",
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
    from .dist import rpc
    from .remsh import _is_badrpc, client_name

    async def main() -> int:
        last: Optional[Tuple[float, int]] = None
        shown = 0
        while iterations is None or shown < iterations:
            snap: Any = await rpc.call(target, "pyotp.observer", "snapshot", [n, sort], timeout=10)
            if _is_badrpc(snap):
                print("pyotp top: cannot read %s: %r" % (target, snap[1]), file=sys.stderr, flush=True)
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
