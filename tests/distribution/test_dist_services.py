"""The kernel's services API (``NetKernel.add_service``): what global names, pg scopes
and service discovery plug in through."""
from __future__ import annotations

import pytest

import pyotp
from pyotp.dist import Node, rpc, run_node
from pyotp.dist.kernel import kernel
from dist_helpers import COOKIE, NodeProc, unique


def test_service_gets_its_messages_and_node_events():
    with NodeProc("b", role="dist_roles:role_peer") as b:
        b.expect("ready")

        async def main():
            k = kernel()
            me = pyotp.self()
            k.add_service("svc_test", on_message=lambda conn, msg: pyotp.send(me, ("msg", conn.peer, msg)),
                          on_nodeup=lambda node, conn: pyotp.send(me, ("up", node)),
                          on_nodedown=lambda node: pyotp.send(me, ("down", node)))
            errors = []
            for bad in (lambda: k.add_service("svc_test"), lambda: k.add_service(""),
                        lambda: k.add_service("x", on_message=5)):
                try:
                    bad()
                except (TypeError, ValueError) as e:
                    errors.append(type(e).__name__)
            assert await Node.connect(b.name)
            up = await pyotp.receive(timeout=10)
            await rpc.call(b.name, "pyotp", "send", [("svc_test", Node.self()), "hello"])
            msg = await pyotp.receive(timeout=10)
            Node.disconnect(b.name)
            down = await pyotp.receive(timeout=10)
            removed = (k.remove_service("svc_test"), k.remove_service("svc_test"),
                       "svc_test" in k.virtual)
            return up, msg, down, errors, removed

        up, msg, down, errors, removed = run_node(main, node=unique("a"), cookie=COOKIE)
        assert up == ("up", b.name)
        assert msg == ("msg", b.name, "hello")
        assert down == ("down", b.name)
        assert errors == ["ValueError", "TypeError", "TypeError"]
        assert removed == (True, False, False)


def test_builtin_services_are_registered():
    async def main():
        k = kernel()
        return sorted(k.services)
    names = run_node(main, node=unique("a"), cookie=COOKIE)
    from pyotp.dist import global_names, pg
    assert global_names.WIRE_NAME in names and pg.DEFAULT_SCOPE in names
