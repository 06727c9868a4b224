"""ExUnit-style testing helpers and the pytest plugin (registered as ``pyotp.testing``
through the ``pytest11`` entry point).

* ``async def`` tests marked ``@pytest.mark.pyotp`` (or every ``async def`` test when the
  ini option ``pyotp_mode = auto`` is set) run as the first process of a fresh node, so
  they can ``receive``, link, monitor and call servers directly.
* ``await start_supervised(child_spec)`` starts a child for the duration of the test and
  stops it (newest first) when the test ends, like ExUnit's ``start_supervised``.
* ``await assert_receive(pattern, timeout=0.1)`` / ``await refute_receive(...)`` and the
  non-waiting ``assert_received`` / ``refute_received``.
* the ``pyotp_node`` fixture: a node on a background thread for synchronous tests.

Patterns: a callable is a predicate; ``ANY`` matches anything; tuples and lists match
element-wise (same length); dicts match when every pattern key matches; anything else
compares with ``==``.

>>> @pytest.mark.pyotp
... async def test_counter():
...     pid = await start_supervised((Counter, 0))
...     GenServer.cast(pid, "inc")
...     pyotp.send(pyotp.self(), ("count", await GenServer.call(pid, "get")))
...     await assert_receive(("count", 1))
"""
from __future__ import annotations

import asyncio
import functools
import inspect
from typing import Any, Callable, Iterator, List, Optional

import pytest

from . import _core
from .child_spec import validate_child
from .gen_server import GenServer


class _Any:
    def __repr__(self) -> str:
        return "ANY"


ANY: Any = _Any()
"""Wildcard for receive patterns."""


def matches(pattern: Any, value: Any) -> bool:
    """Does ``value`` match ``pattern`` (see the module doc)?

    >>> matches(("ok", ANY), ("ok", 42))
    True
    """
    if pattern is ANY:
        return True
    if callable(pattern) and not isinstance(pattern, type):
        return bool(pattern(value))
    if isinstance(pattern, tuple) and type(value) is tuple or \
            isinstance(pattern, list) and type(value) is list:
        return len(pattern) == len(value) and all(matches(p, v) for p, v in zip(pattern, value))
    if isinstance(pattern, dict) and isinstance(value, dict):
        return all(k in value and matches(p, value[k]) for k, p in pattern.items())
    return bool(pattern == value)


def _mailbox() -> List[Any]:
    info = _core.process_info(_core.self())
    return [] if info is None else list(info["messages"])


async def assert_receive(pattern: Any = ANY, timeout: float = 0.1) -> Any:
    """Wait up to ``timeout`` seconds for a message matching ``pattern`` and return it;
    otherwise fail, showing the mailbox. Other messages stay queued.

    >>> pid, ref = pyotp.spawn_monitor(lambda: None)
    >>> msg = await assert_receive(("DOWN", ANY, "process", pid, "normal"))
    """
    try:
        return await _core.receive(lambda m: matches(pattern, m), timeout=timeout)
    except TimeoutError:
        raise AssertionError("no message matching %r after %ss; mailbox: %r"
                             % (pattern, timeout, _mailbox())) from None


def assert_received(pattern: Any = ANY) -> Any:
    """Like assert_receive with timeout 0, without awaiting: the message must already be
    in the mailbox.

    >>> pyotp.send(pyotp.self(), ("hello", 1))
    ('hello', 1)
    >>> assert_received(("hello", ANY))
    ('hello', 1)
    """
    for m in _mailbox():
        if matches(pattern, m):
            _take(pattern)
            return m
    raise AssertionError("no message matching %r in the mailbox: %r" % (pattern, _mailbox()))


def _take(pattern: Any) -> None:
    # remove the first match without waiting (receive with timeout 0 never suspends when
    # a matching message is queued: it hands back a ready awaitable)
    aw: Any = _core.receive(lambda m: matches(pattern, m), timeout=0)
    try:
        aw.send(None)
    except StopIteration:
        pass


async def refute_receive(pattern: Any = ANY, timeout: float = 0.1) -> None:
    """Fail if a message matching ``pattern`` arrives within ``timeout`` seconds.

    >>> await refute_receive(("EXIT", ANY, ANY), timeout=0.05)
    """
    try:
        m = await _core.receive(lambda m: matches(pattern, m), timeout=timeout)
    except TimeoutError:
        return
    raise AssertionError("unexpectedly received %r (pattern %r)" % (m, pattern))


def refute_received(pattern: Any = ANY) -> None:
    """Fail if a message matching ``pattern`` is already in the mailbox.

    >>> refute_received("late reply")
    """
    for m in _mailbox():
        if matches(pattern, m):
            raise AssertionError("unexpectedly found %r in the mailbox (pattern %r)" % (m, pattern))


# ---------------------------------------------------------------------------------------
# start_supervised

_supervised: List[List[Any]] = []


async def start_supervised(spec: Any) -> Any:
    """Start a child for the rest of the test (stopped when the test ends, newest first)
    and return its pid. The test process is not linked to it: a crash of the child does
    not crash the test, and the child is stopped with reason "shutdown" at the end.

    In a test run by the pyotp plugin::

        pid = await start_supervised((Counter, 0))
    """
    if not _supervised:
        raise RuntimeError("start_supervised only works inside a test run by the pyotp plugin")
    # the same child-spec rules as the supervisors (shorthands, dicts, (fn, args, kwargs))
    child = validate_child(spec)
    # trap exits while starting: a failing init then raises StartError in the test
    # instead of killing it through the link that start_link makes
    was = _core.process_flag("trap_exit", True)
    try:
        pid = await child.fn(*child.args, **(child.kwargs or {}))
        if pid is not None:
            _core.unlink(pid)
            _supervised[-1].append(pid)
    finally:
        _core.process_flag("trap_exit", was)
    return pid


async def _stop_supervised(pids: List[Any]) -> None:
    for pid in reversed(pids):
        if _core.is_alive(pid):
            try:
                await GenServer.stop(pid, "shutdown", 5.0)
            except _core.Exit:
                pass


def _run_as_process(fn: Callable[..., Any], kwargs: Any) -> Any:
    async def main() -> Any:
        _supervised.append([])
        try:
            return await fn(**kwargs)
        finally:
            await _stop_supervised(_supervised.pop())
    return _core_run(main)


def _core_run(main: Callable[[], Any]) -> Any:
    from .runtime import run
    return run(main)


# ---------------------------------------------------------------------------------------
# pytest plugin

def pytest_addoption(parser: Any) -> None:
    parser.addini("pyotp_mode", "auto: run every `async def` test as a pyotp process", default="strict")


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "pyotp: run this async test as the first process of a fresh pyotp node")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: Any) -> Optional[bool]:
    fn = pyfuncitem.obj
    if not inspect.iscoroutinefunction(fn):
        return None
    auto = pyfuncitem.config.getini("pyotp_mode") == "auto"
    if not (auto or pyfuncitem.get_closest_marker("pyotp")):
        return None
    argnames = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in argnames}
    _run_as_process(fn, kwargs)
    return True


@pytest.fixture
def pyotp_node() -> Iterator[Any]:
    """A node on a background thread (``pyotp.NodeThread``) for synchronous tests;
    stopped after the test.

    >>> def test_sync(pyotp_node):
    ...     pid = pyotp_node.call_in_loop(Counter.start, 0)
    ...     assert pyotp_node.call(pid, "get") == 0
    """
    from .runtime import Runtime
    node = Runtime.start_thread()
    try:
        yield node
    finally:
        node.stop()
