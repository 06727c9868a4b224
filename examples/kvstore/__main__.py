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
                   help="run on a local node pool of this many nodes (one per core), on consecutive ports "
                        "(head kv1@127.0.0.1, workers kv1_w1@127.0.0.1 ...)")
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
                   help="with --nodes: the pool's head is PREFIX1@127.0.0.1, its workers PREFIX1_w1@... (default kv)")
    a = p.parse_args(argv)
    if not 1 <= a.nodes <= 64:
        p.error("--nodes must be between 1 and 64")
    if a.replicas < 1:
        p.error("--replicas must be at least 1")
    return a


def main(argv: Optional[List[str]] = None) -> int:
    a = parse(argv)
    import logging
    import pyotp
    from .server import Config, serve
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("pyotp").setLevel(logging.WARNING)   # not a line per client connection
    if a.nodes > 1:
        from . import pool
        try:
            pool.run(a)
        except KeyboardInterrupt:
            pass
        return 0
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
