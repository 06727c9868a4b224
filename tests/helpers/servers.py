"""Test servers shared by the test files (define a server here once rather than in each
file; tools/relayout_tests.py moves this module to tests/helpers/ with the others).

>>> pid = await Counter.start_link(0)
>>> GenServer.cast(pid, ("add", 2))
>>> await GenServer.call(pid, "get")
2
"""
from typing import Any

from pyotp import GenServer


class Counter(GenServer):
    """State: an int. call "get" -> the count; cast ("add", n); call "crash" raises;
    any other call is echoed back with the count: ("echo", request, n). Casts "inc", an int
    n or ("add", n) add to it; other casts are ignored."""

    def init(self, n: Any) -> Any:
        return ("ok", n)

    def handle_call(self, request: Any, from_: Any, n: int) -> Any:
        if request == "get":
            return ("reply", n, n)
        if request == "crash":
            raise RuntimeError("crash in call, on request")
        return ("reply", ("echo", request, n), n)

    def handle_cast(self, request: Any, n: int) -> Any:
        if type(request) is tuple and len(request) == 2 and request[0] == "add":
            return ("noreply", n + request[1])
        if request == "inc":
            return ("noreply", n + 1)
        if type(request) is int:
            return ("noreply", n + request)
        return ("noreply", n)


class Recorder(GenServer):
    """State: a list the test owns. Every call is appended to it and answered with the
    list's length: a test can see which requests reached the server."""

    def init(self, seen: list) -> Any:
        return ("ok", seen)

    def handle_call(self, request: Any, from_: Any, seen: list) -> Any:
        seen.append(request)
        return ("reply", len(seen), seen)


class Echo(GenServer):
    """Answers every call with the request itself; casts are ignored. State: the init arg."""

    def init(self, arg: Any) -> Any:
        return ("ok", arg)

    def handle_call(self, request: Any, from_: Any, state: Any) -> Any:
        return ("reply", request, state)

    def handle_cast(self, request: Any, state: Any) -> Any:
        return ("noreply", state)


class Worker(GenServer):
    """State: the init arg. Every call is answered with the state, except "crash", which
    raises in the callback; a cast stops the server with the cast message as the reason."""

    def init(self, arg: Any) -> Any:
        return ("ok", arg)

    def handle_call(self, request: Any, from_: Any, state: Any) -> Any:
        if request == "crash":
            raise RuntimeError("asked to")
        return ("reply", state, state)

    def handle_cast(self, request: Any, state: Any) -> Any:
        return ("stop", request, state)


class Refuses(GenServer):
    """init returns ("stop", arg): the start fails with reason arg."""

    def init(self, why: Any) -> Any:
        return ("stop", why)


class Ignores(GenServer):
    """init returns "ignore": a supervisor records the child as not started."""

    def init(self, arg: Any) -> Any:
        return "ignore"
