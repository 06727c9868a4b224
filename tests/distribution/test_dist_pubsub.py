"""PubSub across pyotp nodes: a broadcast reaches the subscribers of every node."""
import asyncio

import pyotp
from pyotp import PubSub
from pyotp.dist import Node, rpc, run_node
from dist_helpers import COOKIE, NodeProc, unique


def test_broadcast_reaches_subscribers_on_other_nodes_and_back():
    with NodeProc("b", role="pubsub_roles:role_pubsub_node", args=["room"]) as b:
        b.expect("ready")

        async def main():
            await PubSub.start_link(name="dps")
            PubSub.subscribe("dps", "room")
            assert await Node.ping(b.name) == "pong"
            PubSub.broadcast("dps", "room", ("hello", "from a"))
            local = await pyotp.receive(timeout=10)
            # read b's report off the loop: the node must keep running to send the forward
            loop = asyncio.get_running_loop()
            remote = [await loop.run_in_executor(None, b.expect, "got") for _ in range(2)]
            # and the other way: a broadcast made on b reaches this node's subscriber
            await rpc.call(b.name, "pubsub_roles", "broadcast", ["room", ("hi", "from b")], 10)
            back = await pyotp.receive(timeout=10)
            PubSub.broadcast("dps", "other-topic", "nobody listens")
            return local, remote, back
        local, remote, back = run_node(main, node=unique("a"), cookie=COOKIE)
        assert local == ("hello", "from a")
        assert remote == ["('hello', 'from a')"] * 2
        assert back == ("hi", "from b")
