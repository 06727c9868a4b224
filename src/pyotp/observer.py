"""Observer backend: what a node's processes and supervision trees look like now.

Everything here is plain data (lists, dicts, tuples, pids, strings), so it crosses the
distribution unchanged: another node reads it with
``await pyotp.dist.rpc.call(node, "pyotp.observer", "snapshot", [])``, as Erlang's
observer reads ``observer_backend`` on a remote node. The dashboard and ``python -m pyotp
top`` are built on these functions.

>>> import pyotp
>>> async def main():
...     snap = pyotp.observer.snapshot(top=5)
...     return sorted(snap["node"]), len(snap["top"]) <= 5
>>> pyotp.run(main)
(['connections', 'dispatched', 'memory', 'name', 'processes', 'run_queue', 'timers'], True)
"""
from typing import Any, Dict, List, Optional

from . import _core
from .supervisor import Supervisor

__all__ = ["SORT_KEYS", "snapshot", "top", "process", "process_page", "supervision_tree",
           "trees", "node_info", "connections"]

_SUPERVISORS = ("_SupervisorServer", "_DynamicSupervisorServer")

#: keys the process table can be sorted by (largest first)
SORT_KEYS = ("message_queue_len", "reductions", "memory", "messages_received")

_ROW_KEYS = ["registered_name", "status", "message_queue_len", "reductions", "memory",
             "messages_received", "behaviour", "initial_call", "parent"]


def connections() -> List[Dict[str, Any]]:
    """This node's distribution connections that are up, one dict each: ``node``,
    ``hidden``, ``pyotp`` (the peer is a pyotp node, not BEAM) and the channel's traffic
    counters ``bytes_in``, ``bytes_out``, ``msgs_in``, ``msgs_out`` (``DistChannel.stats()``).
    Empty when the node is not distributed."""
    from .dist import node as _dist_node
    k = getattr(_dist_node, "_kernel", None)
    if k is None:
        return []
    out = []
    for name, c in list(k.conns.items()):
        ch = getattr(c, "ch", None)
        if ch is None or not ch.up:
            continue
        row: Dict[str, Any] = {"node": str(name), "hidden": bool(c.hidden), "pyotp": bool(c.pyotp)}
        row.update(ch.stats())
        out.append(row)
    out.sort(key=lambda r: r["node"])
    return out


def node_info() -> Dict[str, Any]:
    """This node's counters (see ``_core.node_stats``), its name, ``memory`` (the sum
    of the processes' estimates, bytes) and ``connections`` (see ``connections()``)."""
    info: Dict[str, Any] = dict(_core.node_stats())
    info["memory"] = sum((_core.process_info(p, ["memory"]) or {"memory": 0})["memory"]
                         for p in _core.processes())
    info["name"] = str(_core.local_node())
    info["connections"] = connections()
    return info


async def trees() -> List[Dict[str, Any]]:
    """The supervision trees of this node: one per supervisor not started by another; the
    top supervisor of a running Application carries its name as ``"application"``."""
    from . import application
    apps = {e.top: name for name, e in list(application._running.items()) if e.top is not None}
    sups = {}
    for pid in _core.processes():
        info = _core.process_info(pid, ["behaviour", "parent"])
        if info is not None and info["behaviour"] in _SUPERVISORS:
            sups[pid] = info["parent"]
    out = []
    for pid, parent in sups.items():
        if parent not in sups:
            tree = await supervision_tree(pid)
            if pid in apps:
                tree["application"] = apps[pid]
            out.append(tree)
    return out


def _name(info: Dict[str, Any]) -> Optional[str]:
    n = info.get("registered_name")
    return None if n is None else str(n)


def _mfa(info: Dict[str, Any]) -> Optional[str]:
    ic = info.get("initial_call")
    if not ic:
        return None
    return "%s:%s/%s" % ic


def top(n: int = 20, sort: str = "reductions") -> List[Dict[str, Any]]:
    """The ``n`` processes with the largest ``sort`` (one of SORT_KEYS), as rows of
    pid, name, status, message_queue_len, reductions, memory, messages_received,
    behaviour, initial_call, parent."""
    if sort not in SORT_KEYS:
        raise ValueError("observer.top: sort must be one of %s, got %r" % (", ".join(SORT_KEYS), sort))
    if type(n) is not int or n < 0:
        raise ValueError("observer.top: n must be an int >= 0, got %r" % (n,))
    rows = []
    for pid in _core.processes():
        info = _core.process_info(pid, _ROW_KEYS)
        if info is None:
            continue
        rows.append({"pid": pid, "name": _name(info), "status": info["status"],
                     "message_queue_len": info["message_queue_len"],
                     "reductions": info["reductions"], "memory": info["memory"],
                     "messages_received": info["messages_received"],
                     "behaviour": info["behaviour"], "initial_call": _mfa(info),
                     "parent": info["parent"]})
    rows.sort(key=lambda r: r[sort], reverse=True)
    return rows[:n]


def snapshot(top: int = 20, sort: str = "reductions") -> Dict[str, Any]:
    """``{"node": node_info(), "top": top(top, sort)}``: one reading for a live view."""
    return {"node": node_info(), "top": globals()["top"](top, sort)}


def process(pid: Any) -> Optional[Dict[str, Any]]:
    """Everything process_info knows of ``pid`` (a local pid), with a mailbox preview of
    at most 20 messages (as repr strings, at most 200 characters each); None if dead."""
    info = _core.process_info(pid)
    if info is None:
        return None
    msgs = info.pop("messages") or []
    info["messages"] = [repr(m)[:200] for m in msgs[:20]]
    info["initial_call"] = _mfa(info)
    info["registered_name"] = _name(info)
    return info


async def process_page(pid: Any, timeout: float = 1.0) -> Optional[Dict[str, Any]]:
    """``process(pid)`` plus, for a behaviour process, ``"state"``: the repr of its state
    through ``pyotp.sys.get_state`` (at most 2000 characters; why not, if it does not
    answer within ``timeout`` seconds). What the dashboard's process page shows."""
    info = process(pid)
    if info is not None and info.get("behaviour"):
        from . import sys as otp_sys
        try:
            info["state"] = repr(await otp_sys.get_state(pid, timeout))[:2000]
        except Exception as e:       # busy, or stopped meanwhile: show why
            info["state"] = "(unavailable: %s)" % (e,)
    return info


async def supervision_tree(sup: Any) -> Dict[str, Any]:
    """The tree under supervisor ``sup``: ``{"pid", "name", "type": "supervisor",
    "restarts", "children": [...]}``, children as ``{"id", "pid", "type", ...}``
    (a child supervisor carries its own children). A supervisor that does not answer
    (dead, busy) shows as ``{"error": reason}`` in its place."""
    try:
        children = await Supervisor.which_children(sup)
        beh = (_core.process_info(sup, ["behaviour"]) or {}).get("behaviour") \
            if type(sup) is _core.Pid else None
        # only Supervisor counts restarts (other supervisors would not know the request)
        restarts = await _core.call(sup, "restart_total", None) \
            if beh == "_SupervisorServer" else None
    except _core.Exit as e:
        return {"pid": sup, "type": "supervisor", "error": repr(e.reason)}
    info = _core.process_info(sup, ["registered_name"]) if type(sup) is _core.Pid else None
    node: Dict[str, Any] = {"pid": sup, "name": _name(info or {}), "type": "supervisor",
                            "restarts": restarts, "children": []}
    for cid, pid, kind, _mods in children:
        if kind == "supervisor" and type(pid) is _core.Pid:
            sub = await supervision_tree(pid)
            sub["id"] = cid
            node["children"].append(sub)
        else:
            node["children"].append({"id": cid, "pid": pid if type(pid) is _core.Pid else None,
                                     "type": kind})
    return node
