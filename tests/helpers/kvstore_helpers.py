"""Helpers for the kvstore tests: kvstore nodes and a real redis-server as child processes,
and a raw RESP socket. Every wait is for an output line or a reply (with a generous timeout
that only fires when something is broken), never a sleep."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any, List, Optional

from dist_helpers import HOST, WAIT, child_env, ensure_epmd, free_port, unique
from pathutil import ROOT as _ROOT
from services import executable

ROOT = str(_ROOT)         # the repository root, wherever this helper sits in tests/


class Proc:
    """A child process whose output lines are collected; ``wait_log`` waits for one."""

    def __init__(self, cmd: List[str], name: str) -> None:
        self.name = name
        self.log: List[str] = []
        self.cond = threading.Condition()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env({"PYTHONPATH": os.pathsep.join(
            [child_env()["PYTHONPATH"], ROOT])}), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._reader, daemon=True).start()

    def _reader(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.cond:
                self.log.append(line)
                self.cond.notify_all()
        with self.cond:
            self.log.append("")
            self.cond.notify_all()

    def wait_log(self, text: str, count: int = 1, timeout: float = WAIT) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: sum(text in x for x in self.log) >= count, timeout):
                raise AssertionError("%s: %r never appeared:\n%s" % (self.name, text, "".join(self.log)))

    def output(self) -> str:
        with self.cond:
            return "".join(self.log)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(WAIT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.kill()


class KvNode(Proc):
    """``python -m examples.kvstore`` on a free port (a distributed node when ``node``)."""

    def __init__(self, *args: str, port: Optional[int] = None, node: Optional[str] = None,
                 peers: Optional[List[str]] = None, data: Optional[str] = None) -> None:
        self.port = port or free_port()
        cmd = [sys.executable, "-u", "-m", "examples.kvstore", "--port", str(self.port)]
        if node:
            ensure_epmd()
            cmd += ["--node", node, "--cookie", "kv-test-cookie"]
        for p in peers or []:
            cmd += ["--peer", p]
        if data:
            cmd += ["--data", data]
        cmd += list(args)
        self.node = node
        self.started = 0
        self.cmd = cmd
        super().__init__(cmd, node or "kvstore:%d" % self.port)
        try:
            self.wait_ready()
        except BaseException:
            self.kill()
            raise

    def wait_ready(self) -> None:
        self.started += 1
        self.wait_log("kvstore ready on", self.started)

    def restart(self) -> None:
        """Start the same node again (after a kill), keeping the collected output."""
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=child_env({"PYTHONPATH": os.pathsep.join(
            [child_env()["PYTHONPATH"], ROOT])}), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._reader, daemon=True).start()
        try:
            self.wait_ready()
        except BaseException:
            self.kill()
            raise


class RedisServer(Proc):
    """A real redis-server on a free port, in memory only."""

    def __init__(self) -> None:
        exe = executable("redis", "redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed (Debian package redis-server)")
        self.port = free_port()
        super().__init__([exe, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no"],
                         "redis-server")
        self.wait_log("Ready to accept connections")


def redis_cli() -> str:
    exe = executable("redis", "redis-cli")
    if exe is None:
        raise RuntimeError("redis-cli is not installed (Debian package redis-tools)")
    return exe


class Raw:
    """A raw socket speaking RESP: ``cmd(*args)`` sends a multibulk, ``reply()`` reads one
    whole reply as bytes (RESP2)."""

    def __init__(self, port: int) -> None:
        self.s = socket.create_connection((HOST, port), timeout=WAIT)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.s.sendall(data)

    def cmd(self, *args: Any) -> bytes:
        parts = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.send(b"".join(parts))
        return self.reply()

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            d = self.s.recv(65536)
            if not d:
                raise EOFError("connection closed; got %r" % self.buf)
            self.buf += d
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line + b"\r\n"

    def reply(self) -> bytes:
        line = self._line()
        if line[:1] in b"$":
            n = int(line[1:-2])
            if n < 0:
                return line
            while len(self.buf) < n + 2:
                d = self.s.recv(65536)
                if not d:
                    raise EOFError("connection closed")
                self.buf += d
            body, self.buf = self.buf[:n + 2], self.buf[n + 2:]
            return line + body
        if line[:1] in (b"*", b"~", b"%"):
            n = int(line[1:-2]) * (2 if line[:1] == b"%" else 1)
            return line + b"".join(self.reply() for _ in range(max(n, 0)))
        return line

    def closed(self) -> bool:
        """True once the server has closed the connection (reads to EOF)."""
        while True:
            try:
                d = self.s.recv(65536)
            except ConnectionResetError:
                return True
            if not d:
                return True
            self.buf += d

    def close(self) -> None:
        self.s.close()


def poll(fn: Any, what: str, timeout: float = WAIT) -> Any:
    """Call ``fn`` until it returns something true (polling a server's state, as a client
    would; each call is a request/reply round trip, not a sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.01)


__all__ = ["KvNode", "RedisServer", "Raw", "redis_cli", "poll", "live_members_of", "unique", "free_port", "WAIT"]


def live_members_of(port: int) -> set:
    """The nodes a kvstore node considers live (INFO replication)."""
    import redis
    c = redis.Redis(port=port)
    try:
        v = c.info("replication")["live_members"]      # redis-py splits "a,b" into a list
        return set(v if isinstance(v, list) else v.split(","))
    finally:
        c.close()
