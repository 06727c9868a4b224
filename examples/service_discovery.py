"""ServiceDiscovery: find service instances anywhere in the cluster, and follow them.

    python examples/service_discovery.py

Two ``backend`` nodes (separate OS processes) each run a ServiceDiscovery server and an
``Echo`` GenServer that registers itself as an instance of the ``"echo"`` service: its
endpoint is its own pid, its metadata says which zone it runs in. This process is the
``client`` node. It:

1. watches ``"echo"`` and connects to both backends: one ``service_up`` per instance;
2. discovers the instances (a local read) and calls each one through its endpoint;
3. picks an instance by metadata (zone "eu");
4. SIGKILLs the first backend's OS process: the watcher gets ``service_down`` for it,
   and discovery now returns the other backend's instance only, which still answers.

``demo()`` returns what happened (tests check it); the script prints it and ends.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pyotp                                            # noqa: E402
from pyotp import GenServer                             # noqa: E402
from pyotp.dist import Node, run_node                   # noqa: E402
from pyotp import ServiceDiscovery    # noqa: E402
from distributed_nodes import NodeProcess, node_name, role_main, stdin_closed  # noqa: E402

COOKIE = "service-discovery-example"
SERVICE = "echo"


class Echo(GenServer):
    """One instance of the echo service: registers itself with its pid as the endpoint."""

    async def init(self, zone: str) -> Any:
        await ServiceDiscovery.register(SERVICE, endpoint=pyotp.self(), metadata={"zone": zone})
        return ("ok", zone)

    def handle_call(self, req: Any, from_: Any, zone: str) -> Any:
        return ("reply", ("echo", req, Node.self(), zone), zone)


async def backend_role(zone: str) -> None:
    await ServiceDiscovery.start_link()
    await Echo.start_link(zone)
    print("READY", flush=True)
    await stdin_closed()


async def client(b: NodeProcess, c: NodeProcess) -> Dict[str, Any]:
    await ServiceDiscovery.start_link()
    known = await ServiceDiscovery.watch(SERVICE)        # nothing yet: not connected
    for peer in (b, c):
        assert await Node.connect(peer.name), "cannot reach %s" % peer.name
    events: List[Any] = []
    for _ in range(2):                                    # one service_up per instance
        events.append(await pyotp.receive(lambda m: m[0] == "service_up", timeout=30))
    instances = await ServiceDiscovery.discover(SERVICE)
    replies = sorted([await GenServer.call(endpoint, "hi") for _pid, endpoint, _meta in instances])
    eu = [endpoint for _pid, endpoint, meta in instances if meta.get("zone") == "eu"]
    eu_reply = await GenServer.call(eu[0], "hello eu")

    b.kill()                                              # the eu backend vanishes
    down = await pyotp.receive(lambda m: m[0] == "service_down", timeout=30)
    events.append(down)
    left = await ServiceDiscovery.discover(SERVICE)
    last = [await GenServer.call(endpoint, "still there?") for _pid, endpoint, _meta in left]
    return {
        "known_before_connecting": known,
        "events": [(ev[0], str(ev[2].node)) for ev in events],
        "replies": replies,
        "eu_reply": eu_reply,
        "left": [(str(pid.node), meta) for pid, _ep, meta in left],
        "last": last,
    }


def demo() -> Dict[str, Any]:
    b = NodeProcess(__file__, "backend", node_name("b"), COOKIE, "eu")
    c = None
    try:
        b.wait_for("READY")
        c = NodeProcess(__file__, "backend", node_name("c"), COOKIE, "us")
        c.wait_for("READY")
        out: Dict[str, Any] = run_node(client, b, c, node=node_name("client"), cookie=COOKIE)
        out["b"], out["c"] = b.name, c.name
        return out
    finally:
        b.kill()
        if c is not None:
            c.stop()


if __name__ == "__main__":
    if not role_main({"backend": backend_role}):
        for k, v in demo().items():
            print("%-24s %r" % (k, v))
