"""``--nodes N``: the store on a local node pool (``pyotp.run(main, nodes=N)``).

The head (PREFIX1@127.0.0.1) and its workers (PREFIX1_w1@127.0.0.1, ...) each run the
store, node index i listening on PORT+i with its log in DIR/<node's alive name>. The pool
meshes the nodes, so the stores find each other with Node.list() and monitor_nodes as
any distributed nodes do. A worker the pool restarts is a nodeup at the head, which starts
the store there again; the new store syncs from its peers (server.Store) and serves.
"""
from __future__ import annotations

import logging
import os
import socket
from typing import Any, Tuple

import pyotp
from pyotp import pool
from pyotp.dist import Node

from .server import Config, serve

_log = logging.getLogger("examples.kvstore")

# (port, host, data, appendfsync, maxmemory, maxmemory_policy, replicas): plain terms,
# so that they cross to the workers without pickling
Opts = Tuple[int, str, str, str, int, str, int]


async def run_store(opts: Opts, index: int) -> None:
    """The store of pool node ``index`` (this node): what serve runs on a single node."""
    if pyotp.whereis("kvstore") is not None:
        return                  # a nodeup for a redialled link: the store runs here already
    port, host, data, appendfsync, maxmemory, policy, replicas = opts
    me = Node.self()
    cfg = Config(port=port + index, host=host, data=os.path.join(data, me.split("@")[0]) if data else None,
                 appendfsync=appendfsync, maxmemory=maxmemory, maxmemory_policy=policy, node=me,
                 replicas=replicas)
    await serve(cfg)


async def head_main(opts: Opts) -> None:
    """Start the store on every pool node, then again on each worker that comes back."""
    nodes = pool.pool_nodes()
    Node.monitor_nodes(True)
    for i, n in enumerate(nodes[1:], 1):
        await Node.spawn(n, run_store, opts, i)
    pyotp.spawn_link(run_store, opts, 0)
    while True:
        msg = await pyotp.receive()
        if isinstance(msg, tuple) and msg[0] == "nodeup" and msg[1] in nodes and not pool.stopping():
            try:
                await Node.spawn(msg[1], run_store, opts, nodes.index(msg[1]))
            except Exception as e:      # noqa: BLE001  (it went down again: its next nodeup retries)
                _log.warning("kvstore: could not start the store on %s: %r", msg[1], e)


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def run(a: Any) -> None:
    """``python -m examples.kvstore --nodes N`` (a: the parsed arguments)."""
    opts: Opts = (a.port, a.host, a.data or "", a.appendfsync, a.maxmemory, a.maxmemory_policy, a.replicas)
    pyotp.run(head_main, opts, nodes=a.nodes, node="%s1@127.0.0.1" % a.name_prefix, cookie=a.cookie,
              epmd="none", port=_free_port())
