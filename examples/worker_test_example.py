"""The Worker of the ExUnit-style test example (tests/apps/test_examples_worker_exunit_style.py).

    python -m pytest -q tests/apps/test_examples_worker_exunit_style.py
    python examples/worker_test_example.py          # a short run of the worker itself

A small job worker, the kind of GenServer an ExUnit test suite is usually written for:

* ``await Worker.process(worker, job)`` runs a job and replies ``("ok", result)``, or
  ``("error", reason)`` for the failures the worker expects (the worker keeps running);
* ``Worker.process_async(worker, job)`` returns a reference at once; the result comes
  later as the message ``("job_done", ref, reply)``;
* ``Worker.subscribe(worker)``: the caller gets ``("worker_event", worker, job, reply)``
  after every job, and ``("worker_stopped", worker, reason)`` when the worker stops;
  subscribers are monitored and forgotten when they exit;
* jobs: ``("square", n)``, ``("div", a, b)``, ``("sleep", seconds, value)`` (answers
  ``value`` after ``seconds``, without blocking the worker: a timer and
  ``GenServer.reply``), and ``("crash", why)``, which raises: a bug the worker does not
  handle, so the process crashes and its supervisor restarts it.

The test file shows how an Elixir developer's ExUnit suite reads in pyotp:
``start_supervised`` (the child stops when the test ends), ``assert_receive`` /
``refute_receive`` on the test process's own mailbox, monitors and ``DOWN`` messages,
a ``describe`` block per function (a test class), and ``capture_log`` (pytest's
``caplog``).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, Optional

try:
    import pyotp
except ImportError:  # running from a source checkout: python examples/worker_test_example.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    import pyotp

from pyotp import GenServer, Pid


class Worker(GenServer):
    """The job worker (see the module documentation). Options (a dict, all optional):
    ``name``, and ``max_jobs`` (an int >= 1: the worker stops normally after that many
    jobs, like a pooled worker recycled after N jobs).

    >>> worker = await Worker.start_link({"name": "worker"})
    >>> await Worker.process("worker", ("square", 7))
    ('ok', 49)
    """

    @classmethod
    async def start_link(cls, opts: Optional[Dict[str, Any]] = None, *,
                         name: Any = None, timeout: Optional[float] = None,
                         max_mailbox: Any = None) -> Pid:
        """Start a worker linked to the caller; ``opts`` as in the class doc."""
        opts = dict(opts or {})
        return await super().start_link(opts, name=name or opts.get("name"), timeout=timeout,
                                        max_mailbox=max_mailbox)

    # -- the API --------------------------------------------------------------------------

    @staticmethod
    async def process(worker: Any, job: Any, timeout: float = 5.0) -> Any:
        """Run ``job``; ``("ok", result)`` or ``("error", reason)``.

        >>> await Worker.process(worker, ("div", 1, 0))
        ('error', 'division by zero')
        """
        return await GenServer.call(worker, ("process", job), timeout)

    @staticmethod
    def process_async(worker: Any, job: Any) -> Any:
        """Queue ``job`` and return a reference; the caller later receives
        ``("job_done", ref, reply)``.

        >>> ref = Worker.process_async(worker, ("square", 3))
        >>> await pyotp.receive(lambda m: m[:2] == ("job_done", ref))
        ('job_done', ref, ('ok', 9))
        """
        ref = pyotp.make_ref()
        GenServer.cast(worker, ("process_async", job, pyotp.self(), ref))
        return ref

    @staticmethod
    async def subscribe(worker: Any) -> str:
        """Receive an event after every job (and one when the worker stops)."""
        return await GenServer.call(worker, ("subscribe", pyotp.self()))  # type: ignore[no-any-return]

    @staticmethod
    async def stats(worker: Any) -> Dict[str, int]:
        """``{"processed": n, "errors": n, "subscribers": n}``."""
        return await GenServer.call(worker, "stats")  # type: ignore[no-any-return]

    # -- callbacks ------------------------------------------------------------------------

    def init(self, opts: Dict[str, Any]) -> Any:
        max_jobs = opts.get("max_jobs")
        if max_jobs is not None and (not isinstance(max_jobs, int) or isinstance(max_jobs, bool)
                                     or max_jobs < 1):
            return ("stop", ("invalid_option", "max_jobs", max_jobs))
        return ("ok", {"processed": 0, "errors": 0, "max_jobs": max_jobs, "subscribers": {}})

    def handle_call(self, req: Any, from_: Any, s: Dict[str, Any]) -> Any:
        match req:
            case ("process", ("sleep", seconds, value)):
                # answer later without blocking the worker: a timer, then GenServer.reply
                pyotp.send_after(pyotp.self(), ("wake", from_, ("sleep", seconds, value)), seconds)
                return ("noreply", s)
            case ("process", job):
                reply = self._run(job, s)
                return self._after(job, reply, s, ("reply", reply, s))
            case ("subscribe", pid):
                if pid not in s["subscribers"]:
                    s["subscribers"][pid] = pyotp.monitor(pid)
                return ("reply", "ok", s)
            case "stats":
                return ("reply", {"processed": s["processed"], "errors": s["errors"],
                                  "subscribers": len(s["subscribers"])}, s)
        return ("reply", ("error", ("unknown_call", req)), s)

    def handle_cast(self, req: Any, s: Dict[str, Any]) -> Any:
        match req:
            case ("process_async", job, pid, ref):
                reply = self._run(job, s)
                pyotp.send(pid, ("job_done", ref, reply))
                return self._after(job, reply, s, ("noreply", s))
        return ("noreply", s)

    def handle_info(self, msg: Any, s: Dict[str, Any]) -> Any:
        match msg:
            case ("wake", from_, job):
                reply = ("ok", job[2])
                s["processed"] += 1
                GenServer.reply(from_, reply)
                return self._after(job, reply, s, ("noreply", s))
            case ("DOWN", ref, "process", pid, _reason) if s["subscribers"].get(pid) == ref:
                del s["subscribers"][pid]
        return ("noreply", s)

    def terminate(self, reason: Any, s: Dict[str, Any]) -> None:
        for pid in s["subscribers"]:
            pyotp.send(pid, ("worker_stopped", pyotp.self(), reason))

    # -- the work -------------------------------------------------------------------------

    @staticmethod
    def _run(job: Any, s: Dict[str, Any]) -> Any:
        match job:
            case ("square", int(n)):
                s["processed"] += 1
                return ("ok", n * n)
            case ("div", a, b):
                try:
                    result = a / b
                except (ZeroDivisionError, TypeError) as e:
                    s["errors"] += 1
                    return ("error", str(e))
                s["processed"] += 1
                return ("ok", result)
            case ("crash", why):
                raise RuntimeError("worker crashed on purpose: %s" % (why,))
        s["errors"] += 1
        return ("error", ("unknown_job", job))

    @staticmethod
    def _after(job: Any, reply: Any, s: Dict[str, Any], result: Any) -> Any:
        """Tell the subscribers; stop after ``max_jobs`` jobs."""
        for pid in s["subscribers"]:
            pyotp.send(pid, ("worker_event", pyotp.self(), job, reply))
        done = s["processed"] + s["errors"]
        if s["max_jobs"] is not None and done >= s["max_jobs"]:
            if result[0] == "reply":
                return ("stop", "normal", result[1], s)
            return ("stop", "normal", s)
        return result


async def main() -> Dict[str, Any]:
    """A short run: a few jobs, one asynchronous, a subscriber's events."""
    worker = await Worker.start_link()
    await Worker.subscribe(worker)
    results = [await Worker.process(worker, ("square", 12)),
               await Worker.process(worker, ("div", 1, 0)),
               await Worker.process(worker, ("sleep", 0.01, "rested"))]
    ref = Worker.process_async(worker, ("div", 10, 4))
    done = await pyotp.receive(lambda m: type(m) is tuple and m[:2] == ("job_done", ref))
    events = []
    for _ in range(4):
        events.append(await pyotp.receive(lambda m: type(m) is tuple and m[0] == "worker_event"))
    for r in results:
        print("process ->", r)
    print("async   ->", done[2])
    print("events  :", [(e[2], e[3]) for e in events])
    stats = await Worker.stats(worker)
    print("stats   :", stats)
    await GenServer.stop(worker)
    return {"results": results, "async": done[2], "events": [(e[2], e[3]) for e in events],
            "stats": stats}


if __name__ == "__main__":
    pyotp.run(main)
