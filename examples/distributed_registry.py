"""DistributedRegistry: one cluster-wide leader through global names, with failover.

    python examples/distributed_registry.py

Every ``candidate`` node runs a ``Candidate`` process that tries to start the ``Leader``
GenServer under the global name ``("global", "leader")``. Only one node in the cluster can
hold it: the others get ``already_started``, monitor the leader, and try again when it goes
down. A node that becomes leader prints ``LEADER``.

The demo starts candidates ``b`` then ``c`` as separate OS processes (``c`` joins ``b``'s
cluster), makes this process the client node, and:

1. calls ``("global", "leader")``: ``b`` answers;
2. kills ``b``'s OS process: ``c`` sees the leader's DOWN (``noconnection``), takes the
   name, and prints ``LEADER``;
3. calls ``("global", "leader")`` again: now ``c`` answers.

``demo()`` returns the answers (the tests check them).
"""
from __future__ import annotations

import os
import sys
from typing import Any, Dict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pyotp                                            # noqa: E402
from pyotp import GenServer, StartError                 # noqa: E402
from pyotp.dist import Node, global_names, run_node     # noqa: E402
from distributed_nodes import NodeProcess, node_name, role_main, stdin_closed  # noqa: E402

COOKIE = "distributed-registry"
NAME = ("global", "leader")


class Leader(GenServer):
    """The service only one node may run: answers who it is and counts requests."""

    def init(self, arg: Any) -> Any:
        return ("ok", 0)

    def handle_call(self, req: Any, from_: Any, n: int) -> Any:
        if req == "whoami":
            return ("reply", (Node.self(), n + 1), n + 1)
        return ("reply", ("error", "unknown request"), n)


async def candidate() -> None:
    """Become the leader, or wait for the current one to go and try again."""
    while True:
        try:
            await Leader.start(None, name=NAME)
        except StartError as e:
            kind, holder = e.reason
            ref = pyotp.monitor(holder)
            await pyotp.receive(lambda m: m[0] == "DOWN" and m[1] == ref)
            continue
        print("LEADER", Node.self(), flush=True)
        return


async def candidate_role(join: str = "") -> None:
    if join:
        assert await Node.connect(join), "cannot reach %s" % join
        await global_names.sync()          # the cluster's names are known before we try
    pyotp.spawn(candidate)
    print("READY", flush=True)
    await stdin_closed()


async def client(b: Any, c: Any) -> Dict[str, Any]:
    Node.monitor_nodes(True)
    await Node.connect(b.name)
    await Node.connect(c.name)
    await global_names.sync()
    answers = [await GenServer.call(NAME, "whoami")]
    b.kill()
    await pyotp.receive(lambda m: m == ("nodedown", b.name), timeout=30)
    await c.wait_for_async("LEADER")
    await global_names.sync()
    answers.append(await GenServer.call(NAME, "whoami"))
    leader = global_names.whereis_name("leader")
    assert leader is not None, "no node took over the leader name"
    return {"answers": answers, "leader_now": str(leader.node)}


def demo() -> Dict[str, Any]:
    b = NodeProcess(__file__, "candidate", node_name("b"), COOKIE)
    c = None
    try:
        b.wait_for("LEADER")
        c = NodeProcess(__file__, "candidate", node_name("c"), COOKIE, b.name)
        c.wait_for("READY")
        out: Dict[str, Any] = run_node(client, b, c, node=node_name("client"), cookie=COOKIE)
        out["b"], out["c"] = b.name, c.name
        return out
    finally:
        b.kill()
        if c is not None:
            c.kill()


if __name__ == "__main__":
    if not role_main({"candidate": candidate_role}):
        for k, v in demo().items():
            print("%-12s %r" % (k, v))
