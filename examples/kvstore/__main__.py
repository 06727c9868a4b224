"""``python -m examples.kvstore --port PORT [--nodes N] [--data DIR]`` (docs/kvstore.md)."""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from typing import List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
try:
    import pyotp  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.join(ROOT, "src"))


def parse(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m examples.kvstore",
                                description="A Redis-compatible distributed key-value store on pyotp.")
    p.add_argument("--port", type=int, default=6379, help="client port (the first one with --nodes)")
    p.add_argument("--host", default="127.0.0.1", help="client interface (default 127.0.0.1)")
    p.add_argument("--nodes", type=int, default=1,
                   help="start this many nodes, one OS process each, on consecutive ports (kv1@127.0.0.1 ...)")
    p.add_argument("--data", default=None, help="directory of the append-only log (per node: DIR/<node>)")
    p.add_argument("--appendfsync", default="everysec", choices=["always", "everysec", "no"])
    p.add_argument("--maxmemory", type=int, default=0, help="bytes of data (0: no limit)")
    p.add_argument("--maxmemory-policy", default="noeviction", choices=["noeviction", "allkeys-random"])
    p.add_argument("--replicas", type=int, default=2, help="replication factor (default 2)")
    p.add_argument("--node", default=None, help="this node's distribution name (name@host)")
    p.add_argument("--cookie", default=os.environ.get("KVSTORE_COOKIE", "kvstore"),
                   help="distribution cookie (or $KVSTORE_COOKIE)")
    p.add_argument("--peer", action="append", default=[], help="another node of the cluster (repeatable)")
    p.add_argument("--name-prefix", default="kv",
                   help="with --nodes: node names are PREFIX1@127.0.0.1, PREFIX2@... (default kv)")
    a = p.parse_args(argv)
    if not 1 <= a.nodes <= 64:
        p.error("--nodes must be between 1 and 64")
    if a.replicas < 1:
        p.error("--replicas must be at least 1")
    return a


def launch(a: argparse.Namespace) -> int:
    """--nodes N: start N nodes (kv1@127.0.0.1 on PORT, kv2 on PORT+1, ...) as child
    processes, each told the others' names, and wait; Ctrl-C (or SIGTERM) stops them all."""
    names = ["%s%d@127.0.0.1" % (a.name_prefix, i + 1) for i in range(a.nodes)]
    procs = []
    for i, name in enumerate(names):
        cmd = [sys.executable, "-m", "examples.kvstore", "--port", str(a.port + i), "--host", a.host,
               "--node", name, "--cookie", a.cookie, "--replicas", str(a.replicas),
               "--appendfsync", a.appendfsync, "--maxmemory", str(a.maxmemory),
               "--maxmemory-policy", a.maxmemory_policy]
        if a.data:
            cmd += ["--data", os.path.join(a.data, name.split("@")[0])]
        for other in names:
            if other != name:
                cmd += ["--peer", other]
        procs.append(subprocess.Popen(cmd, cwd=ROOT))

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)
    try:
        return max(p.wait() for p in procs)
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        return max(abs(p.wait()) for p in procs)


def main(argv: Optional[List[str]] = None) -> int:
    a = parse(argv)
    if a.nodes > 1:
        return launch(a)
    import logging
    import pyotp
    from .server import Config, serve
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("pyotp").setLevel(logging.WARNING)   # not a line per client connection
    cfg = Config(port=a.port, host=a.host, data=a.data, appendfsync=a.appendfsync, maxmemory=a.maxmemory,
                 maxmemory_policy=a.maxmemory_policy, node=a.node, cookie=a.cookie, peers=a.peer,
                 replicas=a.replicas)
    try:
        pyotp.run(serve, cfg)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
