"""The README's first command: `python -m pyotp demo` runs a live system and ends by itself."""
import os
import subprocess
import sys

from pyotp.demo import run_demo


def test_demo_counters_show_chat_traffic_and_a_second_node():
    stats = run_demo(seconds=1.0, users=10)
    assert stats["said"] > 0
    assert stats["delivered"] > 0
    assert stats["restarts"] >= 0
    d = stats["distribution"]
    # the rpc ran in the child process, the calls were answered, SIGKILL gave nodedown
    assert type(d["peer_os_pid"]) is int and d["peer_os_pid"] != os.getpid()
    assert d["calls_per_s"] > 0
    assert d["nodedown"] == ("nodedown", d["peer"])


def test_demo_command_ends_by_itself():
    out = subprocess.run([sys.executable, "-m", "pyotp", "demo", "--seconds", "1", "--users", "5"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pyotp demo" in out.stdout and "circuit breaker" in out.stdout
    assert "two nodes:" in out.stdout and "('nodedown', " in out.stdout
    assert "demo finished" in out.stdout


def test_demo_without_distribution():
    out = subprocess.run([sys.executable, "-m", "pyotp", "demo", "--seconds", "1", "--users", "5",
                          "--no-distribution"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "demo finished" in out.stdout and "two nodes:" not in out.stdout


def test_demo_rejects_bad_arguments():
    out = subprocess.run([sys.executable, "-m", "pyotp", "demo", "--users", "0"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--users" in out.stderr
