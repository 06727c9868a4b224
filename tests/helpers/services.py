"""The outside programs some tests need, in one table: the pytest marker of each, the
executables it needs, where Debian puts them when they are off PATH, the install hint,
and the names that show (to tests/project/test_service_markers.py) that a test uses it.

tests/conftest.py skips a marked test with the reason when one of its executables is
missing, or fails it where the service is required (issue 16): PYOTP_REQUIRE_SERVICES=1
(or ``all``) requires every service, a comma list (``erlang,redis``) only those, and the
older PYOTP_REQUIRE_ERLANG=1 requires ``erlang``. .ci/run sets PYOTP_REQUIRE_SERVICES=1,
so CI can never pass by skipping.

The tests that start a service find its programs here too (`executable`), so the test
runs exactly what the skip check found."""
from __future__ import annotations

import glob
import os
import shutil
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple


@dataclass(frozen=True)
class Service:
    executables: Tuple[str, ...]
    install: str
    # Checked after PATH: Debian installs PostgreSQL's server programs under a versioned
    # directory, and rabbitmq-server in sbin (off a normal user's PATH).
    extra_dirs: Tuple[str, ...] = ()
    # Names in a test function's source (or its module's fixtures) that mean it needs the
    # service: the static check requires the marker on such a test.
    uses: Tuple[str, ...] = ()


SERVICES: Dict[str, Service] = {
    # A BEAM node: erl (epmd comes with it), erl_call, elixir, escript. RabbitMQ is an
    # Erlang program, so its tests carry both `erlang` and `rabbitmq`.
    "erlang": Service(("erl",), "apt-get install -y erlang-base; elixir for the Elixir tests",
                      uses=("ErlNode", "ExNode", "require_erl", "erl_call", '"escript"',
                            "rabbitmq-server", "amqp_url")),
    "redis": Service(("redis-server", "redis-cli"), "apt-get install -y redis-server redis-tools",
                     uses=("RedisServer", "redis_cli", "real_redis")),
    "chromium": Service(("chromium", "chromedriver"), "apt-get install -y chromium chromium-driver",
                        uses=("webdriver", "chromedriver", "CHROMIUM")),
    "postgres": Service(("initdb", "pg_ctl"), "apt-get install -y postgresql",
                        extra_dirs=("/usr/lib/postgresql/*/bin",),
                        uses=("initdb", "postgres_dsn")),
    "rabbitmq": Service(("rabbitmq-server",), "apt-get install -y rabbitmq-server",
                        extra_dirs=("/usr/lib/rabbitmq/bin", "/usr/sbin"),
                        uses=("rabbitmq-server", "amqp_url")),
}


def executable(service: str, name: str) -> Optional[str]:
    """The path of `name` (one of the service's executables): PATH first, then the
    service's extra directories (the newest version first), or None."""
    found = shutil.which(name)
    if found:
        return found
    for pattern in SERVICES[service].extra_dirs:
        for d in sorted(glob.glob(pattern), reverse=True):
            p = os.path.join(d, name)
            if os.path.isfile(p) and os.access(p, os.X_OK):
                return p
    return None


def missing(service: str) -> List[str]:
    """The service's executables that cannot be found."""
    return [e for e in SERVICES[service].executables if executable(service, e) is None]


def required(service: str) -> bool:
    """Whether a missing `service` fails its tests rather than skipping them."""
    want = os.environ.get("PYOTP_REQUIRE_SERVICES", "").strip().lower()
    if want in ("1", "all", "true", "yes"):
        return True
    if service in {w.strip() for w in want.split(",")}:
        return True
    return service == "erlang" and os.environ.get("PYOTP_REQUIRE_ERLANG", "") not in ("", "0")


def unknown_required() -> List[str]:
    """Names in PYOTP_REQUIRE_SERVICES that are no service (a typo would otherwise
    require nothing and let CI pass by skipping)."""
    want = os.environ.get("PYOTP_REQUIRE_SERVICES", "").strip().lower()
    if want in ("", "0", "1", "all", "true", "yes"):
        return []
    return sorted(w.strip() for w in want.split(",") if w.strip() and w.strip() not in SERVICES)


def why_missing(service: str) -> Optional[str]:
    """None when the service's programs are all there, else the reason to skip or fail."""
    gone = missing(service)
    if not gone:
        return None
    return "needs %s: %s not found (%s)" % (service, ", ".join(gone), SERVICES[service].install)


__all__ = ["SERVICES", "Service", "executable", "missing", "required", "unknown_required", "why_missing"]
