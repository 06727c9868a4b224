"""Remote procedure calls, Erlang's ``rpc`` module: run ``module.function(*args)`` on
another node (pyotp or Erlang) and get the result.

Results follow ``rpc:call``: the function's value, or ``("badrpc", reason)`` where reason is
``"nodedown"``, ``"timeout"``, ``("EXIT", exit_reason)`` or, for an exception,
``("EXIT", (exception, stacktrace))``. A module that does not exist, or a function it
lacks, gives ``("EXIT", ("undef", [(module, function, args, [])]))``, as in Erlang.

The request travels as Erlang's ``erpc`` does (SPAWN_REQUEST of ``erpc:execute_call/4``
with a monitor), so the same call works against OTP 23+ nodes and pyotp nodes. A pyotp
node runs the function in a fresh process; an ``async def`` function is awaited. Only
modules in the target's ``rpc_allow`` list may run when it set one.

Durations are seconds; ``timeout=None`` waits forever.

>>> await rpc.call("b@127.0.0.1", "math", "factorial", [20])
2432902008176640000
>>> await rpc.call("erl@127.0.0.1", "erlang", "node", [])
Atom('erl@127.0.0.1')
"""
from __future__ import annotations

import asyncio
from typing import Any, Iterable, List, Optional, Sequence, Tuple

from .. import _core
from .node import A_BADRPC, A_NODEDOWN, A_TIMEOUT, _external_call, kernel


def _check(node: Any, module: Any, function: Any, args: Any) -> None:
    if not isinstance(node, str) or "@" not in node:
        raise ValueError("rpc: %r is not a node name" % (node,))
    if not isinstance(module, str) or not isinstance(function, str):
        raise TypeError("rpc: module and function must be str (got %r, %r)" % (module, function))
    if not isinstance(args, (list, tuple)):
        raise TypeError("rpc: args must be a list, got %r" % (args,))


async def call(node: str, module: str, function: str, args: Sequence[Any] = (),
               timeout: Optional[float] = None) -> Any:
    """``rpc:call``: ``module.function(*args)`` on ``node``; the result or
    ``("badrpc", reason)`` (see the module documentation).

    >>> await rpc.call("b@127.0.0.1", "os", "getpid", [], timeout=5)
    12345
    """
    _check(node, module, function, args)
    return await kernel().rpc_call(node, module, function, list(args), timeout)


def cast(node: str, module: str, function: str, args: Sequence[Any] = ()) -> bool:
    """``rpc:cast``: run ``module.function(*args)`` on ``node``, ignore the result.
    Returns True at once.

    >>> rpc.cast("b@127.0.0.1", "logging", "warning", ["hello"])
    True
    """
    _check(node, module, function, args)
    kernel().rpc_cast(node, module, function, list(args))
    return True


async def multicall(nodes: Iterable[str], module: str, function: str, args: Sequence[Any] = (),
                    timeout: Optional[float] = None) -> Tuple[List[Any], List[str]]:
    """``rpc:multicall``: call every node concurrently. Returns ``(results, bad_nodes)``:
    results of the nodes that answered, in the order of ``nodes``; ``bad_nodes`` are the
    nodes that were down or did not answer in time.

    >>> await rpc.multicall(["b@127.0.0.1", "c@127.0.0.1"], "os", "getpid", [])
    ([101, 102], [])
    """
    nodes = list(nodes)
    for n in nodes:
        _check(n, module, function, args)
    k = kernel()
    tasks = [asyncio.ensure_future(k.rpc_call(n, module, function, list(args), timeout)) for n in nodes]
    res = await asyncio.gather(*tasks)
    good, bad = [], []
    for n, r in zip(nodes, res):
        if type(r) is tuple and len(r) == 2 and r[0] == A_BADRPC and r[1] in (A_NODEDOWN, A_TIMEOUT):
            bad.append(n)
        else:
            good.append(r)
    return good, bad


async def multi_call(nodes: Iterable[str], name: str, request: Any,
                     timeout: Optional[float] = None) -> Tuple[List[Tuple[str, Any]], List[str]]:
    """``gen_server:multi_call``: call the server registered as ``name`` on every node,
    concurrently. Returns ``(replies, bad_nodes)`` where replies are ``(node, reply)``
    pairs and bad_nodes the nodes where the call failed (no server, node down, timeout).

    >>> await multi_call(["b@127.0.0.1", "c@127.0.0.1"], "counter", "get", timeout=5)
    ([('b@127.0.0.1', 1), ('c@127.0.0.1', 7)], [])
    """
    nodes = list(nodes)
    if not isinstance(name, str):
        raise TypeError("multi_call: name must be a registered name (str), got %r" % (name,))

    async def one(n: str) -> Any:
        try:
            k = kernel()
            if n != k.name and not await k.connect(n):
                return _FAILED
            return await _external_call((name, n), request, timeout)
        except _core.Exit:
            return _FAILED

    res = await asyncio.gather(*[asyncio.ensure_future(one(n)) for n in nodes])
    replies = [(n, r) for n, r in zip(nodes, res) if r is not _FAILED]
    bad = [n for n, r in zip(nodes, res) if r is _FAILED]
    return replies, bad


_FAILED = object()


def abcast(nodes: Iterable[str], name: str, request: Any) -> str:
    """``gen_server:abcast``: cast ``request`` to the server registered as ``name`` on
    every node. Returns "abcast".

    >>> abcast(["b@127.0.0.1", "c@127.0.0.1"], "counter", "inc")
    'abcast'
    """
    for n in nodes:
        _core.cast((name, n), request)
    return "abcast"
