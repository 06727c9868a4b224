"""Code for the security tests (tests/distribution/test_dist_security.py), imported by the nodes in
their child processes. It imports ``os`` and ``os.system`` on purpose: an rpc naming
``sec_roles:system`` or ``sec_roles:os.system`` must not reach them."""
from __future__ import annotations

import os
from os import system  # noqa: F401  (the bait)

import pyotp
from pyotp.dist import Node
from dist_helpers import emit


def safe_add(a, b):
    return a + b


def _private(a):
    return a


async def role_allow():
    """A node with rpc_allow=["json", "sec_roles"] that waits to be stopped."""
    emit("ready", Node.self())
    await pyotp.receive(lambda m: m == "stop")


def marker_exists(path):
    return os.path.exists(path)
