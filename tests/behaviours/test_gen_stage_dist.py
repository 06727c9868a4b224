"""GenStage across distributed nodes (separate OS processes): demand and events are ordinary
messages, so a consumer on one node subscribes to a producer on another by {name, node}
or by pid, back-pressure holds over the wire, and a lost node cancels the subscription
(a permanent consumer exits with ``noconnection``, a temporary one goes on).

The test process is node "a"; node "b" runs ``role_stages`` from this module."""
from __future__ import annotations

import pytest

import pyotp
from pyotp import GenStage
from pyotp.dist import Node, run_node
from dist_helpers import COOKIE, NodeProc, emit, unique

pytestmark = pytest.mark.pyotp


class Numbers(GenStage):
    """Emits consecutive ints; reports each demand it gets to `report` (when set)."""

    def init(self, report):
        self.report = report
        return ("producer", 0)

    def handle_demand(self, demand, n):
        if self.report is not None:
            pyotp.send(self.report, ("demand", demand))
        return ("noreply", list(range(n, n + demand)), n + demand)

    def handle_call(self, req, from_, n):
        return ("reply", n, [], n)


class Square(GenStage):
    def init(self, subs):
        return ("producer_consumer", None, {"subscribe_to": subs})

    def handle_events(self, events, from_, st):
        return ("noreply", [e * e for e in events], st)


class Collect(GenStage):
    """Forwards ("events", node, batch) to `to`; stops normally once it has seen `limit`
    events (when given)."""

    def init(self, arg):
        to, subs, *limit = arg
        self.to = to
        self.limit = limit[0] if limit else None
        return ("consumer", 0, {"subscribe_to": subs})

    def handle_events(self, events, from_, seen):
        pyotp.send(self.to, ("events", Node.self(), list(events)))
        seen += len(events)
        if self.limit is not None and seen >= self.limit:
            return ("stop", "normal", seen)
        return ("noreply", [], seen)

    def handle_cancel(self, reason, from_, st):
        pyotp.send(self.to, ("cancelled", reason))
        return ("noreply", [], st)


async def role_stages():
    await Numbers.start(None, name="remote_numbers")
    emit("ready", Node.self())
    await pyotp.receive(lambda m: m == "stop")


async def remote_consumer(to, producer_name, node, limit):
    """Runs on b: a consumer there subscribed to a producer on a, stopping after `limit`."""
    pid = await Collect.start((to, [((producer_name, node), {"max_demand": 10, "min_demand": 5})], limit))
    pyotp.send(to, ("consumer_up", pid))


@pytest.fixture(scope="module")
def peer():
    with NodeProc("b", role="test_gen_stage_dist:role_stages") as b:
        b.expect("ready")
        yield b


def run(main, *args):
    return run_node(main, *args, node=unique("a"), cookie=COOKIE)


async def collect(n):
    out, nodes = [], set()
    while len(out) < n:
        m = await pyotp.receive(lambda m: type(m) is tuple and m[0] == "events", 10)
        nodes.add(m[1])
        out += m[2]
    return out, nodes


def test_remote_producer_local_stages_keep_order_and_values(peer):
    async def main():
        sq = await Square.start_link([(("remote_numbers", peer.name), {"max_demand": 20})])
        await Collect.start_link((pyotp.self(), [(sq, {"max_demand": 7})]))
        got, nodes = await collect(200)
        return got[:200], nodes
    got, nodes = run(main)
    # the remote producer keeps counting from where earlier subscribers left it: squares of
    # consecutive ints, in order
    start = int(round(got[0] ** 0.5))
    assert got == [(start + i) ** 2 for i in range(200)]
    assert len(nodes) == 1 and nodes.pop().startswith("a")


def test_remote_consumer_back_pressure_over_the_wire(peer):
    async def main():
        me = pyotp.self()
        producer = await Numbers.start_link(me, name="local_numbers")
        await Node.spawn(peer.name, remote_consumer, me, "local_numbers", Node.self(), 100)
        consumer = (await pyotp.receive(lambda m: type(m) is tuple and m[0] == "consumer_up", 10))[1]
        ref = pyotp.monitor(consumer)
        got, nodes = await collect(100)
        await pyotp.receive(lambda m: type(m) is tuple and m[0] == "DOWN" and m[1] == ref, 10)
        # its asks came over the same connection before its exit: once the producer has
        # answered this call it has handled (and reported) every one of them
        emitted = await GenStage.call(producer, "n")
        demands = []
        while True:       # every demand the producer was sent, in order
            try:
                demands.append((await pyotp.receive(lambda m: type(m) is tuple and m[0] == "demand", 0))[1])
            except TimeoutError:
                break
        return got, nodes, demands, emitted
    got, nodes, demands, emitted = run(main)
    assert got == list(range(100))
    assert nodes == {peer.name}
    # max_demand first, then max - min each time min is reached; the producer emitted
    # exactly what was asked, and the consumer never asked beyond max_demand ahead
    assert demands[0] == 10 and set(demands[1:]) == {5}
    assert emitted == sum(demands) <= 100 + 10


def test_lost_producer_node_cancels_by_mode():
    with NodeProc("c", role="test_gen_stage_dist:role_stages") as c:
        c.expect("ready")

        async def main():
            pyotp.process_flag("trap_exit", True)
            me = pyotp.self()
            perm = await Collect.start_link((me, [(("remote_numbers", c.name), {"max_demand": 5})]))
            temp = await Collect.start_link((me, [(("remote_numbers", c.name),
                                                   {"max_demand": 5, "cancel": "temporary"})]))
            await collect(10)
            c.kill()
            ex = await pyotp.receive(lambda m: type(m) is tuple and m[0] == "EXIT" and m[1] == perm, 30)
            cancels = [(await pyotp.receive(lambda m: type(m) is tuple and m[0] == "cancelled", 30))[1]
                       for _ in range(2)]          # both consumers were told
            return ex[2], cancels, pyotp.is_alive(temp)
        reason, cancels, temp_alive = run(main)
    assert reason == "noconnection"
    assert cancels == [("down", "noconnection")] * 2
    assert temp_alive
