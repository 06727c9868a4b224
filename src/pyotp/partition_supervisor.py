"""PartitionSupervisor: many identical children, each owning a partition of the keys
(Elixir's ``PartitionSupervisor``), spread over the nodes of a local node pool.

``PartitionSupervisor.start_link(child_spec=..., name=..., partitions=None,
with_arguments=None, strategy="one_for_one", max_restarts=3, max_seconds=5)`` starts a
supervisor with ``partitions`` children (default: the number of nodes in this node's pool,
``pyotp.pool.pool_nodes()``, or 1 outside a pool), child ``i`` with id ``i``. In a pool,
partition ``i`` runs on pool node ``i % len(pool_nodes())`` (the head first): the
supervisor stays on this node and restarts it there, the child itself lives on its node
(a link across the pool keeps them bound, so a dead pool node is a dead child with reason
``noconnection``, restarted once its node is back). ``with_arguments(args, partition)``
returns the start arguments of each partition (Elixir's ``:with_arguments``).

Route to a partition with ``("via", PartitionSupervisor, (name, key))``: an int key picks
partition ``abs(key) % partitions``, any other key its stable hash (``pyotp.etf``'s term
hash of the key: the same partition in every run and on every node).

>>> async def main():
...     await PartitionSupervisor.start_link(child_spec=(Counter, 0), name="counters",
...                                          partitions=4)
...     GenServer.cast(("via", PartitionSupervisor, ("counters", "user:7")), 1)
...     n = await GenServer.call(("via", PartitionSupervisor, ("counters", "user:7")), "get")
...     return n, PartitionSupervisor.partitions("counters")
>>> pyotp.run(main)
(1, 4)
"""
from __future__ import annotations

import zlib
from typing import Any, Callable, Dict, List, Optional, Tuple, cast

from . import _core, pool
from ._core import BadArg, Pid
from .child_spec import _expand, child_spec
from .supervisor import Supervisor

__all__ = ["PartitionSupervisor"]

# name -> [partitions, pids by partition, partitions at start (resize's limit)]: routing
# reads it without a message
_tables: Dict[Any, List[Any]] = {}


def _term_hash(key: Any) -> int:
    """A hash that is the same in every process and run (Python's str hash is salted)."""
    from .etf import term_to_binary
    try:
        data = term_to_binary(key)
    except Exception:
        data = repr(key).encode()
    return zlib.crc32(data)


def _partition_of(key: Any, n: int) -> int:
    if isinstance(key, int) and not isinstance(key, bool):
        return abs(key) % n
    return _term_hash(key) % n


async def _start_partition(name: Any, index: int, node: Optional[str], fn: Callable[..., Any],
                           args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
    """A partition's start function (runs in the supervisor's process, at each start)."""
    if node is not None and pool.stopping():
        return None             # the pool is ending: nothing to restart on its nodes
    if node is None or node == str(_core.local_node()):
        r = await fn(*args, **kwargs) if kwargs else await fn(*args)
    else:
        r = await pool.start_link_on(node, fn, *args, **kwargs)
    pid = r[1] if isinstance(r, tuple) and len(r) == 2 and r[0] == "ok" else r
    t = _tables.get(name)
    if t is not None and isinstance(pid, Pid):
        t[1][index] = pid
    return r


class PartitionSupervisor:
    """Elixir's PartitionSupervisor (see the module documentation)."""

    @staticmethod
    async def start_link(*, child_spec: Any, name: Any, partitions: Optional[int] = None,
                         with_arguments: Optional[Callable[[List[Any], int], List[Any]]] = None,
                         strategy: str = "one_for_one", max_restarts: int = 3,
                         max_seconds: float = 5) -> Pid:
        """Start the partitions under one supervisor registered as ``name``; returns its
        pid. ValueError/TypeError for bad options; StartError if a partition fails.

        >>> sup = await PartitionSupervisor.start_link(child_spec=Counter, name="c")
        """
        if name is None:
            raise TypeError("PartitionSupervisor.start_link needs name=")
        nodes = pool.pool_nodes()
        if partitions is None:
            partitions = max(1, len(nodes))
        if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
            raise ValueError("partitions must be an int >= 1, got %r" % (partitions,))
        if with_arguments is not None and not callable(with_arguments):
            raise TypeError("with_arguments must be a function (args, partition) -> args")
        if name in _tables:
            raise _core.StartError(("already_started", _core.whereis(name) if isinstance(name, str) else None))
        base = _expand(child_spec)
        if not isinstance(base, dict) or "start" not in base:
            raise ValueError("child_spec must be a child spec or a shorthand, got %r" % (child_spec,))
        start = base["start"]
        fn, args = start[0], tuple(start[1]) if len(start) > 1 else ()
        kwargs = dict(start[2]) if len(start) > 2 else {}
        children = []
        for i in range(partitions):
            a = list(args)
            if with_arguments is not None:
                a = list(with_arguments(a, i))
            node = nodes[i % len(nodes)] if nodes else None
            spec = dict(base, id=i, start=(_start_partition, (name, i, node, fn, tuple(a), kwargs)))
            children.append(spec)
        _tables[name] = [partitions, [None] * partitions, partitions]
        try:
            sup = await Supervisor.start_link(children, strategy=strategy, max_restarts=max_restarts,
                                              max_seconds=max_seconds, name=name)
        except BaseException:
            _tables.pop(name, None)
            raise
        # the table goes with the supervisor
        _core.spawn(_forget_when_down, name, sup)
        return cast(Pid, sup)

    @staticmethod
    def child_spec(*, child_spec: Any, name: Any, **options: Any) -> Dict[str, Any]:
        """The spec to run a PartitionSupervisor under another supervisor.

        >>> PartitionSupervisor.child_spec(child_spec=Counter, name="c")["type"]
        'supervisor'
        """
        return {"id": name, "type": "supervisor", "shutdown": "infinity",
                "start": (_start_kw, (dict(options, child_spec=child_spec, name=name),))}

    @staticmethod
    def partitions(name: Any) -> int:
        """The number of partitions of ``name`` (BadArg if there is no such supervisor)."""
        return int(_table(name)[0])

    @staticmethod
    async def resize(name: Any, partitions: int) -> int:
        """Elixir 1.18's ``resize!``: run ``partitions`` partitions from now on, by stopping
        the highest ones or starting again those stopped before (their specs stay in the
        supervisor). At least 0, at most the number it was started with (ValueError
        otherwise; BadArg if there is no such supervisor). Returns the previous number.
        Keys route over the partitions that run: shrinking changes where keys go at once,
        before the partitions stop; growing, once the new ones run.

        >>> sup = await PartitionSupervisor.start_link(child_spec=(Counter, 0), name="rs",
        ...                                            partitions=4)
        >>> await PartitionSupervisor.resize("rs", 2)
        4
        """
        t = _table(name)
        if isinstance(partitions, bool) or not isinstance(partitions, int):
            raise TypeError("partitions must be an int, got %r" % (partitions,))
        if not 0 <= partitions <= t[2]:
            raise ValueError("partitions must be from 0 to %d (the number %r started with), got %d"
                             % (t[2], name, partitions))
        old = int(t[0])
        if partitions < old:
            t[0] = partitions
            for i in range(old - 1, partitions - 1, -1):
                await Supervisor.terminate_child(name, i)
                t[1][i] = None
        elif partitions > old:
            for i in range(old, partitions):
                await Supervisor.restart_child(name, i)
            t[0] = partitions
        return old

    @staticmethod
    async def which_children(name: Any) -> List[Tuple[Any, Any, str, Any]]:
        """The supervisor's children: ``[(partition, pid, type, modules)]``."""
        return await Supervisor.which_children(name)

    @staticmethod
    async def count_children(name: Any) -> Dict[str, int]:
        """``{"specs", "active", "supervisors", "workers"}`` (active: partitions with a
        running process, wherever it runs)."""
        counts = dict(await Supervisor.count_children(name))
        kids = await Supervisor.which_children(name)
        counts["active"] = sum(1 for k in kids if isinstance(k[1], Pid))
        return counts

    @staticmethod
    async def stop(name: Any, reason: Any = "normal", timeout: Optional[float] = None) -> str:
        return await Supervisor.stop(name, reason, timeout)

    # -- the via-module contract: ("via", PartitionSupervisor, (name, key)) ---------------

    @staticmethod
    def whereis_name(name_key: Tuple[Any, Any]) -> Any:
        name, key = _split(name_key)
        n, pids = _table(name)[:2]
        if n == 0:
            return None             # resized to no partitions
        pid = pids[_partition_of(key, n)]
        return pid if pid is not None and (pid.node != _core.local_node() or _core.is_alive(pid)) else None

    @staticmethod
    def send(name_key: Tuple[Any, Any], msg: Any) -> Any:
        pid = PartitionSupervisor.whereis_name(name_key)
        if pid is None:
            raise BadArg("no partition process for %r" % (name_key,))
        return _core.send(pid, msg)

    @staticmethod
    def register_name(name_key: Any, pid: Any) -> str:
        raise BadArg("PartitionSupervisor names are routed, not registered: %r" % (name_key,))

    @staticmethod
    def unregister_name(name_key: Any) -> None:
        return None


def _split(name_key: Any) -> Tuple[Any, Any]:
    if not isinstance(name_key, tuple) or len(name_key) != 2:
        raise BadArg("a PartitionSupervisor via name is (name, key), got %r" % (name_key,))
    return name_key[0], name_key[1]


def _table(name: Any) -> List[Any]:
    t = _tables.get(name)
    if t is None:
        raise BadArg("no PartitionSupervisor named %r on this node" % (name,))
    return t


async def _start_kw(options: Dict[str, Any]) -> Pid:
    return await PartitionSupervisor.start_link(**options)


async def _forget_when_down(name: Any, sup: Pid) -> None:
    ref = _core.monitor(sup)
    await _core.receive(lambda m: isinstance(m, tuple) and len(m) == 5 and m[0] == "DOWN" and m[1] == ref)
    if _tables.get(name) is not None:
        _tables.pop(name, None)
