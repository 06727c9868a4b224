"""DistributedExample: a key-value store on one node, used from another node.

    python examples/distributed_example.py

The demo starts node ``store`` as a separate OS process (this same file, ``--role
store``), then makes the current process node ``client`` and, from there:

1. calls the ``KV`` GenServer registered as ``"kv"`` on ``store`` by ``("kv", node)``:
   put/get of Python values (a ``set`` and a ``str`` arrive as themselves: both nodes
   start with ``python_payloads=True``, so values of the fixed safe set travel exactly);
2. runs a function there by rpc (``os.getpid``) and spawns a process there by name
   (``Node.spawn(node, square_and_reply, ...)``), which answers back to a local pid;
3. monitors the remote server, kills the ``store`` process, and receives
   ``("DOWN", ref, "process", pid, "noconnection")`` and ``("nodedown", node)``.

``demo()`` returns a summary dict (the tests check it).
"""
from __future__ import annotations

import os
import sys
from typing import Any, Dict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pyotp                                            # noqa: E402
from pyotp import GenServer                             # noqa: E402
from pyotp.dist import Node, rpc, run_node              # noqa: E402
from distributed_nodes import NodeProcess, node_name, role_main, stdin_closed  # noqa: E402

COOKIE = "distributed-example"


class KV(GenServer):
    """A key-value store: ("put", k, v) -> "ok"; ("get", k) -> value or None."""

    def init(self, arg: Any) -> Any:
        return ("ok", {})

    def handle_call(self, req: Any, from_: Any, data: Dict[Any, Any]) -> Any:
        if req[0] == "put":
            data[req[1]] = req[2]
            return ("reply", "ok", data)
        if req[0] == "get":
            return ("reply", data.get(req[1]), data)
        return ("reply", ("error", "unknown request"), data)


async def square_and_reply(x: int, reply_to: Any) -> None:
    """Spawned on the store node by name: sends (node, x*x) back."""
    pyotp.send(reply_to, (Node.self(), x * x))


async def store_role() -> None:
    await KV.start(None, name="kv")
    print("READY", flush=True)
    await stdin_closed()


async def client(store: Any) -> Dict[str, Any]:
    s = store.name
    out: Dict[str, Any] = {"ping": await Node.ping(s)}
    kv = ("kv", s)
    await GenServer.call(kv, ("put", "colors", {"red", "green"}))
    await GenServer.call(kv, ("put", "greeting", "hello from " + Node.self()))
    out["colors"] = await GenServer.call(kv, ("get", "colors"))
    out["greeting"] = await GenServer.call(kv, ("get", "greeting"))
    out["remote_pid"] = await rpc.call(s, "os", "getpid", [])
    await Node.spawn(s, square_and_reply, 12, pyotp.self())
    out["spawned"] = await pyotp.receive(timeout=10)
    Node.monitor_nodes(True)
    server = await rpc.call(s, "pyotp", "whereis", ["kv"])
    ref = pyotp.monitor(server)
    store.kill()
    down = await pyotp.receive(lambda m: m[0] == "DOWN", timeout=30)
    out["down_reason"] = down[4] if down[1] == ref else None
    out["nodedown"] = await pyotp.receive(lambda m: m[0] == "nodedown", timeout=30)
    return out


def demo() -> Dict[str, Any]:
    store = NodeProcess(__file__, "store", node_name("store"), COOKIE)
    try:
        store.wait_for("READY")
        return run_node(client, store, node=node_name("client"), cookie=COOKIE, python_payloads=True)
    finally:
        store.kill()


if __name__ == "__main__":
    if not role_main({"store": store_role}):
        for k, v in demo().items():
            print("%-12s %r" % (k, v))
