"""Operating a running node from the command line: ``python -m pyotp remsh``, ``rpc`` and
``stop`` (the subcommands are declared in ``pyotp.cli``; this module does the work).

Each command starts a short-lived hidden pyotp node named ``pyotp_cli_<pid>@<host of the
target>`` with the target's cookie (``--cookie``, else ``~/.erlang.cookie`` as Erlang does) and,
for a node that uses TLS, the ``--tls-*`` files; it talks to the target through the
distribution, so the cookie and TLS guard these commands like any other connection.

``remsh`` runs an interactive console (``code.InteractiveConsole`` with readline history
and completion) whose statements run inside the target node: see
``pyotp.dist.console`` for the service the target runs when started with ``console=True``.

A session (it needs a node ``app@127.0.0.1`` started with ``console=True``)::

    $ python -m pyotp remsh app@127.0.0.1 --cookie secret
    app@127.0.0.1> Node.self()
    'app@127.0.0.1'
"""
from __future__ import annotations

import ast
import code
import concurrent.futures
import functools
import os
import sys
from typing import Any, Callable, List, Optional

from .etf import Atom

__all__ = ["read_cookie", "parse_arg", "client_name", "rpc_once", "RemoteConsole", "run_remsh",
           "HISTORY_FILE"]

HISTORY_FILE = os.path.join("~", ".pyotp_remsh_history")
CONSOLE_TIMEOUT = 10.0       # seconds for the console's own requests (open, complete, ...)


class CookieError(ValueError):
    """No cookie given and none readable in ``~/.erlang.cookie``."""


def read_cookie(explicit: Optional[str]) -> str:
    """The cookie: ``explicit`` if given, else the content of ``~/.erlang.cookie``.

    >>> read_cookie("secret")
    'secret'
    """
    if explicit:
        return explicit
    path = os.path.expanduser(os.path.join("~", ".erlang.cookie"))
    try:
        with open(path, encoding="latin-1") as f:
            cookie = f.read().strip()
    except OSError as e:
        raise CookieError("no --cookie given and %s is not readable (%s)" % (path, e.strerror)) from None
    if not cookie:
        raise CookieError("no --cookie given and %s is empty" % path)
    return cookie


def parse_arg(text: str) -> Any:
    """A command-line argument as a term: a Python literal (``42``, ``'text'``, ``[1, 2]``,
    ``('a', 1)``), else an atom, as ``erl_call -a`` reads bare words.

    >>> parse_arg("rex"), parse_arg("42"), parse_arg("'rex'")
    (Atom('rex'), 42, 'rex')
    """
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return Atom(text)


def client_name(target: str) -> str:
    """The hidden node name a command uses to reach ``target``.

    >>> client_name("app@127.0.0.1") == "pyotp_cli_%d@127.0.0.1" % os.getpid()
    True
    """
    if not isinstance(target, str) or target.count("@") != 1 or not all(target.split("@")):
        raise ValueError("node name must look like 'name@host', got %r" % (target,))
    return "pyotp_cli_%d@%s" % (os.getpid(), target.split("@")[1])


def rpc_once(target: str, cookie: str, module: str, function: str, args: List[Any],
             timeout: Optional[float], tls: Any = None) -> Any:
    """``rpc:call(target, module, function, args)`` from a fresh hidden node; the result
    (``("badrpc", reason)`` on failure, as rpc.call gives).

    With a node ``app@127.0.0.1`` running (it starts a node of its own, so it is called
    outside any node, as ``python -m pyotp rpc`` does)::

        rpc_once("app@127.0.0.1", "secret", "erlang", "node", [], 10)
        # -> Atom('app@127.0.0.1')
    """
    from . import runtime
    from .dist import rpc

    async def main() -> Any:
        return await rpc.call(target, module, function, args, timeout=timeout)

    return runtime.run(main, node=client_name(target), cookie=cookie, hidden=True, tls=tls)


# ---------------------------------------------------------------------------------------
# remsh

def _is_badrpc(r: Any) -> bool:
    return type(r) is tuple and len(r) == 2 and r[0] == "badrpc"


class RemoteConsole(code.InteractiveConsole):
    """An interactive console whose complete statements are run by the target node's
    console service. ``call(request, timeout)`` sends one request and returns the reply;
    ``submit(request)`` sends one and returns a ``concurrent.futures.Future`` of the reply
    (waiting on it can be interrupted by Ctrl-C, which cancels the statement on the node)."""

    def __init__(self, call: Callable[[Any, Optional[float]], Any],
                 submit: Callable[[Any], "concurrent.futures.Future[Any]"], session: int,
                 out: Any = None) -> None:
        super().__init__(filename="<remsh>")
        self.compile.compiler.flags |= ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        self._call = call
        self._submit = submit
        self.session = session
        self.out = out if out is not None else sys.stdout

    def runsource(self, source: str, filename: str = "<input>", symbol: str = "single") -> bool:
        try:
            if self.compile(source, filename, symbol) is None:
                return True      # incomplete: read more lines
        except (OverflowError, SyntaxError, ValueError):
            pass                 # the node reports the error, as it reports any other
        reply = self._eval(source)
        self._show(reply)
        return False

    def _eval(self, source: str) -> Any:
        """Send one statement; Ctrl-C while it runs cancels it on the node."""
        fut = self._submit(("eval", self.session, source))
        while True:
            try:
                return fut.result()
            except KeyboardInterrupt:
                self._cancel()
            except Exception as e:
                reason = getattr(e, "reason", e)
                self.write("pyotp remsh: lost the console (%r)\n" % (reason,))
                raise SystemExit(1) from None

    def _cancel(self) -> None:
        """Ctrl-C: ask the node to kill the running statement. The prompt comes back only
        with the statement's own reply (``_eval`` waits for it), so a Ctrl-C that lands
        while the cancel request is on its way repeats the request instead of leaving
        the statement running behind a fresh prompt."""
        while True:
            try:
                self._call(("cancel", self.session), CONSOLE_TIMEOUT)
            except KeyboardInterrupt:
                continue
            except Exception:
                pass      # the eval's own reply says what happened to the node
            break
        self.write("\nKeyboardInterrupt\n")

    def _show(self, reply: Any) -> None:
        if type(reply) is not tuple or not reply:
            self.write("pyotp remsh: unexpected reply %r\n" % (reply,))
            return
        if reply[0] == "cancelled":
            self.out.write(reply[1] if len(reply) > 1 else "")
            return
        if len(reply) == 3 and reply[0] in ("ok", "error"):
            self.out.write(reply[1])
            if reply[0] == "ok":
                if reply[2] is not None:
                    self.out.write(reply[2] + "\n")
            else:
                self.write(reply[2])
            self.out.flush()
            return
        self.write("pyotp remsh: %r\n" % (reply,))

    def complete(self, text: str, state: int) -> Optional[str]:
        """readline's completer: the node's namespace answers."""
        if state == 0:
            try:
                self._matches = list(self._call(("complete", self.session, text), CONSOLE_TIMEOUT))
            except Exception:
                self._matches = []
        return self._matches[state] if state < len(self._matches) else None

    _matches: List[str] = []


def _setup_readline(console: RemoteConsole) -> Callable[[], None]:
    try:
        import readline
    except ImportError:       # Windows without pyreadline: no history, no completion
        return lambda: None
    import rlcompleter  # noqa: F401  (readline's defaults for Python input)
    history = os.path.expanduser(HISTORY_FILE)
    try:
        readline.read_history_file(history)
    except OSError:
        pass
    readline.set_completer(console.complete)
    readline.set_completer_delims(" \t\n`~!@#$%^&*()-=+[{]}\\|;:'\",<>/?")
    readline.parse_and_bind("tab: complete")

    def save() -> None:
        try:
            readline.set_history_length(1000)
            readline.write_history_file(history)
        except OSError:
            pass
    return save


def run_remsh(target: str, cookie: str, tls: Any = None) -> int:
    """Open the console on ``target``; returns the exit status (0 after Ctrl-D, 1 when the
    node cannot be reached or does not run the console service)."""
    from . import _core
    from .dist import Node
    from .dist.console import NAME
    from .runtime import NodeThread

    node = NodeThread()
    try:
        node.call_in_loop(functools.partial(Node.start, client_name(target), cookie=cookie,
                                            hidden=True, tls=tls))
        server = (NAME, target)

        def submit(req: Any, timeout: Optional[float] = None) -> "concurrent.futures.Future[Any]":
            # the call runs in a pyotp process: its monitor on the console server turns a
            # lost connection into a noconnection exit at once
            done: "concurrent.futures.Future[Any]" = concurrent.futures.Future()

            async def caller() -> None:
                try:
                    done.set_result(await _core.call(server, req, timeout))
                except Exception as e:
                    done.set_exception(e)

            def start() -> None:
                try:
                    _core.spawn(caller)
                except Exception as e:
                    done.set_exception(e)
            # Not call_in_loop: waiting here for the spawn would let a Ctrl-C land after
            # the request is on its way but before the caller holds its future, so the
            # statement would run on behind a fresh prompt with nothing to cancel it.
            node._loop.call_soon_threadsafe(start)
            return done

        def call(req: Any, timeout: Optional[float]) -> Any:
            return submit(req, timeout).result()

        try:
            ok, session, banner = call(("open",), CONSOLE_TIMEOUT)
        except _core.Exit as e:
            print("pyotp remsh: %s" % _explain(target, e.reason), file=sys.stderr, flush=True)
            return 1
        console = RemoteConsole(call, submit, session)
        save = _setup_readline(console)
        try:
            console.interact(banner=banner, exitmsg="")
        finally:
            save()
            try:
                call(("close", session), CONSOLE_TIMEOUT)
            except Exception:
                pass
        return 0
    finally:
        node.call_in_loop(Node.stop)
        node.stop()


def _explain(target: str, reason: Any) -> str:
    r = reason[0] if type(reason) is tuple and reason else reason
    if r == "noproc":
        return ("%s does not run the console service: start that node with console=True "
                "(Node.start, pyotp.run) or `python -m pyotp run --console`" % target)
    if r in ("noconnection", "nodedown"):
        return "cannot connect to %s (is it running? same cookie?)" % target
    if r == "timeout":
        return "%s did not answer" % target
    return "console on %s failed: %r" % (target, reason)
