# The pyotp pytest plugin is registered through its `pytest11` entry point when pyotp is
# installed; naming it here as well keeps the suite runnable from a source checkout
# (PYTHONPATH=src), and pytest ignores the second registration of the same name.
import os
import shutil
import sys

import pytest

pytest_plugins = ["pyotp.testing"]

# Shared helpers (dist_helpers, pathutil, the roles children run...) and a few test
# modules (test_operations' RunProc) are imported by name. pytest puts each test file's
# own folder on sys.path; when the tests sit in subfolders (tools/relayout_tests.py) the
# helpers are in tests/helpers/ and the others in the sibling folders: all added here.
_TESTS = os.path.dirname(os.path.abspath(__file__))
for _d in sorted(os.listdir(_TESTS), reverse=True):
    _p = os.path.join(_TESTS, _d)
    if os.path.isdir(_p) and not _d.startswith((".", "_")) and _p not in sys.path:
        sys.path.insert(0, _p)


def erlang_required() -> bool:
    """PYOTP_REQUIRE_ERLANG=1 (set by .ci/run): a missing Erlang fails the `erlang` tests
    instead of skipping them, so CI can never pass by not running them."""
    return os.environ.get("PYOTP_REQUIRE_ERLANG", "") not in ("", "0")


def pytest_runtest_setup(item: pytest.Item) -> None:
    # Tests marked `erlang` run a real BEAM node (erl, erl_call, elixir). Where Erlang is
    # not installed (the wheel tests on macOS/Windows runners) they skip with the reason.
    if item.get_closest_marker("erlang") is None or shutil.which("erl") is not None:
        return
    if erlang_required():
        pytest.fail("PYOTP_REQUIRE_ERLANG=1 but `erl` is not on PATH "
                    "(apt-get install -y erlang-base)", pytrace=False)
    pytest.skip("needs Erlang/OTP (`erl` on PATH; apt-get install -y erlang-base)")
