"""The user service example (examples/user_service/) over real HTTP: a real uvicorn
server inside a pyotp node on a background thread, driven with httpx.

The service runs once for the module (a fresh SQLite file); every test uses its own
accounts, so tests do not depend on each other's order."""
import base64
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jwt
import pytest

from pathutil import ROOT, child_pythonpath

sys.path.insert(0, str(ROOT))
from examples.user_service import Config, Policy, ServiceThread  # noqa: E402
from examples.user_service import app as app_module  # noqa: E402
from examples.user_service import bench  # noqa: E402

ADMIN = ("root@example.com", "root-password")
CHEAP = dict(argon2_time_cost=1, argon2_memory_cost=8, argon2_parallelism=1)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    cfg = Config(port=0, db=str(tmp_path_factory.mktemp("users") / "users.db"), admin_email=ADMIN[0], admin_password=ADMIN[1],
                 account_policy=Policy(3, 60.0, 60.0), ip_policy=Policy(10 ** 6, 60.0, 60.0),
                 **CHEAP)
    svc = ServiceThread(cfg)
    yield svc
    svc.stop()


@pytest.fixture
def client(service):
    with httpx.Client(base_url=service.url, timeout=30) as c:
        yield c


_n = [0]


def new_user(client, password="password-1", name="Test"):
    """Register a fresh account; returns (email, password, user)."""
    _n[0] += 1
    email = "user%d-%d@example.com" % (_n[0], os.getpid())
    r = client.post("/auth/register", json={"email": email, "password": password, "name": name})
    assert r.status_code == 201, r.text
    return email, password, r.json()


def login(client, email, password):
    r = client.post("/auth/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    return r.json()


def bearer(tokens):
    return {"Authorization": "Bearer " + tokens["access_token"]}


def error_of(r, status):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) >= {"error", "message"}
    return body["error"]


# -----------------------------------------------------------------------------------------
# The happy paths

def test_register_login_profile_refresh_logout_delete(client):
    email, pw, user = new_user(client, name="Ada")
    assert user["email"] == email and user["role"] == "user" and "password_hash" not in user
    tokens = login(client, email, pw)
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 900
    assert client.get("/users/me", headers=bearer(tokens)).json() == user
    # update the name
    r = client.patch("/users/me", headers=bearer(tokens), json={"name": "Ada L."})
    assert r.status_code == 200 and r.json()["name"] == "Ada L."
    # change the password: needs the current one
    assert error_of(client.patch("/users/me", headers=bearer(tokens),
                                 json={"password": "new-password", "current_password": "wrong-one"}),
                    403) == "wrong_password"
    r = client.patch("/users/me", headers=bearer(tokens),
                     json={"password": "new-password", "current_password": pw})
    assert r.status_code == 200
    assert error_of(client.post("/auth/login", json={"email": email, "password": pw}), 401) \
        == "invalid_credentials"
    tokens = login(client, email, "new-password")
    # refresh rotates: the new pair works, the old refresh token is spent
    r = client.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert r.status_code == 200
    fresh = r.json()
    assert fresh["refresh_token"] != tokens["refresh_token"]
    assert client.get("/users/me", headers=bearer(fresh)).status_code == 200
    # reusing a spent refresh token revokes its whole family (the fresh one too)
    assert error_of(client.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]}),
                    401) == "invalid_refresh_token"
    assert client.post("/auth/refresh", json={"refresh_token": fresh["refresh_token"]}).status_code == 401
    # logout revokes the refresh token it is given
    tokens = login(client, email, "new-password")
    assert client.post("/auth/logout", json={"refresh_token": tokens["refresh_token"]}).json() \
        == {"status": "logged_out"}
    assert client.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).status_code == 401
    # deleting the account needs the password; then its tokens and login stop working
    assert error_of(client.request("DELETE", "/users/me", headers=bearer(tokens),
                                   json={"password": "nope-nope"}), 403) == "wrong_password"
    r = client.request("DELETE", "/users/me", headers=bearer(tokens), json={"password": "new-password"})
    assert r.json() == {"deleted": user["id"]}
    assert error_of(client.get("/users/me", headers=bearer(tokens)), 401) == "invalid_token"
    assert client.post("/auth/login", json={"email": email, "password": "new-password"}).status_code == 401


def test_roles_admin_only_endpoints(client):
    admin = login(client, *ADMIN)
    assert admin["user"]["role"] == "admin"
    email, pw, user = new_user(client)
    mine = login(client, email, pw)
    uid = user["id"]
    # a plain user: 403 on admin endpoints, may read only itself
    assert error_of(client.get("/users", headers=bearer(mine)), 403) == "forbidden"
    assert error_of(client.put("/users/%d/role" % uid, headers=bearer(mine), json={"role": "admin"}),
                    403) == "forbidden"
    assert error_of(client.get("/users/%d" % admin["user"]["id"], headers=bearer(mine)), 403) == "forbidden"
    assert client.get("/users/%d" % uid, headers=bearer(mine)).json() == user
    # the admin lists, pages and promotes
    listed = client.get("/users?limit=500", headers=bearer(admin)).json()
    assert user in listed["users"] and listed["total"] >= 2
    page = client.get("/users?limit=1&offset=1", headers=bearer(admin)).json()
    assert len(page["users"]) == 1 and page["offset"] == 1
    assert error_of(client.get("/users?limit=0", headers=bearer(admin)), 400) == "bad_query"
    assert error_of(client.get("/users?limit=x", headers=bearer(admin)), 400) == "bad_query"
    r = client.put("/users/%d/role" % uid, headers=bearer(admin), json={"role": "admin"})
    assert r.status_code == 200 and r.json()["role"] == "admin"
    # the role is read from the database at each request: the old token is an admin's now
    assert client.get("/users", headers=bearer(mine)).status_code == 200
    client.put("/users/%d/role" % uid, headers=bearer(admin), json={"role": "user"})
    assert client.get("/users", headers=bearer(mine)).status_code == 403
    assert error_of(client.put("/users/%d/role" % uid, headers=bearer(admin), json={"role": "root"}),
                    422) == "invalid_field"
    assert error_of(client.put("/users/999999/role", headers=bearer(admin), json={"role": "user"}),
                    404) == "not_found"
    assert error_of(client.get("/users/999999", headers=bearer(admin)), 404) == "not_found"
    # the admin deletes the account
    assert client.delete("/users/%d" % uid, headers=bearer(admin)).json() == {"deleted": uid}
    assert error_of(client.delete("/users/%d" % uid, headers=bearer(admin)), 404) == "not_found"
    assert error_of(client.get("/users/me", headers=bearer(mine)), 401) == "invalid_token"


# -----------------------------------------------------------------------------------------
# Bad input: always a 4xx JSON error, never a 500

@pytest.mark.parametrize("path,kwargs,status,code", [
    ("/auth/register", {"content": b"{"}, 400, "invalid_json"),
    ("/auth/register", {"content": b"\xff\xfe\x00"}, 400, "invalid_json"),
    ("/auth/register", {"content": b"[" * 5000}, 400, "invalid_json"),        # too deep
    ("/auth/register", {"content": b""}, 400, "invalid_json"),
    ("/auth/register", {"json": [1, 2]}, 422, "invalid_body"),
    ("/auth/register", {"json": {"email": "a@b.co"}}, 422, "missing_field"),
    ("/auth/register", {"json": {"email": "a@b.co", "password": "long-enough", "role": "admin"}},
     422, "unknown_field"),
    ("/auth/register", {"json": {"email": "not-an-email", "password": "long-enough"}}, 422, "invalid_field"),
    ("/auth/register", {"json": {"email": 5, "password": "long-enough"}}, 422, "invalid_field"),
    ("/auth/register", {"json": {"email": "a@b.co", "password": "short"}}, 422, "invalid_field"),
    ("/auth/register", {"json": {"email": "a@b.co", "password": "x" * 300}}, 422, "invalid_field"),
    ("/auth/register", {"json": {"email": "a@b.co", "password": "long-enough", "name": "a\x00b"}},
     422, "invalid_field"),
    ("/auth/register", {"content": b'{"email": "a@b.co"}', "headers": {"Content-Type": "text/plain"}},
     415, "unsupported_media_type"),
    ("/auth/register", {"content": b"x" * (16 * 1024 + 1)}, 413, "body_too_large"),
    ("/auth/register", {"content": iter([b"x" * 8192] * 4)}, 413, "body_too_large"),   # chunked
    ("/auth/login", {"json": {"email": ["a"], "password": "x"}}, 422, "invalid_field"),
    ("/auth/login", {"json": {"password": "x"}}, 422, "missing_field"),
    ("/auth/refresh", {"json": {"refresh_token": 12}}, 422, "invalid_field"),
    ("/auth/refresh", {"json": {"refresh_token": "forged"}}, 401, "invalid_refresh_token"),
    ("/auth/logout", {"json": {}}, 422, "missing_field"),
])
def test_bad_input_gets_a_4xx_json_error(client, path, kwargs, status, code):
    assert error_of(client.post(path, **kwargs), status) == code


def test_missing_field_names_the_fields(client):
    r = client.post("/auth/register", json={"name": "x"})
    assert r.json()["fields"] == ["email", "password"]


def test_routing_errors_are_json(client):
    assert error_of(client.get("/nothing/here"), 404) == "not_found"
    assert error_of(client.get("/users/abc"), 404) == "not_found"
    r = client.delete("/auth/login")
    assert error_of(r, 405) == "method_not_allowed" and r.headers["allow"] == "POST"


def test_duplicate_email_is_a_conflict(client):
    email, pw, _ = new_user(client)
    assert error_of(client.post("/auth/register", json={"email": email.upper(), "password": pw}),
                    409) == "email_taken"


def test_sql_injection_strings_are_only_data(client):
    admin = login(client, *ADMIN)
    before = client.get("/users?limit=500", headers=bearer(admin)).json()["total"]
    evil = "x';DROP/**/TABLE/**/users;--@example.com"
    r = client.post("/auth/register", json={"email": evil, "password": "password-1",
                                            "name": "Robert'); DROP TABLE users;--"})
    assert r.status_code == 201
    assert r.json()["name"] == "Robert'); DROP TABLE users;--"
    for email in ("' OR '1'='1", "' OR 1=1 --", evil.replace("x'", "y'")):
        assert error_of(client.post("/auth/login", json={"email": email, "password": "' OR '1'='1"}),
                        401) == "invalid_credentials"
    assert login(client, evil, "password-1")["user"]["email"] == evil.lower()   # emails are case-folded
    assert error_of(client.get("/users?limit=1;DROP TABLE users", headers=bearer(admin)), 400) == "bad_query"
    assert client.get("/users?limit=500", headers=bearer(admin)).json()["total"] == before + 1


def _b64(obj):
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _tamper(token):
    """Change one signature character well inside the signature (the last base64url
    character carries padding bits: changing it may not change the bytes)."""
    i = len(token) - 10
    return token[:i] + ("B" if token[i] == "A" else "A") + token[i + 1:]


def test_tokens_missing_forged_expired_or_of_the_wrong_kind(client, service):
    email, pw, user = new_user(client)
    tokens = login(client, email, pw)
    now = int(time.time())
    claims = {"sub": str(user["id"]), "role": "admin", "iat": now, "exp": now + 60, "typ": "access"}
    secret = service.config.secret
    cases = {
        "none": ({}, "unauthorized"),
        "basic": ({"Authorization": "Basic dTpw"}, "unauthorized"),
        "garbage": ({"Authorization": "Bearer not.a.jwt"}, "invalid_token"),
        "forged": ({"Authorization": "Bearer " + jwt.encode(claims, "another-secret-of-32-characters!", "HS256")},
                   "invalid_token"),
        "alg none": ({"Authorization": "Bearer %s.%s." % (_b64({"alg": "none", "typ": "JWT"}), _b64(claims))},
                     "invalid_token"),
        "expired": ({"Authorization": "Bearer " + jwt.encode(dict(claims, iat=now - 120, exp=now - 60), secret, "HS256")},
                    "token_expired"),
        "wrong type": ({"Authorization": "Bearer " + jwt.encode(dict(claims, typ="refresh"), secret, "HS256")},
                       "invalid_token"),
        "refresh token": ({"Authorization": "Bearer " + tokens["refresh_token"]}, "invalid_token"),
        "tampered": ({"Authorization": "Bearer " + _tamper(tokens["access_token"])}, "invalid_token"),
    }
    for name, (headers, code) in cases.items():
        r = client.get("/users/me", headers=headers)
        assert error_of(r, 401) == code, name
        assert r.headers["www-authenticate"].startswith("Bearer"), name
    # a correctly signed token still gets its role from the database: no escalation
    good = jwt.encode(claims, secret, "HS256")
    assert client.get("/users", headers={"Authorization": "Bearer " + good}).status_code == 403


# -----------------------------------------------------------------------------------------
# Rate limiting, crash isolation

def test_account_lockout_after_failed_logins(client):
    email, pw, _ = new_user(client)
    other, other_pw, _ = new_user(client)
    for _ in range(3):      # Policy(3, ...): the third failure locks the account
        assert error_of(client.post("/auth/login", json={"email": email, "password": "wrong-pass"}),
                        401) == "invalid_credentials"
    r = client.post("/auth/login", json={"email": email, "password": pw})   # even the right one
    assert error_of(r, 429) == "too_many_attempts"
    assert r.headers["retry-after"] == str(r.json()["retry_after"]) and 1 <= r.json()["retry_after"] <= 60
    # the lock is per account: another account from the same address logs in
    login(client, other, other_pw)
    # unknown accounts are limited as well (no enumeration by lock-out behaviour)
    for _ in range(3):
        client.post("/auth/login", json={"email": "ghost@example.com", "password": "wrong-pass"})
    assert client.post("/auth/login", json={"email": "ghost@example.com", "password": "x"}).status_code == 429


def test_a_crash_in_a_handler_is_isolated_to_its_request(client, monkeypatch, caplog):
    email, pw, _ = new_user(client)
    tokens = login(client, email, pw)

    async def crashing(svc, ctx):
        await app_module.authenticate(svc, ctx)
        raise ZeroDivisionError("boom in get_me")

    monkeypatch.setattr(app_module, "get_me", crashing)
    with caplog.at_level(logging.ERROR):
        r = client.get("/users/me", headers=bearer(tokens))
    assert r.status_code == 500
    body = r.json()
    assert body["error"] == "internal_error" and len(body["request_id"]) == 16
    assert "boom" not in r.text                       # no internals leak to the client
    text = caplog.text
    assert "ZeroDivisionError" in text and "boom in get_me" in text       # the crash report
    assert body["request_id"] in text
    # the server keeps serving, on the same connection too
    assert client.get("/health").json()["status"] == "ok"
    assert client.patch("/users/me", headers=bearer(tokens), json={"name": "still here"}).status_code == 200
    monkeypatch.undo()
    assert client.get("/users/me", headers=bearer(tokens)).status_code == 200


def test_passwords_are_never_logged(client, caplog):
    secret_pw = "Very-Secret-Passphrase-42"
    with caplog.at_level(logging.DEBUG):
        email, _, _ = new_user(client, password=secret_pw)
        login(client, email, secret_pw)
        client.post("/auth/login", json={"email": email, "password": secret_pw + "x"})
    assert "registered user" in caplog.text
    assert secret_pw not in caplog.text


# -----------------------------------------------------------------------------------------
# Load: 1000 concurrent logins

def test_load_1000_concurrent_logins(service, capsys):
    import asyncio
    r = asyncio.run(bench.login_run(service.url, n=1000, accounts=50))
    with capsys.disabled():
        print("\nuser service load run: " + bench.report(r))
    assert r["errors"] == 0, r["statuses"]
    assert r["statuses"] == {200: 1000}


# -----------------------------------------------------------------------------------------
# The command line: python -m examples.user_service

def _start_cli(db, *extra):
    env = dict(os.environ, PYTHONPATH=child_pythonpath(str(ROOT)))
    proc = subprocess.Popen([sys.executable, "-m", "examples.user_service", "--port", "0",
                             "--db", str(db), "--argon2-time-cost", "1", "--argon2-memory-cost", "8",
                             "--log-level", "WARNING", *extra],
                            cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    if not line.startswith("user service listening on http://127.0.0.1:"):
        proc.kill()
        raise AssertionError("no listening line: %r %s" % (line, proc.communicate()[1]))
    return proc, line.split()[-1]


def _stop_cli(proc, sig=signal.SIGINT):
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return out


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process is POSIX")
def test_cli_serves_persists_in_sqlite_and_stops_on_signals(tmp_path):
    db = tmp_path / "users.db"
    proc, url = _start_cli(db)
    try:
        with httpx.Client(base_url=url) as c:
            assert c.post("/auth/register", json={"email": "kept@example.com",
                                                  "password": "kept-password"}).status_code == 201
        assert _stop_cli(proc).strip().endswith("stopped (SIGINT)")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # a restart on the same file: the migration does not run twice, the account is there
    proc, url = _start_cli(db)
    try:
        with httpx.Client(base_url=url) as c:
            assert c.get("/health").json() == {"status": "ok", "schema_version": 1}
            assert login(c, "kept@example.com", "kept-password")["user"]["email"] == "kept@example.com"
        assert _stop_cli(proc, signal.SIGTERM).strip().endswith("stopped (SIGTERM)")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_a_store_crash_restarts_only_the_store(client, service):
    import pyotp
    from pyotp import Supervisor
    from examples.user_service.store import STORE
    email, pw, _ = new_user(client)
    locked, locked_pw, _ = new_user(client)
    for _ in range(3):
        client.post("/auth/login", json={"email": locked, "password": "wrong-pass"})
    assert client.get("/health").status_code == 200            # a keep-alive connection

    async def kill_store():
        pid = pyotp.whereis(STORE)
        ref = pyotp.monitor(pid)
        pyotp.exit(pid, "kill")
        await pyotp.receive(lambda m: type(m) is tuple and m[:2] == ("DOWN", ref))
        # the supervisor handled the EXIT (and restarted the store) before this call
        children = {c[0]: c[1] for c in await Supervisor.which_children(pyotp.whereis("UserService"))}
        return pid, children[STORE], pyotp.whereis(STORE)

    old, restarted, now = service.run(kill_store)
    assert restarted == now and now != old
    # the restarted store reopened the file (the migration is not applied twice); the
    # HTTP server and the rate limiter were not restarted (same connection, lock-out kept)
    assert client.get("/health").json() == {"status": "ok", "schema_version": 1}
    assert client.post("/auth/login", json={"email": locked, "password": locked_pw}).status_code == 429
    assert login(client, email, pw)["user"]["email"] == email


def test_the_only_admin_cannot_be_demoted_or_deleted(client):
    admin = login(client, *ADMIN)
    me = admin["user"]["id"]
    assert error_of(client.put("/users/%d/role" % me, headers=bearer(admin), json={"role": "user"}),
                    409) == "last_admin"
    assert error_of(client.delete("/users/%d" % me, headers=bearer(admin)), 409) == "last_admin"
    assert error_of(client.request("DELETE", "/users/me", headers=bearer(admin),
                                   json={"password": ADMIN[1]}), 409) == "last_admin"
    # with a second admin, the first may step down (and the second then may not)
    email, pw, other = new_user(client)
    client.put("/users/%d/role" % other["id"], headers=bearer(admin), json={"role": "admin"})
    assert client.put("/users/%d/role" % me, headers=bearer(admin), json={"role": "user"}).status_code == 200
    second = login(client, email, pw)
    assert error_of(client.put("/users/%d/role" % other["id"], headers=bearer(second),
                               json={"role": "user"}), 409) == "last_admin"
    assert client.put("/users/%d/role" % me, headers=bearer(second), json={"role": "admin"}).status_code == 200
    assert client.delete("/users/%d" % other["id"], headers=bearer(admin)).status_code == 200


def test_an_expired_refresh_token_is_refused(client, service):
    from pyotp import GenServer
    from examples.user_service.auth import Tokens
    from examples.user_service.store import STORE
    _, _, user = new_user(client)
    token = Tokens.new_refresh()

    async def plant():
        return await GenServer.call(STORE, ("add_refresh", Tokens.digest(token), user["id"],
                                            "family-x", time.time() - 1))

    assert service.run(plant) == "ok"
    r = client.post("/auth/refresh", json={"refresh_token": token})
    assert error_of(r, 401) == "invalid_refresh_token" and "expired" in r.json()["message"]
