"""pyotp.run(main, node=..., cookie=...) starts a distributed node around main."""
import os

import pytest

import pyotp


def test_run_with_a_node_name():
    name = "runnode%d@127.0.0.1" % os.getpid()

    async def main():
        return str(pyotp.Node.self()), str(pyotp.self().node)
    assert pyotp.run(main, node=name, cookie="pyotp-test-cookie") == (name, name)
    # afterwards the process is an undistributed node again
    async def plain():
        return str(pyotp.self().node)
    assert pyotp.run(plain) == "nonode@nohost"


def test_distribution_options_need_a_node_name():
    async def main():
        return 1
    with pytest.raises(TypeError, match="node="):
        pyotp.run(main, cookie="x")
