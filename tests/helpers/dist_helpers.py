"""Helpers for distribution tests: run pyotp nodes (and Erlang nodes) as separate OS
processes on loopback, and talk to them through stdout lines.

A child pyotp node runs this file as a script with a JSON config: it starts distribution
as the given node name and runs a *role*, an ``async def`` function named by
``"module:function"`` (test modules define their roles next to their tests). A role
reports with :func:`emit` (one ``@@tag value`` line on stdout); the test waits for those
lines with :meth:`NodeProc.expect`. No sleeps: every wait is for a line or a message, with
a generous timeout that only fires when something is broken.

>>> with NodeProc("b", role="test_dist_basic:role_echo") as b:
...     b.expect("ready")
"""
from __future__ import annotations

import itertools
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
# tests/ itself, whether this helper sits in it or in tests/helpers/
TESTS = HERE if os.path.basename(HERE) == "tests" else os.path.dirname(HERE)
# the suite's module folders: a child imports roles from helpers and from test modules
TEST_DIRS = [TESTS] + sorted(os.path.join(TESTS, d) for d in os.listdir(TESTS)
                             if os.path.isdir(os.path.join(TESTS, d)) and not d.startswith((".", "_")))


def _pyotp_root() -> str:
    """Where the parent imports pyotp from (a source tree or an installed wheel): the
    children must run the very same build."""
    try:
        import pyotp
        return os.path.dirname(os.path.dirname(os.path.abspath(pyotp.__file__)))
    except ImportError:
        return os.path.join(os.path.dirname(TESTS), "src")


SRC = _pyotp_root()
HOST = "127.0.0.1"
COOKIE = "pyotp-test-cookie"
WAIT = 30.0            # generous: only reached when a test is broken

_counter = itertools.count(1)
_epmd_proc: Optional[subprocess.Popen] = None


def unique(prefix: str) -> str:
    """A node name unique to this test run: prefix + pid + counter, at 127.0.0.1."""
    return "%s%dn%d@%s" % (prefix, os.getpid(), next(_counter), HOST)


def unique_short(prefix: str) -> str:
    """Like unique, as a short name: at this machine's host name without its domain (what
    ``erl -sname`` uses)."""
    return "%s%dn%d@%s" % (prefix, os.getpid(), next(_counter), socket.gethostname().split(".")[0])


def ensure_epmd() -> None:
    """Make sure an EPMD that outlives the test nodes listens on 4369 (the system
    ``epmd -daemon`` if installed, else pyotp's EPMD in a helper process), so a test that
    kills a node never kills the EPMD the others registered with."""
    global _epmd_proc
    if _epmd_alive():
        return
    if shutil.which("epmd"):
        subprocess.run(["epmd", "-daemon"], check=False)
    else:
        _epmd_proc = subprocess.Popen([sys.executable, "-m", "pyotp.dist.epmd", "4369"],
                                      env=child_env(), stdout=subprocess.PIPE)
        assert _epmd_proc.stdout is not None
        _epmd_proc.stdout.readline()
    deadline = time.monotonic() + WAIT
    while not _epmd_alive():
        if time.monotonic() > deadline:
            raise RuntimeError("could not start an EPMD on port 4369")
        time.sleep(0.02)   # polling a daemon's startup, not synchronising a test


def _epmd_alive() -> bool:
    try:
        with socket.create_connection((HOST, 4369), timeout=1.0):
            return True
    except OSError:
        return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for servers that need a fixed one)."""
    s = socket.socket()
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def child_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([SRC, *TEST_DIRS] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


class NodeProc:
    """A pyotp node in a child process running ``role`` (``"module:function"``) with
    ``args`` (JSON-able). ``start_kw`` goes to ``Node.start``.

    >>> b = NodeProc("b", role="test_dist_basic:role_echo").start()
    >>> b.expect("ready")
    """

    def __init__(self, prefix: str, role: str, args: Optional[List[Any]] = None, *,
                 cookie: str = COOKIE, name: Optional[str] = None, **start_kw: Any) -> None:
        self.name = name or unique(prefix)
        self.role = role
        self.args = args or []
        self.cookie = cookie
        self.start_kw = start_kw
        self.proc: Optional[subprocess.Popen] = None
        self.lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self.log: List[str] = []
        self.cond = threading.Condition()

    def start(self) -> "NodeProc":
        ensure_epmd()
        cfg = json.dumps({"name": self.name, "cookie": self.cookie, "role": self.role,
                          "args": self.args, "start_kw": self.start_kw})
        self.proc = subprocess.Popen([sys.executable, "-u", os.path.abspath(__file__), cfg],
                                     env=child_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._reader, daemon=True).start()
        return self

    def _reader(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.cond:
                self.log.append(line)
                self.cond.notify_all()
            if line.startswith("@@"):
                self.lines.put(line[2:].rstrip("\n"))
        self.lines.put(None)
        with self.cond:
            self.log.append("")
            self.cond.notify_all()

    def wait_log(self, text: str, timeout: float = WAIT) -> str:
        """Wait until a line of the node's output contains ``text``; return that line."""
        with self.cond:
            ok = self.cond.wait_for(lambda: any(text in x for x in self.log), timeout)
            if not ok:
                raise AssertionError("%s: %r never appeared in the output:\n%s"
                                     % (self.name, text, "".join(self.log)))
            return next(x for x in self.log if text in x)

    def expect(self, tag: str, timeout: float = WAIT) -> str:
        """Wait for the next ``emit(tag, ...)`` line (other tags before it are an error)
        and return its value text."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("%s: no %r line within %ss; output:\n%s"
                                 % (self.name, tag, timeout, "".join(self.log))) from None
        if line is None:
            raise AssertionError("%s exited before reporting %r; output:\n%s"
                                 % (self.name, tag, "".join(self.log)))
        got_tag, _, value = line.partition(" ")
        if got_tag != tag:
            raise AssertionError("%s: expected %r, got %r; output:\n%s"
                                 % (self.name, tag, line, "".join(self.log)))
        return value

    def send_line(self, text: str) -> None:
        """Write a line to the node's stdin (roles read it with ``await stdin_line()``)."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(WAIT)

    def wait(self, timeout: float = WAIT) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def __enter__(self) -> "NodeProc":
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGCONT)
            except ProcessLookupError:
                pass
        self.kill()


class ErlNode:
    """An Erlang node (``erl -name``, or ``-sname`` with ``short=True``) in a child process
    evaluating ``expr`` (Erlang source; it should print lines with
    ``io:format("@@tag ~p~n", [V])`` and end with ``halt()``). Fails clearly when ``erl``
    is missing (CI installs erlang-base)."""

    def __init__(self, prefix: str, expr: str, *, cookie: str = COOKIE, hidden: bool = False,
                 ticktime: Optional[int] = None, name: Optional[str] = None,
                 extra_args: Optional[List[str]] = None, short: bool = False) -> None:
        self.extra_args = extra_args or []
        self.short = short
        self.name = name or (unique_short(prefix) if short else unique(prefix))
        self.expr = expr
        self.cookie = cookie
        self.hidden = hidden
        self.ticktime = ticktime
        self.proc: Optional[subprocess.Popen] = None
        self.lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self.log: List[str] = []
        self.cond = threading.Condition()

    def start(self) -> "ErlNode":
        erl = require_erl()
        ensure_epmd()
        if self.short:
            cmd = [erl, "-sname", self.name.split("@")[0], "-setcookie", self.cookie, "-noshell"]
        else:
            cmd = [erl, "-name", self.name, "-setcookie", self.cookie, "-noshell"]
        if self.hidden:
            cmd.append("-hidden")
        if self.ticktime:
            cmd += ["-kernel", "net_ticktime", str(self.ticktime)]
        cmd += self.extra_args
        cmd += ["-eval", self.expr]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._reader, daemon=True).start()
        return self

    _reader = NodeProc._reader
    expect = NodeProc.expect
    wait_log = NodeProc.wait_log
    send_line = NodeProc.send_line
    kill = NodeProc.kill
    wait = NodeProc.wait
    signal = NodeProc.signal
    __enter__ = NodeProc.__enter__
    __exit__ = NodeProc.__exit__


class ExNode(ErlNode):
    """An Elixir node (``elixir --name``) evaluating ``expr`` (Elixir source; it prints
    ``@@tag value`` lines with ``IO.puts`` and should end by waiting for a message from
    the test, since the node halts when ``expr`` returns). Fails clearly when ``elixir``
    is missing (CI installs it)."""

    def start(self) -> "ExNode":
        ex = require_elixir()
        ensure_epmd()
        cmd = [ex, "--name", self.name, "--cookie", self.cookie]
        erl_args = list(self.extra_args)
        if self.hidden:
            erl_args.append("-hidden")
        if self.ticktime:
            erl_args += ["-kernel", "net_ticktime", str(self.ticktime)]
        if erl_args:
            cmd += ["--erl", " ".join(erl_args)]
        cmd += ["-e", self.expr]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._reader, daemon=True).start()
        return self


def require_elixir() -> str:
    """The path of ``elixir``; fails (never skips) when it is missing."""
    ex = shutil.which("elixir")
    if ex is None:
        raise AssertionError("these interop tests need Elixir: `apt-get install -y elixir` "
                             "(CI's .ci/run installs it)")
    return ex


def require_erl() -> str:
    """The path of ``erl``. Tests that need it carry ``@pytest.mark.erlang`` (skipped
    without Erlang unless required: tests/helpers/services.py); an unmarked one fails here."""
    erl = shutil.which("erl")
    if erl is None:
        # a test marked `erlang` is skipped before it gets here (tests/conftest.py), so
        # reaching this line means the test lacks the marker
        raise AssertionError("this test needs Erlang but is not marked @pytest.mark.erlang "
                             "(`erl` is not on PATH: apt-get install -y erlang-base)")
    return erl


# ---------------------------------------------------------------------------------------
# Child side


def emit(tag: str, value: Any = "") -> None:
    """Report a line to the parent test: ``@@tag value`` (value as repr unless a str)."""
    text = value if isinstance(value, str) else repr(value)
    sys.stdout.write("@@%s %s\n" % (tag, text))
    sys.stdout.flush()


_stdin_q: "Optional[queue.Queue[str]]" = None


async def stdin_line() -> str:
    """Await the next line the parent wrote with ``send_line`` (without the newline)."""
    import asyncio
    global _stdin_q
    if _stdin_q is None:
        _stdin_q = queue.Queue()

        def pump() -> None:
            for line in sys.stdin:
                _stdin_q.put(line.rstrip("\n"))  # type: ignore[union-attr]
            _stdin_q.put("")  # type: ignore[union-attr]
        threading.Thread(target=pump, daemon=True).start()
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, _stdin_q.get)


def _child_main(cfg_text: str) -> None:
    import faulthandler
    import importlib
    import logging
    faulthandler.register(signal.SIGUSR1, all_threads=True)   # debugging a stuck node
    logging.basicConfig(level=getattr(logging, os.environ.get("PYOTP_TEST_LOG", "WARNING")), stream=sys.stdout,
                        format="%(name)s %(levelname)s %(message)s")
    cfg = json.loads(cfg_text)
    from pyotp.dist import run_node
    modname, fname = cfg["role"].split(":")
    fn = getattr(importlib.import_module(modname), fname)
    try:
        run_node(fn, *cfg["args"], node=cfg["name"], cookie=cfg["cookie"], **cfg["start_kw"])
    except BaseException as e:
        emit("crashed", repr(e))
        raise


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    _child_main(sys.argv[1])
