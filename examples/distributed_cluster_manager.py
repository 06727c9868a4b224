"""ClusterManager: track which nodes are in the cluster with ``Node.monitor_nodes``.

    python examples/distributed_cluster_manager.py

``ClusterManager`` is a GenServer that subscribes to ``("nodeup", node)`` /
``("nodedown", node)`` in ``init`` and keeps the set of members and a history of joins and
leaves; subscribers get ``("joined", node)`` / ``("left", node)``. Member nodes (this file
run with ``--role member MANAGER``) join by connecting to the manager's node.

The demo makes this process the manager node, starts three members as OS processes, and
then: kills one (SIGKILL: its connection breaks), stops one in order (it shuts its node
down), and keeps the third; each change arrives as a message, never by polling.

``demo()`` returns the final members and the history (the tests check them).
"""
from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, Set, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pyotp                                            # noqa: E402
from pyotp import GenServer                             # noqa: E402
from pyotp.dist import Node, run_node                   # noqa: E402
from distributed_nodes import NodeProcess, node_name, role_main, stdin_closed  # noqa: E402

COOKIE = "cluster-manager"


class ClusterManager(GenServer):
    """Members of the cluster, as this node sees them."""

    def init(self, arg: Any) -> Any:
        Node.monitor_nodes(True)
        return ("ok", {"members": set(Node.list()), "history": [], "subscribers": []})

    def handle_call(self, req: Any, from_: Any, st: Dict[str, Any]) -> Any:
        if req == "members":
            return ("reply", sorted(st["members"]), st)
        if req == "history":
            return ("reply", list(st["history"]), st)
        if req[0] == "subscribe":
            st["subscribers"].append(req[1])
            return ("reply", "ok", st)
        return ("reply", ("error", "unknown request"), st)

    def handle_info(self, msg: Any, st: Dict[str, Any]) -> Any:
        if msg[0] == "nodeup":
            st["members"].add(msg[1])
            event: Tuple[str, str] = ("joined", msg[1])
        elif msg[0] == "nodedown":
            st["members"].discard(msg[1])
            event = ("left", msg[1])
        else:
            return ("noreply", st)
        st["history"].append(event)
        for s in st["subscribers"]:
            pyotp.send(s, event)
        return ("noreply", st)


async def member_role(manager: str) -> None:
    assert await Node.connect(manager), "cannot reach the manager %s" % manager
    print("READY", flush=True)
    await stdin_closed()          # NodeProcess.stop(): leave in order


async def manager(members: List[NodeProcess]) -> Dict[str, Any]:
    mgr = await ClusterManager.start_link(None, name="cluster_manager")
    await GenServer.call(mgr, ("subscribe", pyotp.self()))
    me = Node.self()
    for i in range(3):     # started now that the manager listens: they connect to this node
        members.append(NodeProcess(__file__, "member", node_name("m%d_" % i), COOKIE, me))
    seen: Set[str] = set()
    while len(seen) < len(members):
        ev = await pyotp.receive(lambda e: e[0] == "joined", timeout=30)
        seen.add(ev[1])
    killed, stopped, kept = members
    killed.kill()
    await pyotp.receive(lambda e: e == ("left", killed.name), timeout=30)
    stopped.stop()
    await pyotp.receive(lambda e: e == ("left", stopped.name), timeout=30)
    return {"members": await GenServer.call(mgr, "members"),
            "history": await GenServer.call(mgr, "history"),
            "kept": kept.name, "killed": killed.name, "stopped": stopped.name}


def demo() -> Dict[str, Any]:
    me = node_name("manager")
    procs: List[NodeProcess] = []

    async def main() -> Dict[str, Any]:
        return await manager(procs)
    try:
        return run_node(main, node=me, cookie=COOKIE)
    finally:
        for p in procs:
            p.kill()


if __name__ == "__main__":
    if not role_main({"member": member_role}):
        for k, v in demo().items():
            print("%-10s %r" % (k, v))
