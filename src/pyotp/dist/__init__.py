"""pyotp distribution: connect pyotp nodes to each other and to Erlang/Elixir nodes.

Wire-compatible with Erlang's distribution protocol (EPMD, handshake version 6, the
External Term Format). Once a node is started, everything local works across nodes:
``pyotp.send`` to a remote pid or ``(name, node)``, ``GenServer.call``/``cast`` to remote
servers, links and monitors (a lost connection gives ``noconnection``), exit signals.
See docs/distribution.md for the type mapping and the wire extension.

With a second node ``b@127.0.0.1`` running (another pyotp node, or
``erl -name b@127.0.0.1 -setcookie secret``)::

    from pyotp.dist import Node, rpc, run_node

    async def main():
        print(await Node.ping("b@127.0.0.1"))                          # pong
        print(await rpc.call("b@127.0.0.1", "math", "sqrt", [16.0]))   # 4.0

    run_node(main, node="a@127.0.0.1", cookie="secret")
"""
from __future__ import annotations

import functools
from typing import Any, Awaitable, Callable, Optional, TypeVar, cast

from .. import _core, runtime
from . import rpc
from .epmd import EpmdError
from .handshake import HandshakeError
from .node import DistError, Node
from .rpc import abcast, multi_call

__all__ = ["Node", "rpc", "multi_call", "abcast", "run_node", "DistError", "EpmdError",
           "HandshakeError", "global_names", "pg"]


_T = TypeVar("_T")


def run_node(main: Callable[..., Awaitable[_T]], *args: Any, node: str, cookie: str,
             use_uvloop: Optional[bool] = None, shutdown_timeout: float = 5.0,
             max_mailbox: Any = None, **dist: Any) -> _T:
    """``pyotp.run`` for a distributed node: start distribution as ``node`` (keyword
    arguments as for ``Node.start``), run ``main(*args)`` as the first process, return
    its result; distribution stops before the other processes are shut down. If ``main``
    does not await ``Application.await_system_stop()``, a remote ``init:stop()`` (or
    ``python -m pyotp stop``) ends it with exit reason ``shutdown`` and this returns None.

    With a node ``b@127.0.0.1`` running::

        async def main():
            return await Node.ping("b@127.0.0.1")

        run_node(main, node="a@127.0.0.1", cookie="secret")     # -> 'pong'
    """
    from . import beam_api
    stopped: list = []  # type: ignore[type-arg]

    def stop_main(main_pid: Any, reason: Any) -> bool:
        # init:stop / halt when main does not await Application.await_system_stop()
        stopped.append(reason)
        _core.exit(main_pid, "shutdown")
        return True

    async def wrapper() -> Any:
        await Node.start(node, cookie=cookie, **dist)
        undo = beam_api.on_stop(functools.partial(stop_main, _core.self()))
        try:
            return await main(*args)
        finally:
            undo()
            Node.stop()

    try:
        result: _T = runtime.run(wrapper, use_uvloop=use_uvloop, shutdown_timeout=shutdown_timeout,
                                 max_mailbox=max_mailbox)
    except _core.Exit as e:
        if stopped and e.reason == "shutdown":
            # stopped on request (init:stop, halt): a normal end, with no result (typed as
            # main's, which is what a program not stopped from outside gets, as pyotp.run)
            return cast(_T, None)
        raise
    return result


from . import global_names, pg  # noqa: E402
