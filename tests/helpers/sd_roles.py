"""Roles and rpc targets for tests/distribution/test_dist_service_discovery.py (run on child nodes by
dist_helpers.NodeProc as "sd_roles:<role>"; kept free of pytest)."""
from __future__ import annotations

import pyotp
from pyotp.dist import Node
from pyotp.service_discovery import ServiceDiscovery
from dist_helpers import emit, stdin_line


async def _instance(service, endpoint, metadata, report_to):
    await ServiceDiscovery.register(service, endpoint=endpoint, metadata=metadata)
    pyotp.send(report_to, ("registered", pyotp.self()))
    await pyotp.receive(lambda m: m == "never")


async def role_provider(service, n, join=""):
    """Start ServiceDiscovery and n registered instances of `service` (endpoint
    (node, i), metadata {"i": i}); optionally connect to `join` afterwards. Emits
    "ready" with the instances' pids once they are registered; then follows stdin:
    "stop" ends the node."""
    await ServiceDiscovery.start_link()
    me = pyotp.self()
    pids = [pyotp.spawn(_instance, service, (Node.self(), i), {"i": i}, me) for i in range(n)]
    for pid in pids:
        await pyotp.receive(lambda m, pid=pid: m == ("registered", pid), timeout=10)
    if join:
        assert await Node.connect(join)
    emit("ready", repr(pids))
    while True:
        line = await stdin_line()
        if line in ("stop", ""):
            return


async def discover(service):
    """rpc target: this node's view of `service`."""
    return await ServiceDiscovery.discover(service)
