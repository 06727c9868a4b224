"""The processes every distributed node runs: ``net_kernel`` (answers ``net_adm:ping``),
``rex`` (old-style ``rpc`` requests) and a group leader for Erlang IO. Started by
``Node.start`` (:func:`start`) once the kernel listens; the kernel kills them in ``stop``
(``system_pids``). The global name server and the default ``pg`` scope are services
(global_names.py, pg.py).

Moved unchanged from node.py, except that rex's workers get the kernel from rex's state
instead of the module global.
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Optional

from .. import _core
from ..etf import Atom, Pid
from ..gen_server import GenServer
from . import rpc

if TYPE_CHECKING:  # pragma: no cover
    from .kernel import NetKernel

A_YES = Atom("yes")
A_ERROR = Atom("error")
A_BADRPC = Atom("badrpc")
A_NODEDOWN = Atom("nodedown")
A_REX = Atom("rex")
A_OK = Atom("ok")


async def start(k: "NetKernel") -> None:
    """Start the system processes of kernel ``k``: sets ``k.kernel_pid`` (net_kernel, the
    sender of signals that have no process behind them) and ``k.gl_pid`` (the group
    leader of processes peers spawn here)."""
    k.kernel_pid = await _NetKernelServer.start(None, name="net_kernel")
    k.system_pids.append(k.kernel_pid)
    k.system_pids.append(await _Rex.start(k, name="rex"))
    k.gl_pid = _core.spawn(_group_leader)
    k.system_pids.append(k.gl_pid)


# The processes every distributed node runs


class _NetKernelServer(GenServer):
    """Registered as ``net_kernel``: answers ``{is_auth, Node}`` (net_adm:ping) with yes."""

    def init(self, arg: Any) -> Any:
        return ("ok", None)

    def handle_call(self, req: Any, from_: Any, state: Any) -> Any:
        if type(req) is tuple and len(req) == 2 and req[0] == "is_auth":
            return ("reply", A_YES, state)
        return ("reply", A_ERROR, state)

    def handle_cast(self, req: Any, state: Any) -> Any:
        return ("noreply", state)

    def handle_info(self, msg: Any, state: Any) -> Any:
        return ("noreply", state)


class _Rex(GenServer):
    """Registered as ``rex``: old-style rpc requests (``gen_server:call({rex, N},
    {call, M, F, A, GL})``, the C-node form ``{From, {call, M, F, A, GL}}`` and casts)."""

    def init(self, arg: Any) -> Any:
        return ("ok", arg)          # the state is the kernel

    def handle_call(self, req: Any, from_: Any, state: Any) -> Any:
        if _rex_call_request(req):
            _core.spawn(_rex_worker, state, req[1], req[2], req[3], ("reply", from_))
            return ("noreply", state)
        return ("reply", (A_BADRPC, Atom("unknown_request")), state)

    def handle_cast(self, req: Any, state: Any) -> Any:
        if type(req) is tuple and len(req) == 5 and req[0] == "cast":
            _core.spawn(_rex_worker, state, req[1], req[2], req[3], None)
        return ("noreply", state)

    def handle_info(self, msg: Any, state: Any) -> Any:
        if (type(msg) is tuple and len(msg) == 2 and type(msg[0]) is Pid and type(msg[1]) is tuple
                and len(msg[1]) == 5 and msg[1][0] == "call"):
            _core.spawn(_rex_worker, state, msg[1][1], msg[1][2], msg[1][3], ("send", msg[0]))
        return ("noreply", state)


def _rex_call_request(req: Any) -> bool:
    """``{call, M, F, A, GL}`` (rpc:call before OTP 23, C nodes) or ``{block_call, M, F, A,
    GL}`` (rpc:block_call). OTP's rex runs a block_call in itself, one at a time; here it
    runs in a worker like a call: the caller sees the same result, only other block_calls
    to this node are not held up behind it."""
    return type(req) is tuple and len(req) == 5 and (req[0] == "call" or req[0] == "block_call")


async def _rex_worker(k: "NetKernel", m: Any, f: Any, a: Any, reply_to: Any) -> None:
    result = await rpc.apply_rpc(k, m, f, a) if not k.stopping else (A_BADRPC, A_NODEDOWN)
    if reply_to is None:
        return
    if reply_to[0] == "reply":
        GenServer.reply(reply_to[1], result)
    else:
        _core.send(reply_to[1], (A_REX, result))


async def _group_leader() -> None:
    """A minimal Erlang IO server: processes that Erlang nodes spawn here (rpc) have it as
    group leader. Output requests are written to stdout; input requests get an error."""
    while True:
        msg = await _core.receive()
        if type(msg) is tuple and len(msg) == 4 and msg[0] == "io_request":
            _from, reply_as, req = msg[1], msg[2], msg[3]
            result: Any = A_OK
            try:
                text = _io_text(req)
                if text is None:
                    result = (A_ERROR, Atom("request"))
                else:
                    sys.stdout.write(text)
                    sys.stdout.flush()
            except Exception:
                result = (A_ERROR, Atom("request"))
            try:
                _core.send(_from, (Atom("io_reply"), reply_as, result))
            except Exception:
                pass


def _io_text(req: Any) -> Optional[str]:
    if type(req) is tuple:
        if req and req[0] == "put_chars":
            chars = req[-1] if len(req) in (2, 3) else None
            if len(req) == 5:     # {put_chars, Enc, Mod, Fun, Args}: cannot run Erlang code
                return "%s:%s%r\n" % (req[2], req[3], req[4])
            return _chars(chars)
        if req and req[0] == "requests":
            out = [_io_text(r) for r in req[1]]
            return "".join(x for x in out if x)
    return None


def _chars(chars: Any) -> str:
    if isinstance(chars, (bytes, bytearray)):
        return bytes(chars).decode("utf-8", "replace")
    if isinstance(chars, str):
        return chars
    if isinstance(chars, list):
        return "".join(_chars(c) if not isinstance(c, int) else chr(c) for c in chars)
    return str(chars)


# ---------------------------------------------------------------------------------------
# The kernel
