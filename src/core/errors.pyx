# errors.pyx: exception types of the public API. Kept in one place so every component
# raises the same classes and the Python layer can re-export them.

class Exit(Exception):
    """Raised where an OTP process would *exit*: a call to a dead server, a call that timed
    out, ``exit(reason)`` inside a process. ``reason`` is the exit reason as OTP gives it.

    >>> dead_pid, ref = pyotp.spawn_monitor(lambda: None)
    >>> _ = await pyotp.receive(lambda m: m[0] == "DOWN")
    >>> try:
    ...     await GenServer.call(dead_pid, "ping")
    ... except pyotp.Exit as e:
    ...     e.reason[0]
    'noproc'
    """

    def __init__(self, reason):
        Exception.__init__(self, reason)
        self.reason = reason


class BadArg(ValueError):
    """Erlang's ``badarg``: an argument a BIF cannot accept (for example registering a name
    that is already taken, or sending to a name nobody registered)."""


class CallbackError(RuntimeError):
    """A plain ``def`` callback (or code outside any process) tried to do something that
    has to wait, such as ``GenServer.call`` or ``receive``. Make the callback ``async def``."""


class StartError(Exception):
    """``start``/``start_link`` failed: ``init`` returned ``("stop", reason)``, raised, or the
    name was taken (``reason == ("already_started", pid)``). ``reason`` is what OTP's
    ``{error, Reason}`` would carry.
    """

    def __init__(self, reason):
        Exception.__init__(self, reason)
        self.reason = reason
