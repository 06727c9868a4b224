"""Observing a BEAM (Erlang/Elixir) node: the dashboard and ``python -m pyotp top`` attached
to ``erl``/``iex`` through rpc, as Erlang's observer reads a remote node.

pyotp connects as a hidden node and calls only what every node has (erts, kernel,
stdlib): ``erlang:processes/0``, ``erlang:process_info/2``, ``erlang:statistics/1``,
``erlang:memory/1``, ``net_kernel:nodes_info/0``, ``inet:getstat/2``,
``application:which_applications/0`` and ``supervisor:which_children/1``. No code is
loaded on the observed node (runtime_tools' ``observer_backend`` need not be there): the
per-process reads go in one rpc as ``lists:zipwith(fun erlang:process_info/2, Pids, Keys)``.

The answers have the shapes of ``pyotp.observer`` (``snapshot``, ``trees``, ``process``),
so the dashboard and top show a BEAM node as they show a pyotp one. What BEAM does not
count is None: ``timers`` and a process's ``messages_received``; the node's rate is in
reductions/s (``node["rate_unit"]``), as BEAM counts no messages; supervisors' ``restarts``
is None (a BEAM supervisor only keeps the restarts of its intensity period).

>>> import pyotp
>>> async def main():
...     await pyotp.dist.Node.start("obs@127.0.0.1", cookie="secret", hidden=True)
...     src = pyotp.observer_beam.BeamSource("erl@127.0.0.1")
...     return (await src.snapshot(5, "memory"))["node"]["processes"]
"""
from typing import Any, Dict, List, Optional

from . import _core
from .etf import ExportFun

__all__ = ["BeamSource", "BeamError"]

A = _core.Atom
_ROW_KEYS = [A(k) for k in ("registered_name", "status", "message_queue_len", "reductions",
                            "memory", "initial_call", "current_function")]
_PAGE_KEYS = [A(k) for k in ("registered_name", "status", "message_queue_len", "links",
                             "monitors", "monitored_by", "trap_exit", "reductions", "memory",
                             "initial_call", "current_function", "dictionary")]
MAX_PREVIEW_QUEUE = 1000     # a longer mailbox is not copied over for its 20-message preview
MAX_TREE_DEPTH = 32


class BeamError(Exception):
    """An rpc to the observed node failed (unreachable, or the call raised there)."""


def _mfa(t: Any) -> Optional[str]:
    if type(t) is tuple and len(t) == 3:
        return "%s:%s/%s" % t
    return None


def _name(v: Any) -> Optional[str]:
    return str(v) if isinstance(v, str) and v != "" else None


def _proplist(pl: Any) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    if isinstance(pl, list):
        for kv in pl:
            if type(kv) is tuple and len(kv) == 2:
                out[str(kv[0])] = kv[1]
    return out


class BeamSource:
    """A dashboard/top source reading a BEAM node ``node`` through rpc (see the module
    documentation). The calling node must be distributed with the node's cookie."""

    def __init__(self, node: str, timeout: float = 5.0) -> None:
        self.node = node
        self.timeout = timeout

    async def _rpc(self, m: str, f: str, args: List[Any]) -> Any:
        from .dist import rpc
        r = await rpc.call(self.node, m, f, args, self.timeout)
        if type(r) is tuple and len(r) == 2 and r[0] == "badrpc":
            raise BeamError("rpc %s:%s to %s failed: %r" % (m, f, self.node, r[1]))
        return r

    async def _map(self, m: str, f: str, first: List[Any], second: Any) -> List[Any]:
        """``[m:f(x, second) || x <- first]`` on the node, in one rpc."""
        if not first:
            return []
        r = await self._rpc("lists", "zipwith", [ExportFun(A(m), A(f), 2), first,
                                                 [second] * len(first)])
        return list(r)

    # -- the node ------------------------------------------------------------------------

    async def connections(self) -> List[Dict[str, Any]]:
        """The observed node's connections: node, hidden, msgs in/out (net_kernel's
        nodes_info) and bytes in/out of its TCP distribution port (None otherwise)."""
        r = await self._rpc("net_kernel", "nodes_info", [])
        infos = r[1] if type(r) is tuple and len(r) == 2 else []
        ctrl = _proplist(await self._rpc("erlang", "system_info", [A("dist_ctrl")]))
        rows: List[Dict[str, Any]] = []
        ports: List[Any] = []
        for node, info in infos:
            d = _proplist(info)
            rows.append({"node": str(node), "hidden": d.get("type") == "hidden", "pyotp": None,
                         "msgs_in": d.get("in"), "msgs_out": d.get("out"),
                         "bytes_in": None, "bytes_out": None})
            ports.append(ctrl.get(str(node)))
        have = [(row, p) for row, p in zip(rows, ports) if isinstance(p, _core.Port)]
        stats = await self._map("inet", "getstat", [p for _, p in have],
                                [A("recv_oct"), A("send_oct")])
        for (row, _), st in zip(have, stats):
            if type(st) is tuple and len(st) == 2 and st[0] == "ok":
                s = _proplist(st[1])
                row["bytes_in"], row["bytes_out"] = s.get("recv_oct"), s.get("send_oct")
        rows.sort(key=lambda x: str(x["node"]))
        return rows

    async def node_info(self, nprocs: int) -> Dict[str, Any]:
        rq, reds = await self._rpc("lists", "map", [ExportFun(A("erlang"), A("statistics"), 1),
                                                    [A("total_run_queue_lengths"),
                                                     A("exact_reductions")]])
        return {"name": self.node, "kind": "beam", "processes": nprocs, "run_queue": rq,
                "timers": None, "memory": await self._rpc("erlang", "memory", [A("total")]),
                "dispatched": reds[0], "rate_unit": "reductions",
                "connections": await self.connections()}

    # -- the source interface (pyotp.dashboard) ---------------------------------------------

    async def snapshot(self, n: int, sort: str) -> Dict[str, Any]:
        pids = await self._rpc("erlang", "processes", [])
        infos = await self._map("erlang", "process_info", pids, _ROW_KEYS)
        rows = []
        for pid, pl in zip(pids, infos):
            d = _proplist(pl)
            if not d:               # exited between the two calls
                continue
            rows.append({"pid": pid, "name": _name(d.get("registered_name")),
                         "status": str(d.get("status")),
                         "message_queue_len": d.get("message_queue_len", 0),
                         "reductions": d.get("reductions", 0), "memory": d.get("memory", 0),
                         "messages_received": None, "behaviour": None,
                         "initial_call": _mfa(d.get("initial_call")),
                         "current_function": _mfa(d.get("current_function")), "parent": None})
        rows.sort(key=lambda r: int(r.get(sort) or 0) if r.get(sort) is not None else -1, reverse=True)
        return {"node": await self.node_info(len(rows)), "top": rows[:n]}

    async def process(self, pid: Any) -> Optional[Dict[str, Any]]:
        pl = await self._rpc("erlang", "process_info", [pid, _PAGE_KEYS])
        d = _proplist(pl)
        if not d:
            return None
        msgs: List[Any] = []
        if d.get("message_queue_len", 0) <= MAX_PREVIEW_QUEUE:
            got = _proplist(await self._rpc("erlang", "process_info", [pid, [A("messages")]]))
            msgs = got.get("messages") or []
        dic = _proplist(d.pop("dictionary", []))
        ancestors = dic.get("$ancestors") or []
        started = dic.get("$initial_call")          # proc_lib: the callback module's init
        info = dict(d, registered_name=_name(d.get("registered_name")),
                    initial_call=_mfa(started) or _mfa(d.get("initial_call")),
                    current_function=_mfa(d.get("current_function")),
                    behaviour=str(started[0]) if type(started) is tuple and started else None,
                    parent=ancestors[0] if ancestors else None, messages_received=None,
                    messages=[repr(m)[:200] for m in msgs[:20]])
        if started is not None:     # a proc_lib process: it answers sys requests
            try:
                info["state"] = repr(await self._rpc("sys", "get_state", [pid, 1000]))[:2000]
            except BeamError as e:      # busy, or not answering sys requests: show why
                info["state"] = "(unavailable: %s)" % (e,)
        return info

    async def trees(self) -> List[Dict[str, Any]]:
        """One tree per running application with a top supervisor (library applications,
        such as stdlib, have none)."""
        out = []
        for app in await self._rpc("application", "which_applications", []):
            name = app[0]
            master = await self._rpc("application_controller", "get_master", [name])
            if not isinstance(master, _core.Pid):
                continue
            child = await self._rpc("application_master", "get_child", [master])
            if type(child) is not tuple or not isinstance(child[0], _core.Pid):
                continue
            tree = await self._tree(child[0], 0)
            tree["application"] = str(name)
            out.append(tree)
        return out

    async def _tree(self, sup: Any, depth: int) -> Dict[str, Any]:
        reg = await self._rpc("erlang", "process_info", [sup, A("registered_name")])
        name = reg[1] if type(reg) is tuple and len(reg) == 2 else None   # [] if unnamed
        node: Dict[str, Any] = {"pid": sup, "name": _name(name),
                                "type": "supervisor", "restarts": None, "children": []}
        try:
            children = await self._rpc("supervisor", "which_children", [sup])
        except BeamError as e:
            node["error"] = str(e)
            return node
        for cid, pid, kind, _mods in children:
            if kind == "supervisor" and isinstance(pid, _core.Pid) and depth < MAX_TREE_DEPTH:
                sub = await self._tree(pid, depth + 1)
                sub["id"] = str(cid)
                node["children"].append(sub)
            else:
                node["children"].append({"id": str(cid), "type": str(kind),
                                         "pid": pid if isinstance(pid, _core.Pid) else None})
        return node

    async def kill(self, pid: Any) -> None:
        await self._rpc("erlang", "exit", [pid, A("kill")])

    async def send(self, pid: Any, msg: str) -> None:
        """Sends ``msg`` as an Erlang binary (UTF-8)."""
        await self._rpc("erlang", "send", [pid, msg])
