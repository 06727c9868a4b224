"""python -m pyotp run: start, signals, exit statuses, error messages; the subcommand table."""
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pyotp import cli
from pathutil import child_pythonpath

ROOT = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parents[1] / "helpers"
CONFIG = ROOT / "examples" / "my_app" / "config" / "config.toml"
MY_APP = "examples.my_app.application:MyApp"
POSIX = os.name == "posix"


def pyotp_cmd(*args, env=None):
    """Start ``python -m pyotp <args>`` with this run's pyotp, the repo root and tests on
    PYTHONPATH."""
    e = dict(os.environ)
    e["PYTHONPATH"] = child_pythonpath(str(ROOT), str(TESTS))
    e.pop("PYOTP_ENV", None)
    e.update(env or {})
    p = subprocess.Popen([sys.executable, "-m", "pyotp", *args], cwd=str(ROOT), env=e,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # A guard against a hung child making the whole suite hang; not a synchronisation.
    guard = threading.Timer(60, p.kill)
    guard.daemon = True
    guard.start()
    p.guard = guard
    return p


def finish(p):
    out, err = p.communicate()
    p.guard.cancel()
    return p.returncode, out, err


def wait_line(p, start):
    """Read stdout lines until one starts with ``start`` (fails at EOF)."""
    seen = []
    while True:
        line = p.stdout.readline()
        if not line:
            rc, out, err = finish(p)
            pytest.fail("no %r line; stdout=%r rest=%r stderr=%r rc=%r" % (start, seen, out, err, rc))
        seen.append(line)
        if line.startswith(start):
            return line.rstrip("\n")


def run_to_end(*args, env=None):
    return finish(pyotp_cmd(*args, env=env))


# ---------------------------------------------------------------------------------------
# Running MyApp until a signal

@pytest.mark.skipif(not POSIX, reason="sends POSIX signals to the child")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_runs_until_signal_and_stops_cleanly(sig):
    p = pyotp_cmd("run", MY_APP, "--config", str(CONFIG), "--env", "test")
    started = wait_line(p, "pyotp: started")
    p.send_signal(sig)
    rc, out, err = finish(p)
    assert started == "pyotp: started my_app (env test; applications: metrics, my_app)"
    lines = out.splitlines()
    assert lines == ["pyotp: received %s, stopping my_app" % sig.name,
                     "pyotp: stopped my_app (%s; stopped my_app, metrics)" % sig.name]
    assert rc == 0
    assert "Traceback" not in err


@pytest.mark.skipif(not POSIX, reason="sends POSIX signals to the child")
def test_env_from_pyotp_env_variable():
    p = pyotp_cmd("run", MY_APP, "-c", str(CONFIG), env={"PYOTP_ENV": "prod"})
    started = wait_line(p, "pyotp: started")
    p.send_signal(signal.SIGTERM)
    rc, _out, _err = finish(p)
    assert "env prod" in started and rc == 0


@pytest.mark.skipif(not POSIX, reason="sends POSIX signals to the child")
def test_second_signal_while_stopping_exits_at_once():
    p = pyotp_cmd("run", "cli_apps:HangingApp")
    wait_line(p, "pyotp: started cli_hanging")
    p.send_signal(signal.SIGTERM)
    wait_line(p, "pyotp: received SIGTERM")
    p.send_signal(signal.SIGINT)
    rc, out, err = finish(p)
    assert rc == 128 + signal.SIGINT
    assert "received SIGINT again while stopping, exiting now" in err
    assert "pyotp: stopped" not in out


def test_permanent_application_terminating_stops_the_runner_with_status_1():
    rc, out, err = run_to_end("run", "cli_apps:CrashingApp")
    assert rc == 1
    assert "pyotp: stopped cli_crashing (application cli_crashing terminated" in out
    assert "pyotp run: error: application cli_crashing terminated: 'crashed'" in err
    assert "Traceback" not in err


def test_application_failing_to_start():
    rc, out, err = run_to_end("run", "cli_apps:FailingApp")
    assert rc == 1
    assert err.strip() == "pyotp run: error: application cli_failing failed to start: 'missing_database'"
    assert "started" not in out


# ---------------------------------------------------------------------------------------
# Usage errors: one line on stderr, status 2

@pytest.mark.parametrize("args,message", [
    (["run", "no_such_module_xyz:App"],
     "cannot import module 'no_such_module_xyz': no module named 'no_such_module_xyz'"),
    (["run", "examples.my_app.application"],
     "application must be given as package.module:ApplicationClass"),
    (["run", "examples.my_app.application:Nope"],
     "module 'examples.my_app.application' has no attribute 'Nope'"),
    (["run", "examples.my_app.application:Counter"],
     "examples.my_app.application:Counter is not an Application subclass (it is the class "
     "examples.my_app.application.Counter)"),
    (["run", "cli_apps:NOT_AN_APP"], "cli_apps:NOT_AN_APP is not an Application subclass (it is a int)"),
    (["run", "cli_broken_module:App"],
     "error while importing module 'cli_broken_module': RuntimeError: this module is broken on purpose"),
    (["run", MY_APP, "--config", "no/such/config.toml"],
     "no/such/config.toml: configuration file not found"),
    (["run", MY_APP, "--config", str(CONFIG), "--env", "../etc"], "invalid environment name '../etc'"),
])
def test_usage_errors(args, message):
    rc, out, err = run_to_end(*args)
    assert rc == 2
    assert err.startswith("pyotp run: error: ")
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert out == ""


def test_invalid_toml_names_file_and_line(tmp_path):
    bad = tmp_path / "config.toml"
    bad.write_text('[my_app]\ngreeting = "Hello"\ncounter_start = = 1\n')
    rc, out, err = run_to_end("run", MY_APP, "--config", str(bad))
    assert rc == 2
    assert err.startswith("pyotp run: error: %s:3: invalid TOML: " % bad)
    assert len(err.strip().splitlines()) == 1


def test_no_subcommand_prints_usage():
    rc, out, err = run_to_end()
    assert rc == 2 and "usage: python -m pyotp" in err and "run" in err


# ---------------------------------------------------------------------------------------
# In-process: the subcommand table

def test_adding_a_subcommand_is_one_decorated_function(capsys):
    def args(p):
        p.add_argument("--times", type=int, default=1)

    @cli.subcommand("ta-echo", "echo for tests", args)
    def echo(ns):
        print("echo " * ns.times)
        return 7

    try:
        assert "ta-echo" in cli.build_parser().format_help()
        assert cli.main(["ta-echo", "--times", "2"]) == 7
        assert capsys.readouterr().out == "echo echo \n"
    finally:
        del cli.SUBCOMMANDS["ta-echo"]


def test_cli_error_from_a_handler_is_status_2(capsys):
    @cli.subcommand("ta-fail", "fails")
    def fail(ns):
        raise cli.CliError("nothing to do")

    try:
        assert cli.main(["ta-fail"]) == 2
        assert capsys.readouterr().err == "pyotp ta-fail: error: nothing to do\n"
    finally:
        del cli.SUBCOMMANDS["ta-fail"]


def test_load_application_class_in_process():
    sys.path.insert(0, str(ROOT))
    try:
        assert cli.load_application_class(MY_APP).name == "my_app"
    finally:
        sys.path.remove(str(ROOT))
    with pytest.raises(cli.CliError, match="no module named"):
        cli.load_application_class("no_such_module_xyz:App")
