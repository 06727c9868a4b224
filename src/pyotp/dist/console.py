"""The console service: runs the statements that ``python -m pyotp remsh`` sends, inside
this node, on its event loop.

It exists only on a node started with ``console=True`` (``Node.start``, ``pyotp.run``,
``python -m pyotp run --console``): then a GenServer registered as ``pyotp_console``
answers calls that reach it through the distribution, so a console inherits the node's
authentication (cookie, TLS). Whoever holds the cookie of such a node can run any Python
code in it: **full trust**, like Erlang's remote shell. Without the option nothing is
registered and a console's first call fails with ``noproc``, which ``remsh`` reports.

Requests (GenServer.call to ``("pyotp_console", node)``):

- ``("open",)`` -> ``("ok", session, banner)``: a fresh namespace holding ``pyotp``,
  ``asyncio``, ``Node``, ``GenServer``, ``rpc``, ``whereis`` and ``registered``. At most
  ``MAX_SESSIONS`` idle sessions are kept (the oldest go first).
- ``("eval", session, source)`` -> ``("ok", output, shown)`` | ``("error", output,
  traceback)`` | ``("cancelled", output)``: the statement(s) run in a fresh pyotp process
  (so ``await pyotp.receive()`` works) with top-level ``await``, like ``python -m
  asyncio``; a final expression's value is shown with ``repr`` and kept as ``_``;
  ``print`` writes into ``output``.
- ``("cancel", session)`` -> True: kills the running statement (Ctrl-C in the client).
- ``("complete", session, text)`` -> a list of completions (rlcompleter).
- ``("close", session)`` -> "ok".

The node to operate turns the service on when it starts distribution::

    await Node.start("app@127.0.0.1", cookie="secret", console=True)

and ``python -m pyotp remsh app@127.0.0.1 --cookie secret`` opens a console into it.
"""
from __future__ import annotations

import ast
import asyncio
import builtins
import inspect
import io
import itertools
import rlcompleter
import traceback
from typing import Any, Dict, List, Optional, Tuple

from .. import _core
from ..gen_server import GenServer

__all__ = ["NAME", "ConsoleServer", "start", "stop"]

NAME = "pyotp_console"
FLAGS = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
MAX_COMPLETIONS = 500
MAX_SESSIONS = 64     # a client that vanished without "close" leaves its session behind
FILENAME = "<remsh>"

_pid: Optional[_core.Pid] = None
_ids = itertools.count(1)


def _namespace() -> Dict[str, Any]:
    import pyotp

    from . import Node, rpc
    return {"__name__": "__console__", "__builtins__": builtins, "pyotp": pyotp,
            "asyncio": asyncio, "Node": Node, "GenServer": GenServer, "rpc": rpc,
            "whereis": _core.whereis, "registered": _core.registered}


async def _run(source: str, ns: Dict[str, Any]) -> Any:
    """Run ``source`` in ``ns``; the value of a final expression statement (else None)."""
    tree = ast.parse(source, FILENAME, "exec")
    last: Optional[ast.Expression] = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body[-1].value)
        del tree.body[-1]
    code = compile(tree, FILENAME, "exec", flags=FLAGS)
    r = eval(code, ns)
    if code.co_flags & inspect.CO_COROUTINE:
        await r
    if last is None:
        return None
    code = compile(last, FILENAME, "eval", flags=FLAGS)
    v = eval(code, ns)
    if code.co_flags & inspect.CO_COROUTINE:
        v = await v
    return v


def _user_traceback(e: BaseException) -> str:
    """The traceback without this module's frames."""
    tb = e.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    if isinstance(e, SyntaxError):
        return "".join(traceback.format_exception_only(type(e), e))
    return "".join(traceback.format_exception(type(e), e, tb))


async def _statement(server: _core.Pid, sid: int, ns: Dict[str, Any], source: str) -> None:
    out = io.StringIO()

    def _print(*args: Any, file: Any = None, **kw: Any) -> None:
        builtins.print(*args, file=out if file is None else file, **kw)

    ns["print"] = _print
    result: Tuple[Any, ...]
    try:
        value = await _run(source, ns)
        shown = None
        if value is not None:
            ns["_"] = value
            shown = repr(value)
        result = ("ok", out.getvalue(), shown)
    except Exception as e:     # the user's error, reported to the console
        result = ("error", out.getvalue(), _user_traceback(e))
    _core.send(server, ("$console_done", sid, result))


class ConsoleServer(GenServer):
    """Registered as ``pyotp_console`` on a node started with ``console=True`` (see the
    module documentation)."""

    def init(self, arg: Any) -> Any:
        # sessions: id -> namespace; running: id -> (statement pid, caller, monitor ref)
        return ("ok", ({}, {}))

    def handle_call(self, req: Any, from_: Any, state: Any) -> Any:
        sessions: Dict[int, Dict[str, Any]] = state[0]
        running: Dict[int, Tuple[Any, Any, Any]] = state[1]
        op = req[0] if type(req) is tuple and req else None
        if op == "open":
            new = next(_ids)
            for old in [s for s in sessions if s not in running][:max(0, len(sessions) - MAX_SESSIONS + 1)]:
                del sessions[old]
            sessions[new] = _namespace()
            return ("reply", ("ok", new, "pyotp %s console on %s (Ctrl-C cancels, Ctrl-D leaves)"
                              % (_version(), _core.local_node())), state)
        sid: Any = req[1] if type(req) is tuple and len(req) >= 2 else None
        if op == "eval" and len(req) == 3 and isinstance(req[2], str):
            ns = sessions.get(sid)
            if ns is None:
                return ("reply", ("error", "", "no console session %r\n" % (sid,)), state)
            if sid in running:
                return ("reply", ("error", "", "a statement is already running\n"), state)
            pid, ref = _core.spawn_monitor(_statement, _core.self(), sid, ns, req[2])
            running[sid] = (pid, from_, ref)   
            return ("noreply", state)
        if op == "cancel":
            r = running.get(sid)
            if r is not None:
                _core.exit(r[0], "kill")
            return ("reply", r is not None, state)
        if op == "complete" and len(req) == 3 and isinstance(req[2], str):
            return ("reply", _complete(sessions.get(sid), req[2]), state)
        if op == "close":
            sessions.pop(sid, None)
            r = running.get(sid)
            if r is not None:
                _core.exit(r[0], "kill")
            return ("reply", "ok", state)
        return ("reply", ("error", "", "bad console request %r\n" % (req,)), state)

    def handle_info(self, msg: Any, state: Any) -> Any:
        running = state[1]
        if type(msg) is tuple and len(msg) == 3 and msg[0] == "$console_done":
            r = running.pop(msg[1], None)
            if r is not None:
                _core.demonitor(r[2], True)
                GenServer.reply(r[1], msg[2])
        elif type(msg) is tuple and len(msg) == 5 and msg[0] == "DOWN":
            for sid, r in list(running.items()):
                if r[2] == msg[1]:
                    del running[sid]
                    reason = msg[4]
                    GenServer.reply(r[1], ("cancelled", "") if reason == "killed" else
                                    ("error", "", "the statement's process exited: %r\n" % (reason,)))
        return ("noreply", state)


def _complete(ns: Optional[Dict[str, Any]], text: str) -> List[str]:
    if ns is None:
        return []
    c = rlcompleter.Completer(ns)
    out: List[str] = []
    for state in range(MAX_COMPLETIONS):
        try:
            m = c.complete(text, state)
        except Exception:
            break
        if m is None:
            break
        out.append(m)
    return out


def _version() -> str:
    from .._version import __version__
    return __version__


async def start() -> _core.Pid:
    """Start the console service (``Node.start(console=True)`` calls it)."""
    global _pid
    pid: _core.Pid = await ConsoleServer.start(None, name=NAME)
    _pid = pid
    return pid


def stop() -> None:
    """Stop the console service, if running (``Node.stop`` calls it)."""
    global _pid
    pid, _pid = _pid, None
    if pid is not None and _core.is_alive(pid):
        _core.exit(pid, "kill")
