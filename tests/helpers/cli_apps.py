"""Applications used by tests/project/test_cli.py through ``python -m pyotp run cli_apps:...``."""
import pyotp
from pyotp import GenServer
from pyotp.application import Application

NOT_AN_APP = 42


class Idle(GenServer):
    def init(self, arg):
        return ("ok", arg, arg)          # arg is an init timeout (None: none)

    def handle_info(self, msg, state):
        if msg == "timeout":
            return ("stop", "crashed", state)
        return ("noreply", state)


class FailingApp(Application):
    name = "cli_failing"

    def start(self, start_type, args):
        return ("error", "missing_database")


class CrashingApp(Application):
    """Its top process stops with reason "crashed" right after starting."""
    name = "cli_crashing"

    async def start(self, start_type, args):
        return await Idle.start_link(0)


class HangingApp(Application):
    """prep_stop never returns: only a second signal ends the runner."""
    name = "cli_hanging"

    async def start(self, start_type, args):
        return await Idle.start_link(None)

    async def prep_stop(self, state):
        await pyotp.receive(lambda m: False)
