"""pyotp.run on SIGINT/SIGTERM: the supervision tree stops in order (a trap_exit worker's
terminate runs), then SIGINT raises KeyboardInterrupt and SIGTERM exits with 143; a second
signal while stopping exits at once. Each case runs a script in a child process and waits
for its output lines (no sleeps)."""
from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from dist_helpers import child_env

SCRIPT = r'''
import asyncio, sys
import pyotp
from pyotp import GenServer, Supervisor

class Worker(GenServer):
    def init(self, slow):
        pyotp.process_flag("trap_exit", True)
        return ("ok", slow)

    async def terminate(self, reason, slow):
        print("terminate %s" % (reason,), flush=True)
        if slow:
            await asyncio.sleep(120)
        print("terminated", flush=True)

async def main(slow):
    await Supervisor.start_link([(Worker, slow)], strategy="one_for_one")
    print("ready", flush=True)
    await pyotp.receive()

pyotp.run(main, sys.argv[1] == "slow", shutdown_timeout=300)
print("run returned", flush=True)
'''


def start(mode):
    p = subprocess.Popen([sys.executable, "-c", SCRIPT, mode], env=child_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout is not None
    assert p.stdout.readline() == "ready\n"
    return p


@pytest.mark.parametrize("sig,status", [(signal.SIGTERM, 128 + signal.SIGTERM),
                                        (signal.SIGINT, -signal.SIGINT)])
def test_signal_runs_terminate_then_exits(sig, status):
    p = start("fast")
    p.send_signal(sig)
    out, err = p.communicate(timeout=60)
    assert out == "terminate shutdown\nterminated\n", err
    # SIGINT: KeyboardInterrupt escapes pyotp.run (Python then exits by SIGINT);
    # SIGTERM: SystemExit(143)
    assert p.returncode == status, err
    if sig == signal.SIGINT:
        assert "KeyboardInterrupt" in err


def test_second_signal_exits_at_once():
    p = start("slow")
    p.send_signal(signal.SIGTERM)
    assert p.stdout.readline() == "terminate shutdown\n"
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)   # the slow terminate would take 120 s
    assert p.returncode == 128 + signal.SIGINT
    assert out == "" and "received SIGINT again while stopping, exiting now" in err


def test_off_the_main_thread_no_handlers_are_installed():
    import threading

    import pyotp

    async def main():
        return "done"
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    out = []
    t = threading.Thread(target=lambda: out.append(pyotp.run(main)))
    t.start()
    t.join(60)
    assert out == ["done"]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
