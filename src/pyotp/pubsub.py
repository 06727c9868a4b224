"""PubSub: topic-based publish/subscribe between processes, like Phoenix.PubSub.

A process subscribes itself to a topic; a broadcast on the topic is sent to every
subscriber as a plain message (no envelope: the subscriber receives ``message`` exactly).

>>> async def main():
...     await PubSub.start_link(name="Chat")
...     PubSub.subscribe("Chat", "room:lobby")
...     PubSub.broadcast("Chat", "room:lobby", ("new_msg", "ann", "hi"))
...     return await pyotp.receive()
>>> pyotp.run(main)
('new_msg', 'ann', 'hi')

It is built on a duplicate-key :class:`~pyotp.registry.Registry` named like the PubSub
(subscriptions are registry entries, so they vanish when the subscriber exits, and
``Registry.lookup(name, topic)`` lists the local subscribers). Subscribing twice delivers
each message twice, as in Phoenix. Broadcasting never waits and works from any thread: it
walks the topic's table in place and sends to each subscriber.

Across nodes (the seam the distribution layer plugs into): each PubSub also runs a server
process, registered locally as ``"<name>.Server"``. ``broadcast`` sends the message to
the local subscribers and then one ``("$pubsub_forward", topic, message, from_pid)``
message to every *remote member*: the PubSub servers of the same name on other nodes, as
listed by :func:`remote_members`. A server receiving a forward broadcasts it to its own
node's subscribers. Until distribution installs a provider with
:func:`set_remote_members_provider` (it will use process groups, ``pg``), there are no
remote members and broadcasts are local.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

from . import _core
from ._core import BadArg, StartError
from .gen_server import GenServer
from .registry import Registry, _get, _Reg

__all__ = ["PubSub", "remote_members", "set_remote_members_provider"]

_servers: Dict[str, Tuple[Any, _Reg]] = {}   # pubsub name -> (server pid, its registry)
_remote_provider: Optional[Callable[[str], List[Any]]] = None
_send = _core.send


def set_remote_members_provider(provider: Optional[Callable[[str], List[Any]]]) -> None:
    """Installed by the distribution layer: ``provider(pubsub_name)`` returns the
    addresses (pids or ``(name, node)``) of the PubSub servers with that name on the
    other nodes. ``None`` makes every PubSub local again.

    >>> set_remote_members_provider(lambda name: pg.get_members(("pubsub", name)))
    """
    global _remote_provider
    _remote_provider = provider


def remote_members(pubsub: str) -> List[Any]:
    """The PubSub servers named ``pubsub`` on other nodes that broadcasts are forwarded
    to ([] on a node without distribution).

    >>> remote_members("Chat")
    []
    """
    if _remote_provider is None:
        return []
    return list(_remote_provider(pubsub))


def _check(pubsub: Any) -> _Reg:
    entry = _servers.get(pubsub) if type(pubsub) is str else None
    if entry is None or not _core.is_alive(entry[0]) or not _core.is_alive(entry[1].pid):
        raise BadArg("unknown PubSub: %r" % (pubsub,))
    return entry[1]


def _local(pubsub: str, topic: Any, message: Any, from_pid: Any) -> None:
    """Send to the local subscribers of `topic`, except `from_pid`. Reads the registry's
    tables in place, through each partition's cached snapshot tuple of the topic's entries
    (see registry._Part), so a subscription changed meanwhile, even from another thread,
    cannot break the loop."""
    send = _send
    for part in _check(pubsub).parts:
        entries = part.entries(topic)
        if from_pid is None:
            for e in entries:
                send(e[0], message)
        else:
            for e in entries:
                if e[0] != from_pid:
                    send(e[0], message)


def _forward(pubsub: str, topic: Any, message: Any, from_pid: Any) -> None:
    if _remote_provider is None:
        return
    fwd = ("$pubsub_forward", topic, message, from_pid)
    for member in remote_members(pubsub):
        try:
            _send(member, fwd)
        except BadArg:       # a node that just went away: its members are gone with it
            pass


class _Server(GenServer):
    """Owns the PubSub: starts its registry (linked) and takes broadcasts forwarded by
    the same PubSub on other nodes."""

    async def init(self, arg: Any) -> Any:
        name, partitions = arg
        try:
            await Registry.start_link(keys="duplicate", name=name, partitions=partitions)
        except StartError as e:            # e.g. a Registry already has this name
            return ("stop", e.reason)
        _servers[name] = (_core.self(), _get(name))
        return ("ok", name)

    def handle_info(self, msg: Any, name: str) -> Any:
        if type(msg) is tuple and len(msg) == 4 and msg[0] == "$pubsub_forward":
            _local(name, msg[1], msg[2], msg[3])
        return ("noreply", name)

    def terminate(self, reason: Any, name: str) -> Any:
        entry = _servers.get(name)
        if entry is not None and entry[0] == _core.self():
            del _servers[name]
        return "ok"


class PubSub:
    """Phoenix.PubSub-style publish/subscribe; every function takes the PubSub's name.

    >>> pid = await PubSub.start_link(name="Chat2")
    >>> PubSub.subscribe("Chat2", "room:lobby")
    'ok'
    >>> PubSub.broadcast_from("Chat2", pyotp.self(), "room:lobby", "hello, others")
    'ok'
    """

    @staticmethod
    async def start_link(arg: Any = None, *, name: Optional[str] = None,
                         partitions: int = 1) -> Any:
        """Start a PubSub linked to the caller; returns its server's pid. ``name`` (a
        non-empty str) is how the other functions find it; it may also be given as
        ``arg`` (a str, or a dict of options: the ``(PubSub, ...)`` child-spec shorthand).

        >>> pid = await PubSub.start_link(name="Chat2")
        """
        return await _start(True, arg, name, partitions)

    @staticmethod
    async def start(arg: Any = None, *, name: Optional[str] = None, partitions: int = 1) -> Any:
        """Like start_link, without the link.

        >>> pid = await PubSub.start(name="Chat2")
        """
        return await _start(False, arg, name, partitions)

    @staticmethod
    def child_spec(arg: Any) -> Dict[str, Any]:
        """The child spec for ``(PubSub, "Name")`` or ``(PubSub, {"name": ..., ...})`` in a
        supervisor: id the PubSub's name, type supervisor (as Phoenix.PubSub).

        >>> sup = await Supervisor.start_link([(PubSub, "Chat2")], strategy="one_for_one")
        """
        name = arg.get("name") if isinstance(arg, dict) else arg
        return {"id": name if name is not None else PubSub,
                "start": (PubSub.start_link, (arg,)), "type": "supervisor"}

    @staticmethod
    async def stop(pubsub: str, reason: Any = "normal", timeout: Optional[float] = None) -> str:
        """Stop the PubSub (and its registry).

        >>> await PubSub.stop("Chat")
        'ok'
        """
        _check(pubsub)
        return await GenServer.stop(_servers[pubsub][0], reason, timeout)

    @staticmethod
    def subscribe(pubsub: str, topic: Any, metadata: Any = None) -> str:
        """Subscribe the calling process to ``topic``: it will receive every message
        broadcast on it. ``metadata`` is stored with the subscription (visible through
        ``Registry.lookup(pubsub, topic)``).

        >>> PubSub.subscribe("Chat", "room:lobby")
        'ok'
        """
        _check(pubsub)
        Registry.register(pubsub, topic, metadata)
        return "ok"

    @staticmethod
    def unsubscribe(pubsub: str, topic: Any) -> str:
        """Remove the calling process's subscriptions to ``topic``.

        >>> PubSub.unsubscribe("Chat", "room:lobby")
        'ok'
        """
        _check(pubsub)
        Registry.unregister(pubsub, topic)
        return "ok"

    @staticmethod
    def broadcast(pubsub: str, topic: Any, message: Any) -> str:
        """Send ``message`` to every subscriber of ``topic``, on this node and (once
        distribution is on) on the others. Never waits.

        >>> PubSub.broadcast("Chat", "room:lobby", ("new_msg", "ann", "hi"))
        'ok'
        """
        _local(pubsub, topic, message, None)
        _forward(pubsub, topic, message, None)
        return "ok"

    @staticmethod
    def broadcast_from(pubsub: str, from_pid: Any, topic: Any, message: Any) -> str:
        """Like broadcast, but not to ``from_pid`` (usually the sender itself).

        >>> PubSub.broadcast_from("Chat", pyotp.self(), "room:lobby", "to the others")
        'ok'
        """
        _local(pubsub, topic, message, from_pid)
        _forward(pubsub, topic, message, from_pid)
        return "ok"

    @staticmethod
    def local_broadcast(pubsub: str, topic: Any, message: Any) -> str:
        """Broadcast to the subscribers on this node only.

        >>> PubSub.local_broadcast("Chat", "room:lobby", "local news")
        'ok'
        """
        _local(pubsub, topic, message, None)
        return "ok"

    @staticmethod
    def local_broadcast_from(pubsub: str, from_pid: Any, topic: Any, message: Any) -> str:
        """local_broadcast, except to ``from_pid``.

        >>> PubSub.local_broadcast_from("Chat", pyotp.self(), "room:lobby", "local, not me")
        'ok'
        """
        _local(pubsub, topic, message, from_pid)
        return "ok"

    @staticmethod
    def direct_broadcast(node: str, pubsub: str, topic: Any, message: Any) -> str:
        """Broadcast to the subscribers on ``node`` only (this node, or a connected one:
        the message goes to that node's ``"<pubsub>.Server"``).

        >>> PubSub.direct_broadcast(pyotp.local_node(), "Chat", "room:lobby", "hi")
        'ok'
        """
        if node == _core.local_node():
            _local(pubsub, topic, message, None)
        else:
            _send((pubsub + ".Server", node), ("$pubsub_forward", topic, message, None))
        return "ok"

    @staticmethod
    def node_name(pubsub: str) -> str:
        """The node this PubSub runs on.

        >>> PubSub.node_name("Chat")
        'nonode@nohost'
        """
        _check(pubsub)
        return str(_core.local_node())


async def _start(link: bool, arg: Any, name: Optional[str], partitions: int) -> Any:
    if isinstance(arg, str):
        name = arg
    elif isinstance(arg, dict):
        unknown = set(arg) - {"name", "partitions"}
        if unknown:
            raise TypeError("PubSub.start_link: unknown options %s" % sorted(unknown))
        name = arg.get("name", name)
        partitions = arg.get("partitions", partitions)
    elif arg is not None:
        raise TypeError("PubSub.start_link: arg must be a name or a dict of options, got %r"
                        % (arg,))
    if not isinstance(name, str) or not name:
        raise BadArg("PubSub.start_link: name must be a non-empty str, got %r" % (name,))
    if type(partitions) is not int or partitions < 1:
        raise BadArg("PubSub.start_link: partitions must be a positive int, got %r"
                     % (partitions,))
    starter = _Server.start_link if link else _Server.start
    return await starter((name, partitions), name=name + ".Server")
