"""Shared by the editor tests: editor nodes as subprocesses, waiting for them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, List, Optional

from dist_helpers import SRC, free_port
from pathutil import ROOT
DEADLINE = 30.0          # seconds any awaited event may take before the test fails


def wait_for(pred: Callable[[], Any], what: str, deadline: float = DEADLINE) -> Any:
    """Poll ``pred`` until it returns something truthy (an event, not a fixed delay)."""
    end = time.monotonic() + deadline
    while True:
        try:
            v = pred()
        except (OSError, ValueError):
            v = None
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.02)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


class EditorProc:
    """``python -m examples.editor`` in a subprocess."""

    def __init__(self, db: Path, node: Optional[str] = None, connect: List[str] = (),
                 peers: List[str] = (), port: Optional[int] = None) -> None:
        self.port = port or free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        cmd = [sys.executable, "-m", "examples.editor", "--port", str(self.port), "--db", str(db)]
        if node:
            cmd += ["--node", node, "--cookie", "editor-test"]
        for c in connect:
            cmd += ["--connect", c]
        for p in peers:
            cmd += ["--peer", p]
        # the same pyotp build as this test process (a source tree or the installed wheel)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, str(ROOT)]))
        self.proc = subprocess.Popen(cmd, cwd=str(ROOT), env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.node = node

    def ready(self, nodes: int = 0) -> "EditorProc":
        """Wait until the HTTP server answers (and sees ``nodes`` other nodes)."""
        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError("editor exited: " + self.proc.stdout.read().decode(errors="replace"))
            return len(get_json(self.url + "/api/health")["nodes"]) >= nodes
        wait_for(up, "editor node on port %d" % self.port)
        return self

    def doc(self, doc_id: str) -> Any:
        return get_json("%s/api/doc/%s" % (self.url, doc_id))

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.stdout.read().decode(errors="replace")
