"""The mistakes of a newcomer's first hour get an error that says what to do (issue 16,
item 8): duplicate child ids, a wrong cookie seen from the connecting side, the EPMD tool,
Elixir-shaped options (Registry meta as pairs, PubSub metadata positional), and the
gen_statem bad-return reason, documented where it differs from OTP."""
import logging
import os
import signal
import subprocess
import sys

import pytest

import pyotp
from pyotp import BadArg, GenServer, PubSub, Registry, Supervisor
from pyotp.child_spec import ChildSpecError
from pyotp.dist import Node, run_node
from pyotp.gen_statem import GenStateMachine
from dist_helpers import COOKIE, NodeProc, child_env, free_port, unique
from pathutil import ROOT


class Worker(GenServer):
    def init(self, n):
        return ("ok", n)


@pytest.mark.pyotp
async def test_duplicate_child_id_hints_at_id():
    with pytest.raises(ChildSpecError) as e:
        await Supervisor.start_link([(Worker, 1), (Worker, 2)], strategy="one_for_one")
    ok = await Supervisor.start_link([Supervisor.child_spec((Worker, 1), id="w1"),
                                      Supervisor.child_spec((Worker, 2), id="w2")],
                                     strategy="one_for_one")
    msg = str(e.value)
    active = (await Supervisor.count_children(ok))["active"]
    assert "duplicate child id" in msg and "id=" in msg and "Worker" in msg
    assert active == 2          # the hint's advice works


def test_wrong_cookie_is_explained_on_the_connecting_side(caplog):
    with NodeProc("b", role="dist_roles:role_watcher", cookie="another-cookie") as b:
        b.expect("ready")

        async def main():
            return await Node.ping(b.name)
        with caplog.at_level(logging.WARNING, logger="pyotp"):
            assert run_node(main, node=unique("a"), cookie=COOKIE) == "pang"
    msgs = [r.getMessage() for r in caplog.records]
    assert any(b.name in m and "cookies differ" in m for m in msgs), msgs


def test_epmd_tool_starts_quietly_and_stops_on_ctrl_c():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pyotp.dist.epmd", str(port)], env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "pyotp EPMD listening on 0.0.0.0:%d" % port
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "RuntimeWarning" not in err and "Traceback" not in err, err
    assert "stopped" in out


@pytest.mark.pyotp
async def test_registry_meta_accepts_a_list_of_pairs():
    await Registry.start_link(keys="unique", name="R1", meta=[("owner", "chat"), ("v", 2)])
    await Registry.start_link({"keys": "unique", "name": "R2", "meta": [("owner", "x")]})
    with pytest.raises(BadArg, match="list of \\(key, value\\) pairs"):
        await Registry.start_link(keys="unique", name="R3", meta=["owner"])
    assert (Registry.meta("R1", "owner"), Registry.meta("R1", "v"), Registry.meta("R2", "owner")) == (("ok", "chat"), ("ok", 2), ("ok", "x"))


@pytest.mark.pyotp
async def test_pubsub_subscribe_takes_metadata_positionally():
    await PubSub.start_link(name="PS")
    PubSub.subscribe("PS", "t", {"user": "ann"})          # as Phoenix.PubSub.subscribe/3
    [(pid, meta)] = Registry.lookup("PS", "t")
    assert meta == {"user": "ann"}


class Bad(GenStateMachine):
    def init(self, _):
        return ("ok", "s", None)

    def handle_event(self, event_type, content, state, data):
        return ("not", "a", "result")


@pytest.mark.pyotp
async def test_gen_statem_bad_return_reason_is_documented():
    pyotp.process_flag("trap_exit", True)
    pid = await Bad.start_link(None)
    GenStateMachine.cast(pid, "go")
    reason = (await pyotp.receive(lambda m: m[0] == "EXIT" and m[1] == pid))[2]
    assert reason == ("bad_return_value", ("not", "a", "result"))
    # OTP says bad_return_from_state_function: the docs list the difference
    docs = (ROOT / "docs" / "gen_statem.md").read_text()
    assert "bad_return_from_state_function" in docs and "Differences from OTP" in docs


@pytest.mark.pyotp
async def test_pyotp_run_inside_a_running_node_is_a_clear_error():
    async def inner():
        return 1

    with pytest.raises(RuntimeError, match="already running"):
        pyotp.run(inner)
