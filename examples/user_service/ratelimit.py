"""Login rate limiting: one process per bucket (an account, or a client IP).

A ``LoginBucket`` is a GenServer named ``("via", Registry, (LIMITS, key))``, started on
first use under the ``LoginBuckets`` DynamicSupervisor (``restart: "temporary"``: a
bucket that dies is simply gone, which fails open for that one key). It counts failed
logins in a sliding window; ``max_failures`` within ``window`` seconds lock the key for
``lockout`` seconds. Every reply sets the GenServer timeout to the moment the bucket
stops mattering (the last failure leaves the window and any lock-out has ended): the
core's timer wheel then delivers ``"timeout"`` and the bucket stops, so idle buckets
cost nothing and memory stays bounded by the number of keys active recently.

>>> await check(("account", "ada@example.com"), policy)
('ok',)
>>> await record_failure(("ip", "10.0.0.1"), policy)
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

import pyotp
from pyotp import DynamicSupervisor, GenServer, Registry

LIMITS = "LoginLimits"            # the Registry naming the buckets
BUCKETS = "LoginBuckets"          # their DynamicSupervisor


@dataclass(frozen=True)
class Policy:
    """``max_failures`` failed logins within ``window`` seconds lock the key for
    ``lockout`` seconds."""
    max_failures: int
    window: float
    lockout: float


def bucket_name(key: Tuple[str, str]) -> Tuple[str, Any, Tuple[str, Any]]:
    return ("via", Registry, (LIMITS, key))


class LoginBucket(GenServer):
    """The failures of one key. Calls: ``"check"`` -> ``("ok",)`` or ``("locked",
    seconds_left)``; ``"failure"`` -> the same, after counting one; ``"success"`` ->
    forgets the failures (an account that logged in starts afresh); ``"stats"``."""

    @classmethod
    def child_spec(cls, arg: Any) -> Dict[str, Any]:
        key, policy = arg
        return {"id": key, "restart": "temporary",
                "start": (cls.start_link, (policy,), {"name": bucket_name(key)})}

    def init(self, policy: Policy) -> Any:
        s = {"policy": policy, "failures": [], "locked_until": 0.0}
        return ("ok", s, policy.window)

    def handle_call(self, req: Any, from_: Any, s: Dict[str, Any]) -> Any:
        now = time.monotonic()
        policy: Policy = s["policy"]
        failures: List[float] = [t for t in s["failures"] if now - t < policy.window]
        s["failures"] = failures
        if req == "failure" and s["locked_until"] <= now:
            failures.append(now)
            if len(failures) >= policy.max_failures:
                s["locked_until"] = now + policy.lockout
                s["failures"] = []
        elif req == "success":
            s["failures"] = []
        elif req == "stats":
            return ("reply", {"failures": len(failures),
                              "locked_for": max(0.0, s["locked_until"] - now)}, s, self._idle(s, now))
        if s["locked_until"] > now:
            answer: Any = ("locked", s["locked_until"] - now)
        else:
            answer = ("ok",)
        return ("reply", answer, s, self._idle(s, now))

    @staticmethod
    def _idle(s: Dict[str, Any], now: float) -> float:
        """Seconds until this bucket holds nothing worth keeping."""
        until = max([s["locked_until"]] + [t + s["policy"].window for t in s["failures"]])
        left: float = max(0.0, until - now)
        return left

    def handle_info(self, msg: Any, s: Dict[str, Any]) -> Any:
        if msg == "timeout":
            return ("stop", "normal", s)
        return ("noreply", s)


async def _call(key: Tuple[str, str], policy: Policy, req: str, create: bool) -> Any:
    name = bucket_name(key)
    for _ in range(3):
        if GenServer.whereis(name) is None:
            if not create:
                return ("ok",)
            try:
                await DynamicSupervisor.start_child(BUCKETS, LoginBucket.child_spec((key, policy)))
            except pyotp.StartError:
                pass                # another request started it first: use that one
        try:
            return await GenServer.call(name, req)
        except pyotp.Exit:
            continue                # it expired between whereis and call: start a new one
    return ("ok",)


async def check(key: Tuple[str, str], policy: Policy) -> Any:
    """``("ok",)`` or ``("locked", seconds_left)``; starts no process for a clean key."""
    return await _call(key, policy, "check", create=False)


async def record_failure(key: Tuple[str, str], policy: Policy) -> Any:
    """Count a failed login; the answer is as ``check``'s, after counting."""
    return await _call(key, policy, "failure", create=True)


async def record_success(key: Tuple[str, str], policy: Policy) -> Any:
    """Forget a key's failures (no process is started for a clean key)."""
    return await _call(key, policy, "success", create=False)


async def stats(key: Tuple[str, str]) -> Any:
    """``{"failures", "locked_for"}`` of a live bucket, or None when it has none."""
    name = bucket_name(key)
    if GenServer.whereis(name) is None:
        return None
    try:
        return await GenServer.call(name, "stats")
    except pyotp.Exit:
        return None
