"""Runs the ``>>>`` examples of pyotp's docstrings inside a running node, so that
``await`` works at the prompt's top level (as in ``python -m asyncio``).

Each docstring runs in a fresh namespace: its module's globals (as doctest gives),
``pyotp``, the names of ``from pyotp import *``, ``asyncio`` and ``DOC_WORLD`` (below),
in a fresh node. A
docstring that starts a node itself (``pyotp.run(main)``) runs outside any node instead
(an ``await`` at its prompt gets a node of its own). The output is compared as doctest
does (ELLIPSIS and NORMALIZE_WHITESPACE on).

DOC_WORLD: what docstrings may take as given, the servers and names that the examples
of the reference docs use: a ``Counter`` GenServer class (tests/helpers/servers.py), one started
and registered as ``"counter"`` (its pid in ``counter`` and ``pid``), a supervisor
``sup`` (registered ``"sup"``, one Counter child with id ``"worker"``), an event manager
``mgr`` (``"alarms"``), a unique registry ``"MyReg"``, a PubSub ``"Chat"``, and
``Node``, ``rpc``, ``pg``, ``global_names``, ``beam_api`` from pyotp.dist; and, in every
docstring (section "More of the world" below), the classes ``Greeter``, ``Collector``,
``Metrics``, ``MyApp``, ``Broken`` (applications) and ``Counter``. A docstring needing
anything else starts it itself, or is written as a plain indented example (no ``>>>``).
What a docstring leaves behind (distribution, a node on a thread, global names, pg
scopes, the application environment) is undone before the next one.

    PYTHONPATH=src:tests python tests/helpers/doctest_runner.py [NAME ...] [--update-pending]
"""
from __future__ import annotations

import ast
import asyncio
import doctest
import importlib
import inspect
import io
import pkgutil
import sys
import types
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import pyotp

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
TIMEOUT = 3.0            # seconds a docstring's examples may wait in all
_CHECKER = doctest.OutputChecker()


@dataclass
class Result:
    name: str
    failures: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def modules() -> List[types.ModuleType]:
    """pyotp, its compiled core and every submodule (the optional ones whose third-party
    dependencies are missing are left out)."""
    out = [pyotp, importlib.import_module("pyotp._core")]
    for info in pkgutil.walk_packages(pyotp.__path__, "pyotp."):
        if info.name.endswith("__main__"):
            continue
        try:
            out.append(importlib.import_module(info.name))
        except ImportError:
            continue
    seen, uniq = set(), []
    for m in out:
        if m.__name__ not in seen:
            seen.add(m.__name__)
            uniq.append(m)
    return uniq


def doctests() -> List[doctest.DocTest]:
    finder = doctest.DocTestFinder(exclude_empty=True)
    found: Dict[str, doctest.DocTest] = {}
    for m in modules():
        try:
            tests = finder.find(m, m.__name__)
        except ValueError:
            continue
        for t in tests:
            if t.examples and t.name not in found:
                found[t.name] = t
    return sorted(found.values(), key=lambda t: t.name)


async def _world(ns: Dict[str, Any]) -> None:
    from pyotp.dist import Node, beam_api, global_names, pg, rpc
    from servers import Counter
    for k, v in {"Counter": Counter, "Node": Node, "rpc": rpc, "pg": pg,
                 "global_names": global_names, "beam_api": beam_api}.items():
        ns.setdefault(k, v)
    ns["counter"] = ns["pid"] = await Counter.start_link(0, name="counter")
    ns["sup"] = await pyotp.Supervisor.start_link(
        [pyotp.Supervisor.child_spec((Counter, 0), id="worker")], strategy="one_for_one", name="sup")
    ns["mgr"] = await pyotp.EventManager.start_link(name="alarms")
    await pyotp.Registry.start_link(keys="unique", name="MyReg")
    await pyotp.PubSub.start_link(name="Chat")


# ---------------------------------------------------------------------------------------
# The event and stage part of the world: what the gen_event examples take as given. Every
# docstring gets ``Collect``, an event handler that keeps the events it is notified of
# (``handle_call`` of anything returns them); the docstrings named in _COLLECTING also find
# it installed in ``mgr``, notified of "hello". The gen_stage docstrings get a fresh
# ``producer`` (0, 1, 2, ... on demand) and ``consumer`` (drops what it gets).

class Collect(pyotp.EventHandler):
    def init(self, arg: Any) -> Any:
        return ("ok", [])

    def handle_event(self, event: Any, events: Any) -> Any:
        return ("ok", events + [event])

    def handle_call(self, request: Any, events: Any) -> Any:
        return ("ok", list(events), events)


class Numbers(pyotp.GenStage):
    """A producer of 0, 1, 2, ... as demanded."""
    def init(self, n: Any) -> Any:
        return ("producer", n)

    def handle_demand(self, demand: int, n: int) -> Any:
        return ("noreply", list(range(n, n + demand)), n + demand)


class Sink(pyotp.GenStage):
    """A consumer that drops what it gets."""
    def init(self, _: Any) -> Any:
        return ("consumer", None)

    def handle_events(self, events: Any, from_: Any, state: Any) -> Any:
        return ("noreply", [], state)


_COLLECTING = {"pyotp.gen_event.EventManager." + n for n in (
    "call", "delete_handler", "swap_handler", "swap_sup_handler", "which_handlers")}


async def _world_events(test: doctest.DocTest, ns: Dict[str, Any]) -> None:
    ns.setdefault("Collect", Collect)
    if test.name.startswith("pyotp.gen_stage."):
        # the gen_stage examples' ``producer`` (Numbers from 0) and ``consumer`` (Sink)
        ns.setdefault("producer", await Numbers.start_link(0))
        ns.setdefault("consumer", await Sink.start_link(None))
    if test.name in _COLLECTING:
        await pyotp.EventManager.add_handler(ns["mgr"], Collect, None)
        await pyotp.EventManager.sync_notify(ns["mgr"], "hello")

# ---------------------------------------------------------------------------------------


def _namespace(test: doctest.DocTest) -> Dict[str, Any]:
    """The docstring's module's globals (as doctest gives), plus pyotp's public names."""
    ns: Dict[str, Any] = dict(test.globs)
    ns["__name__"] = "__doctest__"
    ns.setdefault("pyotp", pyotp)
    ns.setdefault("asyncio", asyncio)
    for k in getattr(pyotp, "__all__", []):
        if hasattr(pyotp, k):
            ns.setdefault(k, getattr(pyotp, k))
    for k, v in _more_names().items():       # section "More of the world", below
        ns.setdefault(k, v)
    return ns


def _line(test: doctest.DocTest, ex: doctest.Example) -> int:
    return (test.lineno or 0) + ex.lineno + 1


def _exc_text(e: BaseException) -> str:
    return "%s: %s\n" % (type(e).__name__, e)


async def _step(test: doctest.DocTest, ex: doctest.Example, ns: Dict[str, Any],
                in_node: bool) -> Optional[str]:
    """Run one example; None if it did what it shows, else the failure."""
    out = io.StringIO()
    try:
        code = compile(ex.source, "<%s line %s>" % (test.name, ex.lineno), "single",
                       flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
        old_hook = sys.displayhook
        sys.displayhook = _display
        try:
            with redirect_stdout(out):
                r = eval(code, ns)
                if inspect.iscoroutine(r):
                    if in_node:
                        await r
                    else:               # an `await` at the prompt of a docstring that
                        async def main() -> Any:    # also calls pyotp.run: a node for it
                            return await r
                        pyotp.run(main, use_uvloop=False)
        finally:
            sys.displayhook = old_hook
    except BaseException as e:
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        if ex.exc_msg is not None and _CHECKER.check_output(ex.exc_msg, _exc_text(e), FLAGS):
            return None
        return "line %s: %s\n    raised %s" % (_line(test, ex), ex.source.strip(), _exc_text(e).strip())
    got = out.getvalue()
    if ex.exc_msg is not None:
        return "line %s: %s\n    expected %s, got %r" % (_line(test, ex), ex.source.strip(),
                                                       ex.exc_msg.strip(), got)
    if not _CHECKER.check_output(ex.want, got, FLAGS):
        return "line %s: %s\n    expected %r, got %r" % (_line(test, ex), ex.source.strip(),
                                                       ex.want, got)
    return None


async def _run_examples(test: doctest.DocTest, in_node: bool) -> List[str]:
    ns = _namespace(test)
    if in_node:
        await _world(ns)
        await _world_events(test, ns)
    else:
        ns.setdefault("Collect", Collect)
    try:
        for ex in test.examples:
            failure = await _step(test, ex, ns, in_node)
            if failure is not None:
                return [failure]            # the later examples build on this one
        return []
    finally:
        _stop_thread_nodes(ns)


def _display(value: Any) -> None:
    if value is not None:
        sys.stdout.write(repr(value) + "\n")


def run(test: doctest.DocTest) -> Result:
    """Run a docstring's examples: inside a node with DOC_WORLD, or, for a docstring
    that starts a node itself (it calls ``pyotp.run``/``run_node``), outside any."""
    in_node = not any(call in ex.source for ex in test.examples for call in _OUTSIDE_A_NODE)
    saved = (sys.stdout, sys.displayhook)      # an example killed mid-way keeps neither
    # the process-wide configuration and application environment as a fresh program has
    # them (nothing configured), not as the tests that ran before left them; and what the
    # examples change there (put_env, configure...) is undone afterwards
    from pyotp import application, config
    saved_config = (dict(config._last), set(config._configured))
    saved_apps = ({k: dict(v) for k, v in application._env.items()}, dict(application._loaded),
                  dict(application._classes), dict(application._running))
    config._last.update(path=None, env=None)
    for table in (application._env, application._loaded, application._running):
        table.clear()
    restore_more = _more_save()
    try:
        if in_node:
            async def examples(parent: Any) -> None:
                pyotp.send(parent, ("done", await _run_examples(test, True)))

            async def main() -> List[str]:
                # in a process of its own, so that an example that waits for ever (a
                # receive nothing answers) is killed after TIMEOUT and reported
                pid, ref = pyotp.spawn_monitor(examples, pyotp.self())
                try:
                    msg = await pyotp.receive(lambda m: m[0] == "done" or (m[0] == "DOWN" and m[1] == ref),
                                              timeout=TIMEOUT)
                except TimeoutError:
                    pyotp.exit(pid, "kill")
                    return ["an example was still waiting after %s s" % TIMEOUT]
                finally:
                    await _more_teardown()
                if msg[0] == "done":
                    return list(msg[1])
                return ["the examples' process exited: %r" % (msg[4],)]
            failures = pyotp.run(main, use_uvloop=False)
        else:
            coro = _run_examples(test, False)
            try:
                coro.send(None)
            except StopIteration as stop:
                failures = stop.value
            else:
                coro.close()
                failures = ["an example awaited outside a node"]
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            raise
        failures = ["the node failed: %s: %s" % (type(e).__name__, e)]
    finally:
        restore_more()
        sys.stdout, sys.displayhook = saved
        config._last.clear()
        config._last.update(saved_config[0])
        config._configured.clear()
        config._configured.update(saved_config[1])
        for table, before in zip((application._env, application._loaded, application._classes,
                                  application._running), saved_apps):
            table.clear()
            table.update(before)
    return Result(test.name, failures)


# ---------------------------------------------------------------------------------------
# More of the world (issue 16, the docstrings of pyotp.registry, application, config,
# pool, partition_supervisor, runtime, cli, remsh, demo and dist): names only, made
# afresh for each docstring, so that nothing here starts a process (the pids the other
# docstrings show stay as they are) or outlives the docstring (the Application classes
# register their names; run() restores that table).
#
#   Greeter, Collector      small GenServers (Greeter answers "hello" with "hello!")
#   Metrics                 an Application "metrics" (env interval=1.0) running a Collector
#   MyApp                   an Application "my_app" (env greeting="hello", port=4000)
#                           depending on Metrics, running a supervisor of one Greeter
#   Broken                  an Application "broken" whose start returns 42
#   Counter                 tests/helpers/servers.py's, also where no node runs

# a docstring calling one of these starts a node itself: it runs outside any node
_OUTSIDE_A_NODE = ("run(", "run_node(", "start_thread(")


def _more_names() -> Dict[str, Any]:
    from pyotp import Application, GenServer, Supervisor
    from servers import Counter

    class Greeter(GenServer):
        def init(self, arg: Any) -> Any:
            return ("ok", arg)

        def handle_call(self, request: Any, from_: Any, state: Any) -> Any:
            return ("reply", request + "!" if isinstance(request, str) else request, state)

    class Collector(GenServer):
        def init(self, interval: Any) -> Any:
            return ("ok", interval)

    class Metrics(Application):
        name = "metrics"
        env = {"interval": 1.0}

        def start(self, start_type: Any, args: Any) -> Any:
            return Collector.start_link(Application.get_env("metrics", "interval"))

    class MyApp(Application):
        name = "my_app"
        env = {"greeting": "hello", "port": 4000}
        dependencies = [Metrics]

        async def start(self, start_type: Any, args: Any) -> Any:
            return await Supervisor.start_link([(Greeter, None)], strategy="one_for_one")

    class Broken(Application):
        name = "broken"

        def start(self, start_type: Any, args: Any) -> Any:
            return 42

    return {"Greeter": Greeter, "Collector": Collector, "Metrics": Metrics, "MyApp": MyApp,
            "Broken": Broken, "Counter": Counter}


def _stop_thread_nodes(ns: Dict[str, Any]) -> None:
    """A node a docstring started on a thread and did not stop (it failed before
    ``node.stop()``) would make every later docstring fail: stopped here."""
    from pyotp.runtime import NodeThread
    for v in list(ns.values()):
        if isinstance(v, NodeThread):
            try:
                v.stop()
            except Exception:
                pass


# per-process tables of the distribution layer that outlive a node: emptied for each
# docstring (a name registered by an earlier one would show up), then restored
_MORE_TABLES = (("pyotp.dist.global_names", ("_table", "_shadows", "_resolvers")),
                ("pyotp.dist.pg", ("_scopes",)))


def _more_save() -> Any:
    saved = []
    for modname, names in _MORE_TABLES:
        mod = importlib.import_module(modname)
        for n in names:
            table = getattr(mod, n, None)
            if isinstance(table, dict):
                saved.append((table, dict(table)))
                table.clear()

    def restore() -> None:
        for table, before in saved:
            table.clear()
            table.update(before)
    return restore


async def _more_teardown() -> None:
    """What a docstring may leave behind in the process beyond its node: distribution
    (the kernel is per OS process) is stopped before the node ends."""
    from pyotp.dist import kernel
    if kernel._kernel is not None:
        from pyotp.dist import Node
        await Node.stop()


def write_pending(results: List[Result]) -> None:
    """--update-pending: rewrite tests/doctest_pending.txt as the docstrings that fail now
    (after a merge brought new ones; check the diff: the list should only shrink)."""
    import re
    from pathutil import TESTS
    path = TESTS / "doctest_pending.txt"
    head = [l for l in path.read_text(encoding="utf-8").splitlines() if l.startswith("#")]
    names = sorted({re.sub(r" \(line \d+\)$", "", r.name) for r in results if not r.ok})
    path.write_text("\n".join(head + names) + "\n", encoding="utf-8")
    print("wrote %d names to %s" % (len(names), path))


if __name__ == "__main__":
    from pathutil import ROOT
    sys.path.insert(0, str(ROOT))     # as `python -m pytest` from the root has it
    update = "--update-pending" in sys.argv
    tests = doctests()
    want = [a for a in sys.argv[1:] if a != "--update-pending"]
    results = []
    for t in tests:
        if want and not any(w in t.name for w in want):
            continue
        print("RUN", t.name, file=sys.stderr, flush=True)
        results.append(run(t))
    bad = [r for r in results if not r.ok]
    for r in bad:
        print("FAIL", r.name)
        for f in r.failures:
            print("   ", f)
    print("%d docstrings, %d examples, %d failing docstrings" % (
        len(results), sum(len(t.examples) for t in tests), len(bad)))
    if update and not want:
        write_pending(results)
