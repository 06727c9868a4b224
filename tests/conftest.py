# The pyotp pytest plugin is registered through its `pytest11` entry point when pyotp is
# installed; naming it here as well keeps the suite runnable from a source checkout
# (PYTHONPATH=src), and pytest ignores the second registration of the same name.
import os
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


from services import SERVICES, required, unknown_required, why_missing  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    # Registered here, not in pyproject.toml: the wheel tests run a copy of tests/ without it.
    for name, service in SERVICES.items():
        config.addinivalue_line("markers", "%s: needs %s (%s); skipped without them unless "
                                "required (tests/helpers/services.py)"
                                % (name, ", ".join(service.executables), service.install))
    bad = unknown_required()
    if bad:
        raise pytest.UsageError("PYOTP_REQUIRE_SERVICES names no service: %s (known: %s)"
                                % (", ".join(bad), ", ".join(SERVICES)))


def pytest_runtest_setup(item: pytest.Item) -> None:
    # A test marked with a service (tests/helpers/services.py: erlang, redis, chromium,
    # postgres, rabbitmq) skips with the reason where the service's programs are missing
    # (the wheel tests, the macOS and Windows runners), and fails where it is required.
    marked = [(name, why_missing(name)) for name in SERVICES if item.get_closest_marker(name)]
    reasons = [why for _, why in marked if why]
    if not reasons:
        return
    if any(required(name) for name, why in marked if why):
        pytest.fail("; ".join(reasons) + ", and the service is required "
                    "(PYOTP_REQUIRE_SERVICES/PYOTP_REQUIRE_ERLANG)", pytrace=False)
    pytest.skip("; ".join(reasons))
