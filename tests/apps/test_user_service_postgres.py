"""The user service on PostgreSQL: the test starts a throw-away PostgreSQL server
(initdb + pg_ctl on a free loopback port, trust auth, in a temporary directory) and
runs the service against it through asyncpg. Skipped, with the reason, only when no
PostgreSQL server binaries are installed (Debian: ``apt-get install postgresql``)."""
import os
import socket
import subprocess
import sys

import httpx
import pytest

from pathutil import ROOT
from services import executable

sys.path.insert(0, str(ROOT))
from examples.user_service import Config, ServiceThread  # noqa: E402


# without initdb/pg_ctl: skipped with the reason, or failed where required (conftest)
pytestmark = pytest.mark.postgres


def _pg_bin():
    found = executable("postgres", "initdb")
    return os.path.dirname(found) if found else None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_dsn(tmp_path_factory):
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server installed (initdb not found; apt-get install postgresql)")
    pytest.importorskip("asyncpg", reason="asyncpg is in the test extra: pip install '.[test]'")
    as_user = []
    base = tmp_path_factory.mktemp("pg")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # PostgreSQL refuses to run as root: run it as the postgres account
        try:
            import pwd
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' account to run the server as")
        as_user = ["runuser", "-u", "postgres", "--"]
        os.chmod(base, 0o777)
        for parent in base.parents:          # the server must be able to reach its directory
            if parent == parent.parent:
                break
            os.chmod(parent, os.stat(parent).st_mode | 0o011)
        data = base / "data"
        data.mkdir()
        os.chown(data, pw.pw_uid, pw.pw_gid)
    else:
        data = base / "data"
    run = lambda *cmd: subprocess.run(as_user + list(cmd), check=True, capture_output=True, timeout=120)
    run(os.path.join(bindir, "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
    # The free port can be taken by another process before the server binds it (other test
    # runs share this machine): try a few ports, and show the server's log if all fail.
    for attempt in range(3):
        port = _free_port()
        try:
            run(os.path.join(bindir, "pg_ctl"), "-D", str(data), "-w", "-t", "120",
                "-l", str(data / "log"), "-o", "-F -k %s -h 127.0.0.1 -p %d" % (data, port), "start")
            break
        except subprocess.CalledProcessError as e:
            log = (data / "log").read_text(errors="replace") if (data / "log").exists() else ""
            if attempt == 2:
                raise AssertionError("PostgreSQL did not start: %s\n%s\n%s"
                                     % (e, e.stderr.decode(errors="replace"), log[-2000:]))
    try:
        yield "postgresql://postgres@127.0.0.1:%d/postgres" % port
    finally:
        run(os.path.join(bindir, "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")


def test_the_service_on_postgresql(postgres_dsn):
    cfg = dict(port=0, dsn=postgres_dsn, argon2_time_cost=1, argon2_memory_cost=8,
               admin_email="admin@example.com", admin_password="admin-password")
    with ServiceThread(Config(**cfg)) as svc, httpx.Client(base_url=svc.url) as c:
        assert c.get("/health").json() == {"status": "ok", "schema_version": 1}
        r = c.post("/auth/register", json={"email": "pg@example.com", "password": "pg-password",
                                           "name": "Robert'); DROP TABLE users;--"})
        assert r.status_code == 201, r.text
        uid = r.json()["id"]
        assert c.post("/auth/register", json={"email": "pg@example.com", "password": "pg-password"}).status_code == 409
        tokens = c.post("/auth/login", json={"email": "pg@example.com", "password": "pg-password"}).json()
        auth = {"Authorization": "Bearer " + tokens["access_token"]}
        assert c.get("/users/me", headers=auth).json()["name"] == "Robert'); DROP TABLE users;--"
        fresh = c.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert fresh.status_code == 200
        assert c.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).status_code == 401
        admin = c.post("/auth/login", json={"email": "admin@example.com", "password": "admin-password"}).json()
        aauth = {"Authorization": "Bearer " + admin["access_token"]}
        assert c.put("/users/%d/role" % uid, headers=aauth, json={"role": "admin"}).json()["role"] == "admin"
        assert c.get("/users", headers=aauth).json()["total"] == 2
    # restarted on the same database: migrated once, the data is kept
    with ServiceThread(Config(**cfg)) as svc, httpx.Client(base_url=svc.url) as c:
        assert c.get("/health").json()["schema_version"] == 1
        r = c.post("/auth/login", json={"email": "pg@example.com", "password": "pg-password"})
        assert r.status_code == 200 and r.json()["user"]["role"] == "admin"
        auth = {"Authorization": "Bearer " + r.json()["access_token"]}
        assert c.request("DELETE", "/users/me", headers=auth, json={"password": "pg-password"}).status_code == 200
        assert c.post("/auth/login", json={"email": "pg@example.com", "password": "pg-password"}).status_code == 401
