"""The user service's login rate limiting: one LoginBucket process per account / IP,
under a DynamicSupervisor, named through a Registry, expiring on the timer wheel (its
GenServer timeout), so that idle keys cost nothing. Expiry is observed through
monitors (DOWN messages), never by sleeping."""
import sys

import httpx
import pytest

import pyotp
from pyotp import DynamicSupervisor, GenServer, Registry
from pyotp.testing import assert_receive, start_supervised
from pathutil import ROOT

sys.path.insert(0, str(ROOT))
from examples.user_service import Config, Policy, ServiceThread  # noqa: E402
from examples.user_service import ratelimit  # noqa: E402


async def start_limits():
    await start_supervised((Registry, {"keys": "unique", "name": ratelimit.LIMITS}))
    await start_supervised({"id": ratelimit.BUCKETS, "type": "supervisor",
                            "start": (DynamicSupervisor.start_link, (), {"name": ratelimit.BUCKETS})})


@pytest.mark.pyotp
async def test_a_bucket_per_key_under_the_dynamic_supervisor():
    await start_limits()
    policy = Policy(3, 60.0, 60.0)
    assert await ratelimit.check(("account", "a"), policy) == ("ok",)
    assert await ratelimit.record_success(("account", "a"), policy) == ("ok",)
    # a clean key starts no process
    assert (await DynamicSupervisor.count_children(ratelimit.BUCKETS))["active"] == 0
    assert await ratelimit.record_failure(("account", "a"), policy) == ("ok",)
    assert await ratelimit.record_failure(("ip", "10.0.0.1"), policy) == ("ok",)
    assert (await DynamicSupervisor.count_children(ratelimit.BUCKETS))["active"] == 2
    pid = GenServer.whereis(ratelimit.bucket_name(("account", "a")))
    assert Registry.lookup(ratelimit.LIMITS, ("account", "a")) == [(pid, None)]
    assert await ratelimit.record_failure(("account", "a"), policy) == ("ok",)
    verdict = await ratelimit.record_failure(("account", "a"), policy)
    assert verdict[0] == "locked" and 59 < verdict[1] <= 60
    assert (await ratelimit.check(("account", "a"), policy))[0] == "locked"
    assert await ratelimit.check(("ip", "10.0.0.1"), policy) == ("ok",)
    # failures while locked do not extend the lock-out
    again = await ratelimit.record_failure(("account", "a"), policy)
    assert again[1] <= verdict[1]
    # a success forgets the failures of an unlocked key
    await ratelimit.record_success(("ip", "10.0.0.1"), policy)
    assert (await ratelimit.stats(("ip", "10.0.0.1")))["failures"] == 0


@pytest.mark.pyotp
async def test_an_idle_bucket_stops_when_its_window_has_passed():
    await start_limits()
    policy = Policy(3, 0.05, 60.0)
    await ratelimit.record_failure(("account", "b"), policy)
    pid = GenServer.whereis(ratelimit.bucket_name(("account", "b")))
    ref = pyotp.monitor(pid)
    # the GenServer timeout (timer wheel) fires once the failure left the window
    await assert_receive(("DOWN", ref, "process", pid, "normal"), timeout=5)
    assert Registry.lookup(ratelimit.LIMITS, ("account", "b")) == []
    assert await ratelimit.stats(("account", "b")) is None
    # a new failure starts a new bucket from nothing
    await ratelimit.record_failure(("account", "b"), policy)
    assert (await ratelimit.stats(("account", "b")))["failures"] == 1


@pytest.mark.pyotp
async def test_a_lockout_ends_and_the_bucket_goes_away():
    await start_limits()
    policy = Policy(2, 60.0, 0.05)
    await ratelimit.record_failure(("account", "c"), policy)
    assert (await ratelimit.record_failure(("account", "c"), policy))[0] == "locked"
    pid = GenServer.whereis(ratelimit.bucket_name(("account", "c")))
    ref = pyotp.monitor(pid)
    await assert_receive(("DOWN", ref, "process", pid, "normal"), timeout=5)
    assert await ratelimit.check(("account", "c"), policy) == ("ok",)


@pytest.mark.pyotp
async def test_a_killed_bucket_is_not_restarted_and_the_key_starts_afresh():
    await start_limits()
    policy = Policy(5, 60.0, 60.0)
    await ratelimit.record_failure(("ip", "x"), policy)
    pid = GenServer.whereis(ratelimit.bucket_name(("ip", "x")))
    ref = pyotp.monitor(pid)
    pyotp.exit(pid, "kill")
    await assert_receive(("DOWN", ref, "process", pid, "killed"))
    assert (await DynamicSupervisor.count_children(ratelimit.BUCKETS))["active"] == 0
    assert await ratelimit.record_failure(("ip", "x"), policy) == ("ok",)
    assert (await ratelimit.stats(("ip", "x")))["failures"] == 1


def test_per_ip_lockout_over_http():
    cfg = Config(port=0, db=":memory:", argon2_time_cost=1, argon2_memory_cost=8,
                 account_policy=Policy(100, 60.0, 60.0), ip_policy=Policy(4, 60.0, 60.0))
    with ServiceThread(cfg) as svc, httpx.Client(base_url=svc.url) as c:
        assert c.post("/auth/register", json={"email": "ok@example.com", "password": "ok-password"}).status_code == 201
        # four accounts, one failure each: it is the address that gets locked
        for i in range(4):
            r = c.post("/auth/login", json={"email": "u%d@example.com" % i, "password": "wrong-pass"})
            assert r.status_code == 401
        r = c.post("/auth/login", json={"email": "ok@example.com", "password": "ok-password"})
        assert r.status_code == 429 and r.json()["error"] == "too_many_attempts"
        assert int(r.headers["retry-after"]) >= 1
