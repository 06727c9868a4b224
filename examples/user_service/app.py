"""The user service: configuration, supervision tree, HTTP routes and handlers.

Supervision tree::

    UserService (Supervisor, one_for_one: the parts fail independently)
    ├── LoginLimitsSup  Supervisor (rest_for_one: the buckets' names live in the Registry)
    │   ├── LoginLimits   Registry (unique): names the rate-limit buckets (via names)
    │   └── LoginBuckets  DynamicSupervisor: one LoginBucket per account / client IP
    ├── UserStore       Store: owns the SQLite / PostgreSQL connection, migrates at start
    ├── bootstrap_admin creates the configured admin account, then is ignored
    └── UserHttp        AsgiServer: uvicorn in the node's loop, one process per request

A crash of the store does not touch the lock-outs or the open connections: requests
that reach it while it restarts get 503 (``web.in_process``), later ones are served.
"""
from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import secrets
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, Optional, Tuple

import pyotp
from pyotp import DynamicSupervisor, GenServer, Registry, Supervisor

from . import ratelimit
from .auth import Hasher, Tokens
from .ratelimit import Policy
from .store import ROLES, STORE, Store
from .web import RUNNER, ApiError, AsgiServer, Reply, in_process, json_body, read_body

log = logging.getLogger("user_service")

HTTP = "UserHttp"



def _resolve(fut: "asyncio.Future[Any]", value: Any) -> None:
    """Set ``fut``'s result unless it is already done (a second signal, a second stop)."""
    if not fut.done():
        fut.set_result(value)

@dataclass
class Config:
    """How to run the service. Durations are seconds.

    ``db``: the SQLite file (":memory:" for none); ``dsn``: a PostgreSQL DSN, used
    instead when given. ``secret``: the JWT signing key (default: the environment's
    ``USER_SERVICE_SECRET``, else a random one, so tokens die with the process).
    ``admin_email`` / ``admin_password``: an admin account created at start if missing.

    >>> Config(port=0, db=":memory:").access_ttl
    900.0
    """
    host: str = "127.0.0.1"
    port: int = 8000
    db: str = "user_service.db"
    dsn: Optional[str] = None
    secret: Optional[str] = None
    access_ttl: float = 900.0
    refresh_ttl: float = 14 * 24 * 3600.0
    argon2_time_cost: int = 3
    argon2_memory_cost: int = 64 * 1024          # KiB
    argon2_parallelism: int = 1
    max_body: int = 16 * 1024                    # bytes
    account_policy: Policy = field(default_factory=lambda: Policy(5, 300.0, 900.0))
    ip_policy: Policy = field(default_factory=lambda: Policy(50, 300.0, 900.0))
    admin_email: Optional[str] = None
    admin_password: Optional[str] = None
    keep_alive: float = 5.0

    def __post_init__(self) -> None:
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValueError("Config port must be an int in 0..65535, got %r" % (self.port,))
        for key in ("access_ttl", "refresh_ttl", "keep_alive"):
            v = getattr(self, key)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
                raise ValueError("Config %s must be seconds > 0, got %r" % (key, v))
        if not isinstance(self.max_body, int) or self.max_body < 1024:
            raise ValueError("Config max_body must be an int >= 1024, got %r" % (self.max_body,))
        if self.secret is None:
            self.secret = os.environ.get("USER_SERVICE_SECRET") or secrets.token_urlsafe(32)
        if len(self.secret) < 16:
            raise ValueError("Config secret must be at least 16 characters")


class Service:
    """What every request handler needs: the config, the hasher and the token issuer."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.hasher = Hasher(config.argon2_time_cost, config.argon2_memory_cost,
                             config.argon2_parallelism)
        assert config.secret is not None
        self.tokens = Tokens(config.secret, config.access_ttl, config.refresh_ttl)


@dataclass
class Ctx:
    """One request, as its process sees it."""
    method: str
    path_params: Dict[str, Any]
    query: Dict[str, str]
    headers: Dict[str, str]
    body: bytes
    client: str


# =========================================================================================
# Validation

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


def _object(ctx: Ctx, required: Tuple[str, ...], optional: Tuple[str, ...] = ()) -> Dict[str, Any]:
    data = json_body(ctx.body, ctx.headers.get("content-type", "application/json"))
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_body", "expected a JSON object")
    missing = [k for k in required if k not in data]
    if missing:
        raise ApiError(422, "missing_field", "missing field(s): %s" % ", ".join(missing),
                       fields=missing)
    unknown = sorted(set(data) - set(required) - set(optional))
    if unknown:
        raise ApiError(422, "unknown_field", "unknown field(s): %s" % ", ".join(unknown)[:200])
    return data


def _email(v: Any) -> str:
    if not isinstance(v, str) or len(v) > 254 or not _EMAIL.match(v):
        raise ApiError(422, "invalid_field", "email must be an email address", field="email")
    return v.strip().lower()


def _password(v: Any, name: str = "password") -> str:
    if not isinstance(v, str) or not 8 <= len(v) <= 256:
        raise ApiError(422, "invalid_field", "%s must be a string of 8 to 256 characters" % name,
                       field=name)
    return v


def _name(v: Any) -> str:
    if not isinstance(v, str) or len(v) > 100 or any(ord(c) < 32 for c in v):
        raise ApiError(422, "invalid_field", "name must be a string of at most 100 characters",
                       field="name")
    return v.strip()


def public(user: Dict[str, Any]) -> Dict[str, Any]:
    """A user as the API shows it (never the password hash)."""
    return {k: user[k] for k in ("id", "email", "name", "role", "created_at", "updated_at")}


# =========================================================================================
# Authentication and authorization

async def authenticate(svc: Service, ctx: Ctx) -> Dict[str, Any]:
    """The user behind the request's bearer token (401 when missing, malformed, forged,
    expired, or its account is gone). The role comes from the database, not the token,
    so a demotion or a deletion takes effect at once."""
    auth = ctx.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <access token>",
                       {"WWW-Authenticate": "Bearer"})
    claims = svc.tokens.check_access(token.strip())
    user = await GenServer.call(STORE, ("user", int(claims["sub"])))
    if user is None:
        raise ApiError(401, "invalid_token", "the account no longer exists",
                       {"WWW-Authenticate": 'Bearer error="invalid_token"'})
    return user  # type: ignore[no-any-return]


async def require_admin(svc: Service, ctx: Ctx) -> Dict[str, Any]:
    user = await authenticate(svc, ctx)
    if user["role"] != "admin":
        raise ApiError(403, "forbidden", "this needs the admin role")
    return user


async def _issue(svc: Service, user: Dict[str, Any], family: Optional[str] = None) -> Reply:
    now = time.time()
    refresh = svc.tokens.new_refresh()
    await GenServer.call(STORE, ("add_refresh", svc.tokens.digest(refresh), user["id"],
                                 family or secrets.token_hex(8), svc.tokens.refresh_expiry()))
    return (200, {"access_token": svc.tokens.access(user, now), "token_type": "Bearer",
                  "expires_in": int(svc.config.access_ttl), "refresh_token": refresh,
                  "user": public(user)}, {"Cache-Control": "no-store"})


def _too_many(verdict: Any) -> ApiError:
    wait = max(1, math.ceil(verdict[1]))
    return ApiError(429, "too_many_attempts", "too many failed logins; try again later",
                    {"Retry-After": str(wait)}, retry_after=wait)


# =========================================================================================
# Handlers: each runs as its own process (web.in_process)

async def health(svc: Service, ctx: Ctx) -> Reply:
    return (200, {"status": "ok", "schema_version": await GenServer.call(STORE, "schema_version")}, {})


async def register(svc: Service, ctx: Ctx) -> Reply:
    data = _object(ctx, ("email", "password"), ("name",))
    email, password = _email(data["email"]), _password(data["password"])
    name = _name(data.get("name", ""))
    user = await GenServer.call(STORE, ("create_user", email, await svc.hasher.hash(password),
                                        name, "user"))
    if user == ("error", "email_taken"):
        raise ApiError(409, "email_taken", "an account with this email exists")
    log.info("registered user %s", user["id"])
    return (201, public(user), {})


async def login(svc: Service, ctx: Ctx) -> Reply:
    data = _object(ctx, ("email", "password"))
    if not isinstance(data["email"], str) or not isinstance(data["password"], str) \
            or len(data["email"]) > 254 or len(data["password"]) > 256:
        raise ApiError(422, "invalid_field", "email and password must be strings")
    email = data["email"].strip().lower()
    cfg = svc.config
    keys = ((("ip", ctx.client), cfg.ip_policy), (("account", email), cfg.account_policy))
    for key, policy in keys:
        verdict = await ratelimit.check(key, policy)
        if verdict[0] == "locked":
            raise _too_many(verdict)
    user = await GenServer.call(STORE, ("user_by_email", email))
    ok = await svc.hasher.verify(user["password_hash"] if user else svc.hasher.dummy,
                                 data["password"])
    if not ok or user is None:
        for key, policy in keys:
            await ratelimit.record_failure(key, policy)
        log.info("failed login for an account from %s", ctx.client)
        raise ApiError(401, "invalid_credentials", "wrong email or password")
    await ratelimit.record_success(("account", email), cfg.account_policy)
    return await _issue(svc, user)


async def refresh(svc: Service, ctx: Ctx) -> Reply:
    data = _object(ctx, ("refresh_token",))
    token = data["refresh_token"]
    if not isinstance(token, str) or len(token) > 200:
        raise ApiError(422, "invalid_field", "refresh_token must be a string")
    used = await GenServer.call(STORE, ("use_refresh", svc.tokens.digest(token)))
    if used[0] != "ok":
        raise ApiError(401, "invalid_refresh_token", "the refresh token is %s"
                       % {"unknown": "unknown", "revoked": "revoked", "expired": "expired"}[used[1]])
    user = await GenServer.call(STORE, ("user", used[1]))
    if user is None:
        raise ApiError(401, "invalid_refresh_token", "the account no longer exists")
    return await _issue(svc, user, used[2])


async def logout(svc: Service, ctx: Ctx) -> Reply:
    data = _object(ctx, ("refresh_token",))
    token = data["refresh_token"]
    if not isinstance(token, str) or len(token) > 200:
        raise ApiError(422, "invalid_field", "refresh_token must be a string")
    await GenServer.call(STORE, ("revoke_refresh", svc.tokens.digest(token)))
    return (200, {"status": "logged_out"}, {})


async def get_me(svc: Service, ctx: Ctx) -> Reply:
    return (200, public(await authenticate(svc, ctx)), {})


async def update_me(svc: Service, ctx: Ctx) -> Reply:
    user = await authenticate(svc, ctx)
    data = _object(ctx, (), ("name", "password", "current_password"))
    fields: Dict[str, Any] = {}
    if "name" in data:
        fields["name"] = _name(data["name"])
    if "password" in data:
        new = _password(data["password"])
        current = data.get("current_password")
        if not isinstance(current, str) or not await svc.hasher.verify(user["password_hash"], current):
            raise ApiError(403, "wrong_password", "current_password is missing or wrong")
        fields["password_hash"] = await svc.hasher.hash(new)
    if not fields:
        raise ApiError(422, "missing_field", "send name and/or password")
    updated = await GenServer.call(STORE, ("update_user", user["id"], fields))
    return (200, public(updated), {})


async def delete_me(svc: Service, ctx: Ctx) -> Reply:
    user = await authenticate(svc, ctx)
    data = _object(ctx, ("password",))
    if not isinstance(data["password"], str) or not await svc.hasher.verify(user["password_hash"], data["password"]):
        raise ApiError(403, "wrong_password", "password is wrong")
    _not_last_admin(await GenServer.call(STORE, ("delete_user", user["id"])))
    log.info("user %s deleted their account", user["id"])
    return (200, {"deleted": user["id"]}, {})


def _not_last_admin(result: Any) -> Any:
    if result == ("error", "last_admin"):
        raise ApiError(409, "last_admin", "the only admin cannot be demoted or deleted")
    return result


def _limit_offset(ctx: Ctx) -> Tuple[int, int]:
    try:
        limit = int(ctx.query.get("limit", "50"))
        offset = int(ctx.query.get("offset", "0"))
    except ValueError:
        raise ApiError(400, "bad_query", "limit and offset must be integers")
    if not 1 <= limit <= 500 or not 0 <= offset <= 2 ** 62:
        raise ApiError(400, "bad_query", "limit must be 1..500 and offset >= 0")
    return limit, offset


async def list_users(svc: Service, ctx: Ctx) -> Reply:
    await require_admin(svc, ctx)
    limit, offset = _limit_offset(ctx)
    users, total = await GenServer.call(STORE, ("list_users", limit, offset))
    return (200, {"users": [public(u) for u in users], "total": total,
                  "limit": limit, "offset": offset}, {})


async def get_user(svc: Service, ctx: Ctx) -> Reply:
    me = await authenticate(svc, ctx)
    uid = ctx.path_params["id"]
    if me["role"] != "admin" and me["id"] != uid:
        raise ApiError(403, "forbidden", "this needs the admin role")
    user = await GenServer.call(STORE, ("user", uid))
    if user is None:
        raise ApiError(404, "not_found", "no user %d" % uid)
    return (200, public(user), {})


async def set_role(svc: Service, ctx: Ctx) -> Reply:
    admin = await require_admin(svc, ctx)
    data = _object(ctx, ("role",))
    if data["role"] not in ROLES:
        raise ApiError(422, "invalid_field", "role must be one of %s" % ", ".join(ROLES), field="role")
    uid = ctx.path_params["id"]
    user = _not_last_admin(await GenServer.call(STORE, ("set_role", uid, data["role"])))
    if user is None:
        raise ApiError(404, "not_found", "no user %d" % uid)
    log.info("admin %s set the role of user %s to %s", admin["id"], uid, data["role"])
    return (200, public(user), {})


async def delete_user(svc: Service, ctx: Ctx) -> Reply:
    admin = await require_admin(svc, ctx)
    uid = ctx.path_params["id"]
    if not _not_last_admin(await GenServer.call(STORE, ("delete_user", uid))):
        raise ApiError(404, "not_found", "no user %d" % uid)
    log.info("admin %s deleted user %s", admin["id"], uid)
    return (200, {"deleted": uid}, {})


# =========================================================================================
# The ASGI app (Starlette)

Handler = Callable[[Service, Ctx], Awaitable[Reply]]

ROUTES: Tuple[Tuple[str, str, str], ...] = (
    ("/health", "GET", "health"),
    ("/auth/register", "POST", "register"),
    ("/auth/login", "POST", "login"),
    ("/auth/refresh", "POST", "refresh"),
    ("/auth/logout", "POST", "logout"),
    ("/users/me", "GET", "get_me"),
    ("/users/me", "PATCH", "update_me"),
    ("/users/me", "DELETE", "delete_me"),
    ("/users", "GET", "list_users"),
    ("/users/{id:int}", "GET", "get_user"),
    ("/users/{id:int}", "DELETE", "delete_user"),
    ("/users/{id:int}/role", "PUT", "set_role"),
)


def create_app(svc: Service) -> Any:
    """The Starlette app: each route reads its body (bounded) in uvicorn's task, then
    runs its handler as a new pyotp process (``web.in_process``). Handlers are looked
    up in this module by name at each request."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    def respond(reply: Reply) -> Response:
        import json
        status, payload, headers = reply
        body = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()
        return Response(body, status, headers, media_type="application/json")

    def endpoint(methods: Dict[str, str]) -> Callable[[Request], Awaitable[Response]]:
        async def ep(request: Request) -> Response:
            handler: Handler = globals()[methods[request.method]]
            try:
                body = b""
                if request.method in ("POST", "PUT", "PATCH", "DELETE"):
                    body = await read_body(request.receive, dict(request.headers), svc.config.max_body)
            except ApiError as e:
                return respond(e.reply())
            ctx = Ctx(request.method, dict(request.path_params), dict(request.query_params),
                      dict(request.headers), body,
                      request.client.host if request.client else "unknown")
            return respond(await in_process(handler, svc, ctx,
                                            what="%s %s" % (request.method, request.url.path)))
        return ep

    by_path: Dict[str, Dict[str, str]] = {}
    for path, method, name in ROUTES:
        by_path.setdefault(path, {})[method] = name
    routes = [Route(path, endpoint(methods), methods=list(methods))
              for path, methods in by_path.items()]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return respond((exc.status_code, {"error": code, "message": str(exc.detail)},
                        dict(exc.headers or {})))

    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})


# =========================================================================================
# The supervision tree

async def _bootstrap_admin(svc: Service) -> None:
    """A child that creates the configured admin account if missing, then is ignored."""
    cfg = svc.config
    if cfg.admin_email and cfg.admin_password:
        email = _email(cfg.admin_email)
        user = await GenServer.call(STORE, ("user_by_email", email))
        if user is None:
            user = await GenServer.call(STORE, ("create_user", email,
                                                await svc.hasher.hash(cfg.admin_password),
                                                "admin", "admin"))
        elif user["role"] != "admin":
            await GenServer.call(STORE, ("set_role", user["id"], "admin"))
    return None


class UserService(Supervisor):
    """The whole service (see the module documentation).

    >>> sup = await UserService.start_link(Config(port=0, db=":memory:"))
    >>> port = await AsgiServer.port(HTTP)
    """

    def init(self, config: Config) -> Any:  # type: ignore[override]
        if not isinstance(config, Config):
            raise TypeError("UserService needs a Config, got %r" % (config,))
        svc = Service(config)
        store_opts = {"dsn": config.dsn} if config.dsn else {"sqlite_path": config.db}
        limits = [
            (Registry, {"keys": "unique", "name": ratelimit.LIMITS}),
            {"id": ratelimit.BUCKETS, "type": "supervisor",
             "start": (DynamicSupervisor.start_link, (), {"name": ratelimit.BUCKETS})},
        ]
        children = [
            {"id": "LoginLimitsSup", "type": "supervisor",
             "start": (Supervisor.start_link, (limits,), {"strategy": "rest_for_one",
                                                          "name": "LoginLimitsSup"})},
            {"id": STORE, "start": (Store.start_link, (store_opts,), {"name": STORE})},
            {"id": "bootstrap_admin", "start": (_bootstrap_admin, (svc,))},
            {"id": HTTP, "start": (AsgiServer.start_link,
                                   ({"app": create_app(svc), "host": config.host,
                                     "port": config.port, "keep_alive": config.keep_alive,
                                     "label": "user service"},), {"name": HTTP})},
        ]
        return Supervisor.init(children, strategy="one_for_one")


# =========================================================================================
# Running it: inside an asyncio program, or on a thread

async def serve(config: Config, *, on_ready: Optional[Callable[[int], None]] = None,
                stop: Optional["asyncio.Future[Any]"] = None, handle_signals: bool = True) -> Any:
    """Run the service in the current asyncio loop (a ``pyotp.Runtime`` hosts the node
    in it) until ``stop`` is resolved, SIGINT/SIGTERM arrives, or the supervision tree
    gives up (then raises ``pyotp.Exit(reason)``). ``on_ready(port)`` is called once
    serving. Returns the signal name or ``stop``'s result."""
    loop = asyncio.get_running_loop()
    stop = stop if stop is not None else loop.create_future()
    installed = []
    if handle_signals and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, _resolve, stop, sig.name)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):
                pass
    try:
        async with pyotp.Runtime() as rt:
            started: "asyncio.Future[int]" = loop.create_future()
            ended: "asyncio.Future[Any]" = loop.create_future()
            keeper = rt.spawn(_keeper, config, started, ended)
            await asyncio.wait([started, ended], return_when=asyncio.FIRST_COMPLETED)
            if ended.done():
                raise pyotp.Exit(ended.result())
            if on_ready is not None:
                on_ready(started.result())
            await asyncio.wait([stop, ended], return_when=asyncio.FIRST_COMPLETED)
            if ended.done():
                raise pyotp.Exit(ended.result())
            pyotp.send(keeper, "stop")
            await ended
            return stop.result()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def _keeper(config: Config, started: "asyncio.Future[int]", ended: "asyncio.Future[Any]") -> None:
    """The process that owns the tree (its link): stops it on request, and tells the
    asyncio side when the tree dies (restart intensity exceeded)."""
    pyotp.process_flag("trap_exit", True)
    try:
        sup = await UserService.start_link(config, name="UserService")
    except pyotp.StartError as e:
        ended.set_result(e.args[0] if e.args else "start_failed")
        return
    started.set_result(await AsgiServer.port(HTTP))
    msg = await pyotp.receive(lambda m: m == "stop" or (type(m) is tuple and m[0] == "EXIT" and m[1] == sup))
    if msg == "stop":
        await Supervisor.stop(sup)
        ended.set_result("normal")
    else:
        ended.set_result(msg[2])


class ServiceThread:
    """The service on a background thread with its own event loop and node, for tests,
    scripts and notebooks. ``url`` is where it listens; ``stop()`` shuts it down in order.

    >>> svc = ServiceThread(Config(port=0, db=":memory:"))
    >>> httpx.get(svc.url + "/health").json()["status"]
    'ok'
    >>> svc.stop()
    """

    def __init__(self, config: Config, timeout: float = 30.0) -> None:
        self.config = config
        self.port = 0
        self._ready = threading.Event()
        self._error: Optional[BaseException] = None
        try:
            import uvloop  # the faster event loop, when installed
            self._loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        except ImportError:
            self._loop = asyncio.new_event_loop()
        self._stop: "asyncio.Future[Any]" = self._loop.create_future()
        self._thread = threading.Thread(target=self._main, name="user-service", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the user service did not start within %.0f s" % timeout)
        if self._error is not None:
            raise self._error

    @property
    def url(self) -> str:
        return "http://%s:%d" % (self.config.host, self.port)

    def _main(self) -> None:
        def ready(port: int) -> None:
            self.port = port
            self._ready.set()
        try:
            self._loop.run_until_complete(serve(self.config, on_ready=ready, stop=self._stop,
                                                handle_signals=False))
        except BaseException as e:
            self._error = e
        finally:
            self._ready.set()
            self._loop.close()

    def run(self, fn: Callable[..., Awaitable[Any]], *args: Any, timeout: float = 30.0) -> Any:
        """Run ``fn(*args)`` as a process in the service's node and return its result
        (blocks this thread; for tests and administration scripts)."""
        fut = asyncio.run_coroutine_threadsafe(RUNNER.run_process(fn, *args), self._loop)
        return fut.result(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(_resolve, self._stop, "stopped")
            self._thread.join(timeout)
        if self._error is not None:
            raise self._error

    def __enter__(self) -> "ServiceThread":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
