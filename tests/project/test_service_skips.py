"""tests/conftest.py's service markers end to end (issue 16): pytest run in a subprocess on
a tiny test file under the suite's conftest, with a PATH that lacks the service's
programs: a marked test skips with the reason and the install hint, and where the service
is required (PYOTP_REQUIRE_SERVICES, PYOTP_REQUIRE_ERLANG) it fails instead (in its setup,
so pytest reports an error)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent.parent

CONFTEST = '''import importlib.util

# the suite's own hooks, loaded from its conftest by path
_spec = importlib.util.spec_from_file_location("pyotp_suite_conftest", %r)
_suite = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_suite)
pytest_configure = _suite.pytest_configure
pytest_runtest_setup = _suite.pytest_runtest_setup
''' % str(TESTS / "conftest.py")

TESTS_SRC = '''import pytest


@pytest.mark.redis
def test_r():
    pass


@pytest.mark.erlang
def test_e():
    pass
'''

REDIS_SKIP = ("needs redis: redis-server, redis-cli not found "
              "(apt-get install -y redis-server redis-tools)")
ERLANG_SKIP = "needs erlang: erl not found"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    d = tmp_path_factory.mktemp("svc")
    (d / "conftest.py").write_text(CONFTEST)
    (d / "test_svc.py").write_text(TESTS_SRC)
    (d / "empty").mkdir()
    # stand-ins for redis's programs: the check looks for them, the test never runs them
    fake = d / "fake"
    fake.mkdir()
    for exe in ("redis-server", "redis-cli"):
        p = fake / (exe + (".bat" if os.name == "nt" else ""))
        p.write_text("exit 0\n")
        p.chmod(0o755)
    return d


def run(project, path, **env):
    e = {k: v for k, v in os.environ.items() if not k.startswith("PYOTP_REQUIRE")}
    e.update(env, PATH=str(project / path), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rsE", "-p", "no:cacheprovider",
                        "test_svc.py"], cwd=project, env=e, capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout + r.stderr


def test_missing_services_skip_with_the_reason(project):
    rc, out = run(project, "empty")
    assert rc == 0 and "2 skipped" in out, out
    assert REDIS_SKIP in out and ERLANG_SKIP in out and "erlang-base" in out


@pytest.mark.parametrize("env, failed, skipped", [
    ({"PYOTP_REQUIRE_SERVICES": "1"}, ["test_r", "test_e"], []),
    ({"PYOTP_REQUIRE_SERVICES": "all"}, ["test_r", "test_e"], []),
    ({"PYOTP_REQUIRE_SERVICES": "redis"}, ["test_r"], ["erlang"]),
    ({"PYOTP_REQUIRE_SERVICES": "rabbitmq, erlang"}, ["test_e"], ["redis"]),
    ({"PYOTP_REQUIRE_ERLANG": "1"}, ["test_e"], ["redis"]),
])
def test_required_services_fail_instead(project, env, failed, skipped):
    rc, out = run(project, "empty", **env)
    # failed in setup: pytest counts it as an error (rc 1, as for a failed test)
    assert rc == 1 and ("%d error" % len(failed)) in out, out
    for t in failed:
        assert "ERROR test_svc.py::%s" % t in out, out
    assert "the service is required" in out
    for s in skipped:
        assert "SKIPPED" in out and "needs %s" % s in out, out


def test_a_present_service_runs(project):
    rc, out = run(project, "fake", PYOTP_REQUIRE_SERVICES="redis")
    assert rc == 0 and "1 passed" in out and "1 skipped" in out and ERLANG_SKIP in out, out


def test_a_misspelt_required_service_is_an_error(project):
    # else PYOTP_REQUIRE_SERVICES=reddis would require nothing and CI could pass by skipping
    rc, out = run(project, "empty", PYOTP_REQUIRE_SERVICES="erlang,reddis")
    assert rc == 4 and "PYOTP_REQUIRE_SERVICES names no service: reddis" in out, out


def test_ci_and_the_readme_install_and_require_every_service():
    # .ci/run runs the README's test command: the same packages, every service required
    root = TESTS.parent
    ci, readme = root / ".ci" / "run", root / "README.md"
    if not ci.exists():
        pytest.skip("a copy of tests/ without the checkout (the wheel tests)")
    ci_text, readme_text = ci.read_text(encoding="utf-8"), readme.read_text(encoding="utf-8")
    run_tests = "PYOTP_REQUIRE_SERVICES=1 python -m pytest -q -p no:cacheprovider tests"
    assert run_tests in ci_text and run_tests in readme_text

    def packages(text):
        line = next(ln for ln in text.splitlines() if "apt-get install -y" in ln and "erlang-base" in ln)
        return set(line.split("apt-get install -y")[1].split("&&")[0].split()) - {"-q"}
    assert packages(ci_text) == packages(readme_text)
