"""Registry: a local, scalable key -> process store, as Elixir's ``Registry``.

A registry maps keys to the processes that registered them, with a value per entry.
``keys="unique"`` allows one process per key (name lookups, ``via`` names);
``keys="duplicate"`` allows any number (pub/sub, dispatch to groups). When a process exits,
its entries go away.

>>> async def main():
...     await Registry.start_link(keys="unique", name="MyReg")
...     Registry.register("MyReg", "worker-1", {"role": "db"})
...     return Registry.lookup("MyReg", "worker-1")
>>> pyotp.run(main)
[(#PID<0.1.0>, {'role': 'db'})]

As a ``via`` module, ``("via", Registry, ("MyReg", key))`` names any behaviour::

    name = ("via", Registry, ("MyReg", "room:lobby"))
    await Room.start_link("lobby", name=name)
    await GenServer.call(name, "members")

How it works (and why reads are cheap)
--------------------------------------
The tables are plain dicts owned by the registry's partition processes but read *in place*
by whoever asks: ``lookup``, ``match``, ``dispatch``, ``keys``, ``count`` ... never send a
message. The node runs every process on one event-loop thread, so a read never sees a half
made write. Writes (``register``, ``unregister``, ``update_value``) are done in place too,
by the calling process, exactly as Elixir writes to its ETS tables from the caller.

Cleanup on exit: like Elixir, registering *links* the calling process to the registry
partition that owns its entries (the ``owner`` returned by ``register``); the partition
traps exits and removes every entry of a process when that process's ``EXIT`` arrives.
Until then, ``lookup``, ``match``, ``keys``, ``values``, ``select`` and ``via`` name
resolution already skip entries whose process is dead (``is_alive`` is checked during the
read), so they never show a dead owner. The two hot paths, ``dispatch`` (which PubSub's
broadcast also follows) and ``count`` (an O(1) counter, like Elixir's ETS size), take the
table as it is, as Elixir does: they may include such entries for that short while (a
message sent to a dead process is dropped).
A consequence of the link, as in Elixir: if the registry stops with an abnormal reason,
processes with entries in it receive that exit signal. Unregistering the last key of a
process unlinks it again.

Registering on behalf of another process (only ``via`` does this: a GenServer's name is
registered by its starter) writes the entry at once and asks the partition to link to the
new process; a process that is already dead by then gives the partition ``("EXIT", pid,
"noproc")``, which cleans up as well.

Partitions (``partitions=n``): unique keys are spread over n key tables by key hash and the
pid bookkeeping over n partition processes by pid hash; duplicate registries spread both by
pid, so a ``lookup`` or ``dispatch`` visits every partition (``dispatch`` calls its function
once per non-empty partition, as Elixir). With one event loop, partitions only spread
cleanup work; one is the right default.

``match`` patterns: a callable is a predicate called with each value; any other object is
compared with ``==``. Keys must be hashable.
"""
from __future__ import annotations

import itertools
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from . import _core
from ._core import BadArg
from .gen_server import GenServer

__all__ = ["Registry"]

Entry = Tuple[Any, Any]  # (pid, value)

_is_alive = _core.is_alive
_registries: Dict[str, "_Reg"] = {}
_entry_ids = itertools.count(1)


class _Part:
    """One partition's tables. ``keys``: unique: key -> (pid, value); duplicate:
    key -> {entry id: (pid, value)}. ``pids``: pid -> {token: key} where the token is the
    key (unique) or the entry id (duplicate). ``size`` counts the entries in ``keys``.

    Duplicate tables also keep, per key, a snapshot tuple of the entries for the hot
    readers (dispatch, PubSub broadcast): ``snap[key] = (ver, entries)`` is valid while
    ``ver`` equals the partition's ``ver``, which every change of a duplicate table bumps
    *after* changing it. A reader on another thread may race with a change: it reads
    ``ver``, builds the tuple, stores it; if a change slipped in, the stored ``ver`` is
    already old, so the next reader rebuilds. A stale snapshot is never taken as valid."""

    __slots__ = ("keys", "pids", "size", "pid", "ver", "snap")

    def __init__(self) -> None:
        self.keys: Dict[Any, Any] = {}
        self.pids: Dict[Any, Dict[Any, Any]] = {}
        self.size = 0
        self.pid: Any = None
        self.ver = 0
        self.snap: Dict[Any, Tuple[int, Tuple[Entry, ...]]] = {}

    def entries(self, key: Any) -> Tuple[Entry, ...]:
        """Duplicate tables: the entries under key, as a (cached) tuple."""
        s = self.snap.get(key)
        ver = self.ver
        if s is not None and s[0] == ver:
            return s[1]
        d = self.keys.get(key)
        if not d:
            if s is not None:
                self.snap.pop(key, None)
            return ()
        t = tuple(d.values())
        self.snap[key] = (ver, t)
        return t


class _Reg:
    __slots__ = ("name", "unique", "n", "parts", "meta", "pid")

    def __init__(self, name: str, unique: bool, n: int, meta: Dict[Any, Any]) -> None:
        self.name = name
        self.unique = unique
        self.n = n
        self.parts = [_Part() for _ in range(n)]
        self.meta = dict(meta)
        self.pid: Any = None

    def key_part(self, key: Any, pid: Any) -> _Part:
        if self.n == 1:
            return self.parts[0]
        return self.parts[hash(key if self.unique else pid) % self.n]

    def pid_part(self, pid: Any) -> _Part:
        if self.n == 1:
            return self.parts[0]
        return self.parts[hash(pid) % self.n]


def _get(registry: Any) -> _Reg:
    reg = _registries.get(registry) if type(registry) is str else None
    if reg is None or not _is_alive(reg.pid):
        raise BadArg("unknown registry: %r" % (registry,))
    return reg


def _matcher(pattern: Any) -> Callable[[Any], bool]:
    if callable(pattern):
        return pattern  # type: ignore[no-any-return]
    return lambda v: v == pattern


# ---------------------------------------------------------------------------------------
# The write paths (caller side)

def _insert(reg: _Reg, key: Any, value: Any, pid: Any, link_self: bool) -> Any:
    kp = reg.key_part(key, pid)
    pp = reg.pid_part(pid)
    if reg.unique:
        cur = kp.keys.get(key)
        if cur is not None:
            if _is_alive(cur[0]):
                return ("error", ("already_registered", cur[0]))
            _drop_unique(reg, kp, key, cur[0])   # its owner died; the EXIT is still queued
        kp.keys[key] = (pid, value)
        token = key
    else:
        token = next(_entry_ids)
        d = kp.keys.get(key)
        if d is None:
            d = kp.keys[key] = {}
        d[token] = (pid, value)
        kp.ver += 1
    kp.size += 1
    toks = pp.pids.get(pid)
    if toks is None:
        toks = pp.pids[pid] = {}
        if link_self:
            _core.link(pp.pid)
        else:
            _core.send(pp.pid, ("$registry_link", pid))
    toks[token] = key
    return ("ok", pp.pid)


def _drop_unique(reg: _Reg, kp: _Part, key: Any, pid: Any) -> None:
    del kp.keys[key]
    kp.size -= 1
    pp = reg.pid_part(pid)
    toks = pp.pids.get(pid)
    if toks is not None:
        toks.pop(key, None)
        if not toks:
            del pp.pids[pid]


def _remove(reg: _Reg, key: Any, pid: Any, pred: Optional[Callable[[Any], bool]],
            unlink: bool) -> None:
    """Remove pid's entries under key (those whose value satisfies pred, if given)."""
    kp = reg.key_part(key, pid)
    pp = reg.pid_part(pid)
    toks = pp.pids.get(pid)
    if reg.unique:
        cur = kp.keys.get(key)
        if cur is not None and cur[0] == pid and (pred is None or pred(cur[1])):
            del kp.keys[key]
            kp.size -= 1
            if toks is not None:
                toks.pop(key, None)
    elif toks is not None:
        d = kp.keys.get(key)
        for eid, k in list(toks.items()):
            if k == key and d is not None:
                e = d.get(eid)
                if e is not None and (pred is None or pred(e[1])):
                    del d[eid]
                    del toks[eid]
                    kp.size -= 1
        if d is not None and not d:
            del kp.keys[key]
            kp.snap.pop(key, None)
        kp.ver += 1
    if toks is not None and not toks:
        del pp.pids[pid]
        if unlink:
            _core.unlink(pp.pid)


def _cleanup(reg: _Reg, pp: _Part, pid: Any) -> None:
    """Partition side: pid exited; remove every entry it still owns."""
    toks = pp.pids.pop(pid, None)
    if not toks:
        return
    if reg.unique:
        for key in toks:
            kp = reg.key_part(key, pid)
            cur = kp.keys.get(key)
            if cur is not None and cur[0] == pid:
                del kp.keys[key]
                kp.size -= 1
    else:
        for eid, key in toks.items():       # duplicate: the key table is pp's own
            d = pp.keys.get(key)
            if d is not None and d.pop(eid, None) is not None:
                pp.size -= 1
                if not d:
                    del pp.keys[key]
                    pp.snap.pop(key, None)
        pp.ver += 1


def _me(what: str) -> Any:
    try:
        return _core.self()
    except _core.CallbackError:
        raise _core.CallbackError("Registry.%s registers the calling process: call it "
                                  "inside a pyotp process" % what) from None


# ---------------------------------------------------------------------------------------
# The processes

class _Partition(GenServer):
    """Owns one partition: links to the processes with entries in it, cleans up after
    them. Plain def callbacks (the core's fast path)."""

    def init(self, arg: Any) -> Any:
        reg, part = arg
        part.pid = _core.self()
        _core.process_flag("trap_exit", True)
        self._reg = reg
        return ("ok", part)

    def handle_info(self, msg: Any, part: _Part) -> Any:
        if type(msg) is tuple and len(msg) >= 2:
            if msg[0] == "EXIT":
                _cleanup(self._reg, part, msg[1])
                return ("noreply", part)
            if msg[0] == "$registry_link":
                pid = msg[1]
                if pid in part.pids:         # still registered: link to clean up after it
                    if _is_alive(pid):
                        _core.link(pid)
                    else:
                        _cleanup(self._reg, part, pid)
                return ("noreply", part)
        return ("noreply", part)

    def handle_call(self, req: Any, from_: Any, part: _Part) -> Any:
        return ("reply", "ok", part)         # "sync": every earlier EXIT has been handled


class _Root(GenServer):
    """The registry's named process: starts the partitions (linked, trapping exits) and
    publishes the tables; stopping it stops them and makes the registry unknown."""

    async def init(self, reg: _Reg) -> Any:
        _core.process_flag("trap_exit", True)
        reg.pid = _core.self()
        for part in reg.parts:
            await _Partition.start_link((reg, part))
        self._reg = reg
        _registries[reg.name] = reg
        return ("ok", reg)

    def handle_info(self, msg: Any, reg: _Reg) -> Any:
        if type(msg) is tuple and len(msg) == 3 and msg[0] == "EXIT":
            if any(p.pid == msg[1] for p in reg.parts):
                return ("stop", msg[2], reg)          # a partition died: so does the registry
        return ("noreply", reg)

    def handle_call(self, req: Any, from_: Any, reg: _Reg) -> Any:
        return ("reply", "ok", reg)

    def terminate(self, reason: Any, reg: _Reg) -> Any:
        if _registries.get(reg.name) is reg:
            del _registries[reg.name]
        return "ok"


# ---------------------------------------------------------------------------------------
# The API

class Registry:
    """Elixir's Registry; every function takes the registry's name. See the module doc.

    >>> await Registry.start_link(keys="duplicate", name="Topics")
    #PID<...>
    >>> Registry.register("Topics", "news", None)
    ('ok', #PID<...>)
    >>> Registry.dispatch("Topics", "news", lambda entries: [pyotp.send(p, "hi") for p, _ in entries])
    'ok'
    >>> await pyotp.receive()
    'hi'
    """

    @staticmethod
    async def start_link(arg: Optional[Dict[str, Any]] = None, *, keys: Optional[str] = None,
                         name: Optional[str] = None, partitions: int = 1,
                         meta: Union[Dict[Any, Any], Sequence[Tuple[Any, Any]], None] = None) -> Any:
        """Start a registry linked to the caller and return its pid. ``keys`` is
        ``"unique"`` or ``"duplicate"``, ``name`` (a str) is how every other function
        finds it; the options may also come as one dict ``arg`` (the ``(Registry, {...})``
        child-spec shorthand). ``meta`` seeds ``Registry.meta``: a dict, or Elixir's keyword
        list as a list of ``(key, value)`` pairs.

        >>> await Registry.start_link(keys="unique", name="Sessions", meta={"owner": "chat"})
        #PID<...>
        >>> Registry.meta("Sessions", "owner")
        ('ok', 'chat')
        """
        return await _start(True, arg, keys, name, partitions, meta)

    @staticmethod
    async def start(arg: Optional[Dict[str, Any]] = None, *, keys: Optional[str] = None,
                    name: Optional[str] = None, partitions: int = 1,
                    meta: Union[Dict[Any, Any], Sequence[Tuple[Any, Any]], None] = None) -> Any:
        """Like start_link, without the link.

        >>> await Registry.start(keys="unique", name="Sessions")
        #PID<...>
        """
        return await _start(False, arg, keys, name, partitions, meta)

    @staticmethod
    def child_spec(arg: Dict[str, Any]) -> Dict[str, Any]:
        """The child spec a supervisor uses for ``(Registry, {"keys": ..., "name": ...})``:
        id the registry's name (so one supervisor can run several), type supervisor, as
        Elixir's ``Registry.child_spec/1``.

        >>> Registry.child_spec({"keys": "unique", "name": "Sessions"})["id"]
        'Sessions'
        >>> await Supervisor.start_link([(Registry, {"keys": "unique", "name": "Sessions"})],
        ...                             strategy="one_for_one")
        #PID<...>
        >>> Registry.count("Sessions")
        0
        """
        if not isinstance(arg, dict):
            raise TypeError("Registry.child_spec expects a dict of options (keys, name, "
                            "partitions, meta), got %r" % (arg,))
        return {"id": arg.get("name", Registry), "start": (Registry.start_link, (arg,)),
                "type": "supervisor"}

    @staticmethod
    async def stop(registry: str, reason: Any = "normal", timeout: Optional[float] = None) -> str:
        """Stop the registry (its partitions too); its name becomes unknown.

        >>> await Registry.stop("MyReg")
        'ok'
        """
        return await GenServer.stop(_get(registry).pid, reason, timeout)

    # -- writes (by the calling process) -----------------------------------------------------

    @staticmethod
    def register(registry: str, key: Any, value: Any) -> Tuple[str, Any]:
        """Register the calling process under ``key`` with ``value``. Returns
        ``("ok", owner)`` (the partition process now linked to the caller) or, for a
        unique key held by a live process, ``("error", ("already_registered", pid))``.
        Duplicate registries accept the same key from the same process several times.

        >>> Registry.register("MyReg", "worker", 1)
        ('ok', #PID<...>)
        >>> Registry.register("MyReg", "worker", 2)
        ('error', ('already_registered', #PID<...>))
        """
        reg = _get(registry)
        result: Tuple[str, Any] = _insert(reg, key, value, _me("register"), True)
        return result

    @staticmethod
    def unregister(registry: str, key: Any) -> str:
        """Remove every entry of the calling process under ``key``; always ``"ok"``.

        >>> Registry.unregister("MyReg", "worker")
        'ok'
        """
        _remove(_get(registry), key, _me("unregister"), None, True)
        return "ok"

    @staticmethod
    def unregister_match(registry: str, key: Any, pattern: Any) -> str:
        """Remove the calling process's entries under ``key`` whose value matches
        ``pattern`` (a predicate, or a value compared with ==); always ``"ok"``.

        >>> await Registry.start_link(keys="duplicate", name="Topics")
        #PID<...>
        >>> _ = Registry.register("Topics", "news", {"lang": "fr"})
        >>> _ = Registry.register("Topics", "news", {"lang": "en"})
        >>> Registry.unregister_match("Topics", "news", lambda v: v["lang"] == "fr")
        'ok'
        >>> Registry.values("Topics", "news", pyotp.self())
        [{'lang': 'en'}]
        """
        _remove(_get(registry), key, _me("unregister_match"), _matcher(pattern), True)
        return "ok"

    @staticmethod
    def update_value(registry: str, key: Any, fn: Callable[[Any], Any]) -> Any:
        """For a unique registry: replace the value of the caller's entry ``key`` with
        ``fn(old)`` and return ``(new, old)``, or ``"error"`` if the caller does not hold
        ``key``.

        >>> _ = Registry.register("MyReg", "worker", 1)
        >>> Registry.update_value("MyReg", "worker", lambda n: n + 1)
        (2, 1)
        """
        reg = _get(registry)
        if not reg.unique:
            raise BadArg("Registry.update_value is not supported for duplicate registries")
        me = _me("update_value")
        kp = reg.key_part(key, me)
        cur = kp.keys.get(key)
        if cur is None or cur[0] != me:
            return "error"
        new = fn(cur[1])
        kp.keys[key] = (me, new)
        return (new, cur[1])

    # -- reads (no message, from any process on the node) -----------------------------------

    @staticmethod
    def lookup(registry: str, key: Any) -> List[Entry]:
        """The ``(pid, value)`` entries under ``key`` (at most one for unique keys).

        >>> _ = Registry.register("MyReg", "worker", 1)
        >>> Registry.lookup("MyReg", "worker") == [(pyotp.self(), 1)]
        True
        >>> Registry.lookup("MyReg", "nobody")
        []
        """
        reg = _registries.get(registry)         # _get, inlined: the hot path
        if reg is None or not _is_alive(reg.pid):
            reg = _get(registry)                # raises the right error
        if reg.unique:
            e = (reg.parts[0] if reg.n == 1 else reg.parts[hash(key) % reg.n]).keys.get(key)
            if e is None or not _is_alive(e[0]):
                return []
            return [e]
        out: List[Entry] = []
        for part in reg.parts:
            d = part.keys.get(key)
            if d:
                out += [e for e in d.values() if _is_alive(e[0])]
        return out

    @staticmethod
    def match(registry: str, key: Any, pattern: Any) -> List[Entry]:
        """The entries under ``key`` whose value matches ``pattern`` (a callable
        predicate on the value, or any other object compared with ==).

        >>> await Registry.start_link(keys="duplicate", name="Topics")
        #PID<...>
        >>> _ = Registry.register("Topics", "news", {"lang": "en"})
        >>> _ = Registry.register("Topics", "news", {"lang": "fr"})
        >>> Registry.match("Topics", "news", lambda v: v["lang"] == "en")
        [(#PID<...>, {'lang': 'en'})]
        """
        pred = _matcher(pattern)
        return [e for e in Registry.lookup(registry, key) if pred(e[1])]

    @staticmethod
    def count_match(registry: str, key: Any, pattern: Any) -> int:
        """How many entries ``match`` would return.

        >>> await Registry.start_link(keys="duplicate", name="Topics")
        #PID<...>
        >>> _ = Registry.register("Topics", "news", {"lang": "en"})
        >>> _ = Registry.register("Topics", "news", {"lang": "fr"})
        >>> Registry.count_match("Topics", "news", {"lang": "en"})
        1
        """
        return len(Registry.match(registry, key, pattern))

    @staticmethod
    def keys(registry: str, pid: Any) -> List[Any]:
        """The keys ``pid`` is registered under ([] if it is dead); a duplicate registry
        lists a key once per registration.

        >>> _ = Registry.register("MyReg", "worker", 1)
        >>> Registry.keys("MyReg", pyotp.self())
        ['worker']
        """
        reg = _get(registry)
        if not _is_alive(pid):
            return []
        toks = reg.pid_part(pid).pids.get(pid)
        if not toks:
            return []
        return list(toks) if reg.unique else list(toks.values())

    @staticmethod
    def values(registry: str, key: Any, pid: Any) -> List[Any]:
        """The values ``pid`` registered under ``key``.

        >>> _ = Registry.register("MyReg", "worker", 1)
        >>> Registry.values("MyReg", "worker", pyotp.self())
        [1]
        """
        reg = _get(registry)
        if not _is_alive(pid):
            return []
        kp = reg.key_part(key, pid)
        if reg.unique:
            e = kp.keys.get(key)
            return [e[1]] if e is not None and e[0] == pid else []
        toks = reg.pid_part(pid).pids.get(pid)
        d = kp.keys.get(key)
        if not toks or not d:
            return []
        return [d[eid][1] for eid, k in toks.items() if k == key and eid in d]

    @staticmethod
    def count(registry: str) -> int:
        """The number of entries (O(1); may include entries of processes that just died
        and whose exit the registry has not handled yet).

        >>> _ = Registry.register("MyReg", "worker", 1)
        >>> Registry.count("MyReg")
        1
        """
        reg = _get(registry)
        return sum(p.size for p in reg.parts)

    @staticmethod
    def dispatch(registry: str, key: Any, fn: Callable[[List[Entry]], Any]) -> str:
        """Call ``fn(entries)`` with the ``(pid, value)`` entries under ``key``, in the
        calling process, once per partition that has any (never with an empty list).
        The entries are handed over as the table holds them, as in Elixir: a process that
        has just exited may still be among them until the registry has handled its exit
        (a message sent to it is simply dropped); ``lookup`` filters those out.

        >>> await Registry.start_link(keys="duplicate", name="Topics")
        #PID<...>
        >>> _ = Registry.register("Topics", "news", None)
        >>> Registry.dispatch("Topics", "news", lambda es: [pyotp.send(p, "hi") for p, _ in es])
        'ok'
        >>> await pyotp.receive()
        'hi'
        """
        reg = _get(registry)
        if reg.unique:
            e = reg.key_part(key, None).keys.get(key)
            if e is not None and _is_alive(e[0]):
                fn([e])
            return "ok"
        for part in reg.parts:
            t = part.entries(key)
            if t:
                fn(list(t))
        return "ok"

    @staticmethod
    def select(registry: str, predicate: Optional[Callable[[Any, Any, Any], bool]] = None
               ) -> List[Tuple[Any, Any, Any]]:
        """Every ``(key, pid, value)`` entry for which ``predicate(key, pid, value)`` is
        true (all of them without a predicate). It scans the whole registry.

        >>> _ = Registry.register("MyReg", "room:lobby", None)
        >>> _ = Registry.register("MyReg", "worker", 1)
        >>> Registry.select("MyReg", lambda k, pid, v: k.startswith("room:"))
        [('room:lobby', #PID<...>, None)]
        """
        reg = _get(registry)
        out: List[Tuple[Any, Any, Any]] = []
        for part in reg.parts:
            for key, e in list(part.keys.items()):
                for pid, value in ([e] if reg.unique else list(e.values())):
                    if _is_alive(pid) and (predicate is None or predicate(key, pid, value)):
                        out.append((key, pid, value))
        return out

    # -- registry metadata -------------------------------------------------------------------

    @staticmethod
    def meta(registry: str, key: Any) -> Any:
        """``("ok", value)`` for a metadata key given at start or by put_meta, else
        ``"error"``.

        >>> Registry.put_meta("MyReg", "owner", "chat")
        'ok'
        >>> Registry.meta("MyReg", "owner")
        ('ok', 'chat')
        >>> Registry.meta("MyReg", "nothing")
        'error'
        """
        m = _get(registry).meta
        return ("ok", m[key]) if key in m else "error"

    @staticmethod
    def put_meta(registry: str, key: Any, value: Any) -> str:
        """Store registry metadata.

        >>> Registry.put_meta("MyReg", "owner", "chat")
        'ok'
        """
        _get(registry).meta[key] = value
        return "ok"

    @staticmethod
    def delete_meta(registry: str, key: Any) -> str:
        """Remove a metadata key.

        >>> Registry.delete_meta("MyReg", "owner")
        'ok'
        """
        _get(registry).meta.pop(key, None)
        return "ok"

    # -- the via-module contract: ("via", Registry, (registry, key)) ------------------------

    @staticmethod
    def register_name(name: Tuple[Any, ...], pid: Any) -> str:
        """``via`` hook: register ``pid`` under ``(registry, key)`` (or ``(registry,
        key, value)``); ``"yes"`` or ``"no"``. Unique registries only.

        >>> Registry.register_name(("MyReg", "db"), pid)
        'yes'
        """
        registry, key, value = _via_key(name)
        reg = _get(registry)
        if not reg.unique:
            raise BadArg("via names need a unique registry; %r has duplicate keys" % (registry,))
        if type(pid) is not _core.Pid or pid.node != _core.local_node():
            raise BadArg("Registry.register_name: %r is not a local pid" % (pid,))
        me = _core.self() if _core_in_process() else None
        r = _insert(reg, key, value, pid, pid == me)
        return "yes" if r[0] == "ok" else "no"

    @staticmethod
    def unregister_name(name: Tuple[Any, ...]) -> str:
        """``via`` hook: free ``(registry, key)``, whoever holds it.

        >>> Registry.unregister_name(("MyReg", "db"))
        'ok'
        """
        registry, key, _ = _via_key(name)
        reg = _get(registry)
        e = reg.key_part(key, None).keys.get(key) if reg.unique else None
        if e is not None:
            me = _core.self() if _core_in_process() else None
            _remove(reg, key, e[0], None, e[0] == me)
        return "ok"

    @staticmethod
    def whereis_name(name: Tuple[Any, ...]) -> Any:
        """``via`` hook: the pid registered under ``(registry, key)``, or None.

        >>> Registry.register_name(("MyReg", "db"), pid)
        'yes'
        >>> Registry.whereis_name(("MyReg", "db")) == pid
        True
        >>> Registry.whereis_name(("MyReg", "nobody")) is None
        True
        """
        if type(name) is tuple and 2 <= len(name) <= 3:
            registry, key = name[0], name[1]
        else:
            registry, key, _ = _via_key(name)   # raises
        reg = _registries.get(registry)
        if reg is None or not _is_alive(reg.pid):
            reg = _get(registry)
        if not reg.unique:
            return None
        e = (reg.parts[0] if reg.n == 1 else reg.parts[hash(key) % reg.n]).keys.get(key)
        if e is None or not _is_alive(e[0]):
            return None
        return e[0]

    @staticmethod
    def send(name: Tuple[Any, ...], msg: Any) -> Any:
        """``via`` hook: send ``msg`` to the process under ``(registry, key)``; BadArg if
        there is none. Returns the pid.

        >>> _ = Registry.register("MyReg", "db", None)
        >>> Registry.send(("MyReg", "db"), "ping") == pyotp.self()
        True
        >>> await pyotp.receive()
        'ping'
        """
        pid = Registry.whereis_name(name)
        if pid is None:
            raise BadArg("Registry.send: no process is registered as %r" % (name,))
        _core.send(pid, msg)
        return pid

    @staticmethod
    async def _sync(registry: str) -> None:
        """Wait until every partition has handled what was queued to it (tests, docs:
        after it returns, entries of processes that exited before the call are gone and
        ``count`` is exact)."""
        reg = _get(registry)
        for part in reg.parts:
            await _core.call(part.pid, "sync", None)


def _core_in_process() -> bool:
    try:
        _core.self()
        return True
    except _core.CallbackError:
        return False


def _via_key(name: Any) -> Tuple[Any, Any, Any]:
    if type(name) is tuple and len(name) == 2:
        return name[0], name[1], None
    if type(name) is tuple and len(name) == 3:
        return name[0], name[1], name[2]
    raise BadArg("a Registry via name is (registry, key) or (registry, key, value), got %r"
                 % (name,))


async def _start(link: bool, arg: Optional[Dict[str, Any]], keys: Optional[str],
                 name: Optional[str], partitions: int, meta: Any) -> Any:
    if arg is not None:
        if not isinstance(arg, dict):
            raise TypeError("Registry.start_link: the positional argument is a dict of "
                            "options (keys, name, partitions, meta), got %r" % (arg,))
        unknown = set(arg) - {"keys", "name", "partitions", "meta"}
        if unknown:
            raise TypeError("Registry.start_link: unknown options %s" % sorted(unknown))
        keys = arg.get("keys", keys)
        name = arg.get("name", name)
        partitions = arg.get("partitions", partitions)
        meta = arg.get("meta", meta)
    if keys not in ("unique", "duplicate"):
        raise BadArg('Registry.start_link: keys must be "unique" or "duplicate", got %r' % (keys,))
    if not isinstance(name, str) or not name:
        raise BadArg("Registry.start_link: name must be a non-empty str, got %r" % (name,))
    if type(partitions) is not int or partitions < 1:
        raise BadArg("Registry.start_link: partitions must be a positive int, got %r"
                     % (partitions,))
    if meta is not None and not isinstance(meta, dict):
        # Elixir's `meta:` is a keyword list, [{key, value}]: a list of pairs
        if isinstance(meta, (list, tuple)) and all(
                isinstance(kv, tuple) and len(kv) == 2 for kv in meta):
            meta = dict(meta)
        else:
            raise BadArg("Registry.start_link: meta must be a dict or a list of (key, value) "
                         "pairs, got %r" % (meta,))
    reg = _Reg(name, keys == "unique", partitions, meta or {})
    if link:
        return await _Root.start_link(reg, name=name)
    return await _Root.start(reg, name=name)
