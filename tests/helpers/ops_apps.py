"""Code the operations tests run on their nodes (tests/project/test_operations.py): an application
whose supervisor's children say when they terminate, and a server a console calls."""
import functools
import sys

import pyotp
from pyotp import GenServer, Supervisor
from pyotp.application import Application


class Worker(GenServer):
    """Traps exits, so its supervisor's shutdown runs terminate (which prints a line)."""

    def init(self, tag):
        pyotp.process_flag("trap_exit", True)
        return ("ok", tag)

    def handle_call(self, req, from_, tag):
        if req == "tag":
            return ("reply", tag, tag)
        return ("reply", ("echo", req), tag)

    def terminate(self, reason, tag):
        print("terminated %s %s" % (tag, reason), flush=True)
        sys.stdout.flush()


class OpsApp(Application):
    """The operations test application."""
    name = "ops_app"
    vsn = "1.2.3"

    async def start(self, start_type, args):
        return await Supervisor.start_link(
            [{"id": t, "start": (functools.partial(Worker.start_link, name="worker_" + t), (t,))}
             for t in ("first", "second", "third")], strategy="one_for_one")
