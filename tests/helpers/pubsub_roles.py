"""Child-node code for tests/distribution/test_dist_pubsub.py (kept free of pytest, like dist_roles)."""
import pyotp
from pyotp import PubSub
from pyotp.dist import Node
from dist_helpers import emit


async def subscriber(topic, tag):
    PubSub.subscribe("dps", topic)
    pyotp.send("ready_waiter", tag)
    while True:
        emit("got", await pyotp.receive())


async def role_pubsub_node(topic):
    await PubSub.start_link(name="dps")
    pyotp.register("ready_waiter", pyotp.self())
    pyotp.spawn(subscriber, topic, "s1")
    pyotp.spawn(subscriber, topic, "s2")
    for _ in range(2):
        await pyotp.receive()
    emit("ready", Node.self())
    await pyotp.receive(lambda m: m == "stop")


def broadcast(topic, msg):
    PubSub.broadcast("dps", topic, msg)
    return "ok"
