"""The remote console's Ctrl-C handling, with the node replaced by stand-ins: the prompt
comes back only with the statement's own reply, whatever interrupts the cancel request.
(tests/project/test_operations.py drives the real console through a pty.)"""
from __future__ import annotations

from typing import Any, Iterator, List, Optional

from pyotp.remsh import RemoteConsole


class _Reply:
    """A stand-in for the eval's future: raises or returns the given outcomes in turn."""

    def __init__(self, outcomes: List[Any]) -> None:
        self._outcomes: Iterator[Any] = iter(outcomes)

    def result(self, timeout: Optional[float] = None) -> Any:
        o = next(self._outcomes)
        if isinstance(o, BaseException):
            raise o
        return o


def _console(eval_outcomes: List[Any], cancel_outcomes: List[Any], out: Any):
    requests: List[Any] = []
    cancels = iter(cancel_outcomes)

    def call(req: Any, timeout: Optional[float]) -> Any:
        requests.append(req)
        o = next(cancels)
        if isinstance(o, BaseException):
            raise o
        return o

    def submit(req: Any) -> Any:
        requests.append(req)
        return _Reply(eval_outcomes)

    return RemoteConsole(call, submit, 7, out=out), requests


def test_ctrl_c_cancels_and_waits_for_the_statements_reply(capsys: Any) -> None:
    import io
    out = io.StringIO()
    console, requests = _console([KeyboardInterrupt(), ("cancelled", "partial\n")], [True], out)
    assert console.push("await asyncio.sleep(3600)") is False
    assert requests == [("eval", 7, "await asyncio.sleep(3600)"), ("cancel", 7)]
    assert out.getvalue() == "partial\n"
    assert capsys.readouterr().err.count("KeyboardInterrupt") == 1


def test_ctrl_c_during_the_cancel_request_repeats_it(capsys: Any) -> None:
    import io
    out = io.StringIO()
    # the second Ctrl-C lands while the cancel request is on its way: before the fix it
    # escaped to the prompt with the statement still running on the node
    console, requests = _console([KeyboardInterrupt(), ("cancelled", "")],
                                 [KeyboardInterrupt(), True], out)
    assert console.push("await asyncio.sleep(3600)") is False
    assert requests == [("eval", 7, "await asyncio.sleep(3600)"), ("cancel", 7), ("cancel", 7)]
    assert capsys.readouterr().err.count("KeyboardInterrupt") == 1


def test_a_failed_cancel_still_waits_for_the_reply(capsys: Any) -> None:
    import io
    out = io.StringIO()
    console, requests = _console([KeyboardInterrupt(), ("ok", "", "3")],
                                 [RuntimeError("timeout")], out)
    assert console.push("1 + 2") is False
    assert requests == [("eval", 7, "1 + 2"), ("cancel", 7)]
    assert out.getvalue() == "3\n"        # the statement finished after all: its value shows
    assert "KeyboardInterrupt" in capsys.readouterr().err
