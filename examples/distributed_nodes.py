"""Shared plumbing of the distributed examples: start pyotp nodes as separate OS processes.

Each distributed example is also a node program: ``python examples/<example>.py --role
ROLE --node NAME --cookie COOKIE [ARG...]`` runs that example's role ``ROLE`` as node
``NAME``. A role prints ``READY`` once it is up, then lines the demo may wait for.
``NodeProcess`` starts such a program and reads its lines (in a thread, so the demo's own
node keeps running).
"""
from __future__ import annotations

import argparse
import os
import queue
import subprocess
import sys
import threading
from typing import Any, Awaitable, Callable, Dict, List, Optional

HOST = "127.0.0.1"


def node_name(prefix: str) -> str:
    """A node name unique to this run: prefix + OS pid, at 127.0.0.1."""
    return "%s%d@%s" % (prefix, os.getpid(), HOST)


def _pyotp_path() -> str:
    import pyotp
    return os.path.dirname(os.path.dirname(os.path.abspath(pyotp.__file__)))


class NodeProcess:
    """A node program (an example file run with ``--role``) in a child process.

    >>> p = NodeProcess(__file__, "store", node_name("store"), "secret")
    >>> p.wait_for("READY")
    """

    def __init__(self, script: str, role: str, name: str, cookie: str, *args: str) -> None:
        self.name = name
        env = dict(os.environ)
        paths = [_pyotp_path(), os.path.dirname(os.path.abspath(script))]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        self.proc = subprocess.Popen(
            [sys.executable, "-u", script, "--role", role, "--node", name, "--cookie", cookie, *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.PIPE, text=True, env=env)
        self.lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self.output: List[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, prefix: str, timeout: float = 30.0) -> str:
        """Block until a line starting with ``prefix`` (earlier lines are skipped)."""
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError("%s printed no %r line; output:\n%s"
                                   % (self.name, prefix, "".join(self.output))) from None
            if line is None:
                raise RuntimeError("%s exited; output:\n%s" % (self.name, "".join(self.output)))
            if line.startswith(prefix):
                return line[len(prefix):].strip()

    async def wait_for_async(self, prefix: str, timeout: float = 30.0) -> str:
        """wait_for from inside a pyotp process (runs in a thread, the node keeps going)."""
        import asyncio
        return await asyncio.get_running_loop().run_in_executor(None, self.wait_for, prefix, timeout)

    def kill(self) -> None:
        """SIGKILL: the node vanishes without saying goodbye."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        """Ask the node to stop (close its stdin: roles end when it closes)."""
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


async def stdin_closed() -> None:
    """For roles: wait until the parent closes our stdin (NodeProcess.stop)."""
    import asyncio
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)


def role_main(roles: Dict[str, Callable[..., Awaitable[Any]]], argv: Optional[List[str]] = None) -> bool:
    """If the command line asks for a role, run it as a node and return True."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--role")
    ap.add_argument("--node")
    ap.add_argument("--cookie", default="pyotp-example")
    ap.add_argument("args", nargs="*")
    ns = ap.parse_args(argv)
    if not ns.role:
        return False
    from pyotp.dist import run_node
    # python_payloads=True: Python values of the fixed safe set (sets, exceptions, ...)
    # cross the wire when the other node enables it too (docs/distribution.md, "Security")
    run_node(roles[ns.role], *ns.args, node=ns.node, cookie=ns.cookie, python_payloads=True)
    return True
