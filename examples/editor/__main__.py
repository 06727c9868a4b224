"""``python -m examples.editor --port PORT [--nodes N]`` (see ``docs/editor.md``)."""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from typing import List, Optional

from . import server  # noqa: F401  (puts src/ on the path when needed)


def parse(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m examples.editor",
                                description="A collaborative text editor on pyotp.")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (the first one with --nodes)")
    p.add_argument("--host", default="127.0.0.1", help="HTTP interface (default 127.0.0.1)")
    p.add_argument("--nodes", type=int, default=1,
                   help="start this many nodes, one OS process each, on consecutive ports")
    p.add_argument("--db", default="editor.db", help="SQLite file shared by the nodes")
    p.add_argument("--node", default=None,
                   help="this node's distribution name (name@host); distribution off without it")
    p.add_argument("--cookie", default=os.environ.get("EDITOR_COOKIE", "editor"),
                   help="distribution cookie (or $EDITOR_COOKIE)")
    p.add_argument("--connect", action="append", default=[], help="another node to join (repeatable)")
    p.add_argument("--peer", action="append", default=[],
                   help="another node's http://host:port, where pages reconnect (repeatable)")
    a = p.parse_args(argv)
    if a.nodes < 1 or a.nodes > 16:
        p.error("--nodes must be between 1 and 16")
    return a


def launch(a: argparse.Namespace) -> int:
    """Start ``a.nodes`` node processes (editor1@127.0.0.1 on port, editor2 on port+1...)
    that know each other, and wait; Ctrl-C stops them all."""
    names = ["editor%d@127.0.0.1" % (i + 1) for i in range(a.nodes)]
    urls = ["http://%s:%d" % (a.host, a.port + i) for i in range(a.nodes)]
    procs = []
    for i, name in enumerate(names):
        cmd = [sys.executable, "-m", "examples.editor", "--port", str(a.port + i), "--host", a.host,
               "--db", a.db, "--node", name, "--cookie", a.cookie]
        for other in names[:i]:
            cmd += ["--connect", other]
        for u in urls:
            cmd += ["--peer", u]
        procs.append(subprocess.Popen(cmd))
        print("node %s: %s/" % (name, urls[i]), flush=True)
    try:
        return max(p.wait() for p in procs)
    except KeyboardInterrupt:
        for p in procs:
            p.send_signal(signal.SIGINT)
        return max(p.wait() for p in procs)


def main(argv: Optional[List[str]] = None) -> int:
    a = parse(argv)
    if a.nodes > 1:
        return launch(a)
    cfg = server.Config(db=a.db, host=a.host, port=a.port, node=a.node, cookie=a.cookie,
                        connect=a.connect, peers=a.peer)
    print("pyotp editor on http://%s:%d/ (node %s)" % (a.host, a.port, a.node or "nonode@nohost"),
          flush=True)
    server.serve(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
