"""An ExUnit-style test suite for the Worker of examples/worker_test_example.py.

How the Elixir original reads, and what each piece is here:

    defmodule WorkerTest do                      # this module
      use ExUnit.Case, async: true               # pytestmark = pytest.mark.pyotp: every
                                                 #   async test runs as a process on a
                                                 #   fresh node
      setup do                                   # async def setup(): called first thing
        worker = start_supervised!(Worker)       #   start_supervised: stopped when the
        %{worker: worker}                        #   test ends, newest first
      end

      describe "process/2" do                    # class TestProcess:
        test "squares a number", %{worker: w} do #   async def test_squares_a_number(self)
          assert {:ok, 16} = Worker.process(w, {:square, 4})
        end
      end
    end

``assert_receive`` / ``refute_receive`` wait on the test process's own mailbox (default
timeout 0.1 s, as ExUnit's 100 ms); ``Process.monitor`` is ``pyotp.monitor`` and the
``{:DOWN, ref, :process, pid, reason}`` tuple is ``("DOWN", ref, "process", pid, reason)``;
``capture_log`` is pytest's ``caplog``.
"""
import importlib.util
import logging
from pathlib import Path

import pytest

import pyotp
from pyotp import Exit, GenServer, StartError
from pyotp.supervisor import Supervisor
from pyotp.testing import (ANY, assert_receive, assert_received, refute_receive, refute_received,
                           start_supervised)

_PATH = Path(__file__).resolve().parents[2] / "examples" / "worker_test_example.py"
_spec = importlib.util.spec_from_file_location("example_worker_test", _PATH)
example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(example)
Worker = example.Worker

pytestmark = pytest.mark.pyotp          # use ExUnit.Case


async def setup(opts=None):
    """ExUnit's ``setup``: a worker for this test, stopped when the test ends."""
    return await start_supervised((Worker, opts))


def crashed_with(text):
    """A pattern for an exit reason that is the RuntimeError the worker raised."""
    return lambda reason: isinstance(reason, RuntimeError) and text in str(reason)


class TestProcess:
    """describe "process/2" """

    async def test_squares_a_number(self):
        worker = await setup()
        assert await Worker.process(worker, ("square", 4)) == ("ok", 16)

    async def test_an_expected_error_is_a_reply_and_the_worker_keeps_running(self):
        worker = await setup()
        ref = pyotp.monitor(worker)
        assert await Worker.process(worker, ("div", 1, 0)) == ("error", "division by zero")
        assert await Worker.process(worker, ("fly", "away")) == ("error", ("unknown_job", ("fly", "away")))
        assert await Worker.process(worker, ("div", 9, 3)) == ("ok", 3.0)
        await refute_receive(("DOWN", ref, ANY, ANY, ANY))
        assert await Worker.stats(worker) == {"processed": 1, "errors": 2, "subscribers": 0}

    async def test_a_slow_job_does_not_block_the_worker(self):
        worker = await setup()
        await Worker.subscribe(worker)
        pyotp.spawn(_call_and_report, worker, ("sleep", 0.05, "late"), pyotp.self())
        # when "calling" arrives, the sleeper's call is already in the worker's mailbox
        await assert_receive("calling")
        assert await Worker.process(worker, ("square", 3)) == ("ok", 9)
        # the worker answered us while the sleeper's job was still pending: the first job
        # event is ours
        first = await assert_receive(("worker_event", worker, ANY, ANY))
        assert first[2] == ("square", 3)
        await assert_receive(("worker_event", worker, ("sleep", 0.05, "late"), ("ok", "late")), timeout=2)
        await assert_receive(("reply", ("ok", "late")), timeout=2)

    async def test_a_call_that_times_out_raises_and_no_late_reply_arrives(self):
        worker = await setup()
        await Worker.subscribe(worker)
        with pytest.raises(Exit) as e:
            await Worker.process(worker, ("sleep", 0.05, "too late"), timeout=0.01)
        assert e.value.reason[0] == "timeout"
        # the worker replies once its timer fires, then tells its subscribers: when the
        # event is here, the late reply would already be queued before it; it was dropped
        await assert_receive(("worker_event", worker, ("sleep", 0.05, "too late"), ANY), timeout=2)
        refute_received(ANY)
        assert (await Worker.stats(worker))["processed"] == 1


async def _call_and_report(worker, job, to):
    pyotp.send(to, "calling")
    pyotp.send(to, ("reply", await Worker.process(worker, job)))


class TestProcessAsync:
    """describe "process_async/2" """

    async def test_the_result_arrives_as_a_message(self):
        worker = await setup()
        ref = Worker.process_async(worker, ("square", 5))
        await assert_receive(("job_done", ref, ("ok", 25)))

    async def test_results_come_back_in_order_and_nothing_else_arrives(self):
        worker = await setup()
        refs = [Worker.process_async(worker, ("square", n)) for n in range(10)]
        await Worker.stats(worker)          # a call: every cast before it is handled
        for n, ref in enumerate(refs):
            # already in the mailbox: assert_received does not wait
            assert assert_received(("job_done", ANY, ANY)) == ("job_done", ref, ("ok", n * n))
        await refute_receive(("job_done", ANY, ANY), timeout=0.01)


class TestSubscribe:
    """describe "subscribe/1" """

    async def test_a_subscriber_gets_one_event_per_job(self):
        worker = await setup()
        assert await Worker.subscribe(worker) == "ok"
        await Worker.process(worker, ("square", 2))
        await Worker.process(worker, ("div", 1, 0))
        await assert_receive(("worker_event", worker, ("square", 2), ("ok", 4)))
        await assert_receive(("worker_event", worker, ("div", 1, 0), ("error", "division by zero")))
        await refute_receive(("worker_event", ANY, ANY, ANY), timeout=0.01)

    async def test_a_dead_subscriber_is_forgotten(self):
        worker = await setup()
        me = pyotp.self()

        async def subscriber():
            await Worker.subscribe(worker)
            pyotp.send(me, "subscribed")
            await pyotp.receive(lambda m: m == "leave")

        pid, ref = pyotp.spawn_monitor(subscriber)
        await assert_receive("subscribed")
        assert (await Worker.stats(worker))["subscribers"] == 1
        pyotp.send(pid, "leave")
        await assert_receive(("DOWN", ref, "process", pid, "normal"))
        # the worker's own monitor fired too; a call after our DOWN is handled after it
        assert (await Worker.stats(worker))["subscribers"] == 0

    async def test_subscribers_hear_when_the_worker_stops(self):
        worker = await setup({"max_jobs": 2})
        ref = pyotp.monitor(worker)
        await Worker.subscribe(worker)
        await Worker.process(worker, ("square", 1))
        assert await Worker.process(worker, ("square", 2)) == ("ok", 4)   # the last job
        await assert_receive(("worker_stopped", worker, "normal"))
        await assert_receive(("DOWN", ref, "process", worker, "normal"))


class WorkerSup(Supervisor):
    """A module-based supervisor running one named Worker."""

    def init(self, name):
        return Supervisor.init([(Worker, {"name": name})], strategy="one_for_one")


class TestCrashes:
    """describe "crashes" """

    async def test_a_monitor_sees_the_crash(self, caplog):
        worker = await setup()
        ref = pyotp.monitor(worker)
        with caplog.at_level(logging.ERROR, logger="pyotp"):            # capture_log
            with pytest.raises(Exit) as e:
                await Worker.process(worker, ("crash", "boom"))
            await assert_receive(("DOWN", ref, "process", worker, crashed_with("boom")))
        assert crashed_with("boom")(e.value.reason[0])
        assert any("boom" in r.getMessage() for r in caplog.records)
        assert not pyotp.is_alive(worker)

    async def test_a_linked_process_that_traps_exits_gets_an_exit_message(self):
        pyotp.process_flag("trap_exit", True)
        worker = await Worker.start_link()              # linked to the test process
        GenServer.cast(worker, ("process_async", ("crash", "linked"), pyotp.self(), None))
        await assert_receive(("EXIT", worker, crashed_with("linked")))

    async def test_the_supervisor_restarts_a_crashed_worker_with_fresh_state(self):
        sup = await start_supervised((WorkerSup, "worker"))
        first = pyotp.whereis("worker")
        await Worker.process("worker", ("square", 3))
        ref = pyotp.monitor(first)
        with pytest.raises(Exit):
            await Worker.process("worker", ("crash", "again"))
        await assert_receive(("DOWN", ref, "process", first, ANY))
        [(_id, second, kind, _mods)] = await Supervisor.which_children(sup)
        assert kind == "worker"
        assert second != first and pyotp.whereis("worker") == second
        assert await Worker.stats("worker") == {"processed": 0, "errors": 0, "subscribers": 0}


class TestStart:
    """describe "start_link/1" """

    async def test_a_bad_option_fails_the_start(self):
        with pytest.raises(StartError) as e:
            await start_supervised((Worker, {"max_jobs": 0}))
        assert e.value.reason == ("invalid_option", "max_jobs", 0)

    async def test_a_name_is_registered_and_taken_only_once(self):
        pid = await setup({"name": "the_worker"})
        assert pyotp.whereis("the_worker") == pid
        with pytest.raises(StartError) as e:
            await start_supervised((Worker, {"name": "the_worker"}))
        assert e.value.reason == ("already_started", pid)

    async def test_start_supervised_children_stop_at_the_end_of_the_test(self):
        # what the plugin does after each test, done by hand here to observe it
        worker = await setup()
        ref = pyotp.monitor(worker)
        await GenServer.stop(worker, "shutdown")
        await assert_receive(("DOWN", ref, "process", worker, "shutdown"))


def test_the_example_program():
    summary = pyotp.run(example.main)
    assert summary["results"] == [("ok", 144), ("error", "division by zero"), ("ok", "rested")]
    assert summary["async"] == ("ok", 2.5)
    assert [job for job, _ in summary["events"]] == [("square", 12), ("div", 1, 0),
                                                      ("sleep", 0.01, "rested"), ("div", 10, 4)]
    assert summary["stats"] == {"processed": 3, "errors": 1, "subscribers": 1}
