"""Storage: one GenServer owns the database connection (SQLite by default, PostgreSQL
when a DSN is given) and runs the migrations when it starts. Every query is
parameterised: user input is never spliced into SQL.

>>> await GenServer.call(STORE, ("user_by_email", "ada@example.com"))
{'id': 1, 'email': 'ada@example.com', ...}
"""
from __future__ import annotations

import logging
import sqlite3
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from pyotp import GenServer

log = logging.getLogger("user_service.store")

STORE = "UserStore"
ROLES = ("user", "admin")

# One list per dialect, applied in order; the version reached is kept in schema_version,
# so a restart (or a new release with more entries) applies only what is missing.
MIGRATIONS: Dict[str, List[Sequence[str]]] = {
    "sqlite": [
        ("""CREATE TABLE users (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                email TEXT NOT NULL UNIQUE,
                password_hash TEXT NOT NULL,
                name TEXT NOT NULL DEFAULT '',
                role TEXT NOT NULL DEFAULT 'user',
                created_at REAL NOT NULL,
                updated_at REAL NOT NULL)""",
         """CREATE TABLE refresh_tokens (
                token_hash TEXT PRIMARY KEY,
                user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
                family TEXT NOT NULL,
                expires_at REAL NOT NULL,
                revoked INTEGER NOT NULL DEFAULT 0)""",
         "CREATE INDEX refresh_tokens_user ON refresh_tokens(user_id)"),
    ],
    "postgres": [
        ("""CREATE TABLE users (
                id BIGSERIAL PRIMARY KEY,
                email TEXT NOT NULL UNIQUE,
                password_hash TEXT NOT NULL,
                name TEXT NOT NULL DEFAULT '',
                role TEXT NOT NULL DEFAULT 'user',
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL)""",
         """CREATE TABLE refresh_tokens (
                token_hash TEXT PRIMARY KEY,
                user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
                family TEXT NOT NULL,
                expires_at DOUBLE PRECISION NOT NULL,
                revoked INTEGER NOT NULL DEFAULT 0)""",
         "CREATE INDEX refresh_tokens_user ON refresh_tokens(user_id)"),
    ],
}

_USER_COLS = "id, email, name, role, created_at, updated_at, password_hash"


def _user(row: Any) -> Optional[Dict[str, Any]]:
    if row is None:
        return None
    keys = ("id", "email", "name", "role", "created_at", "updated_at", "password_hash")
    return dict(zip(keys, tuple(row)))


class _Sqlite:
    dialect = "sqlite"

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA foreign_keys = ON")
        if path != ":memory:":
            self.conn.execute("PRAGMA journal_mode = WAL")

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        return self.conn.execute(sql, tuple(args)).rowcount

    async def fetchone(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return self.conn.execute(sql, tuple(args)).fetchone()

    async def fetchall(self, sql: str, args: Sequence[Any] = ()) -> List[Any]:
        return self.conn.execute(sql, tuple(args)).fetchall()

    async def insert(self, sql: str, args: Sequence[Any]) -> int:
        return self.conn.execute(sql, tuple(args)).lastrowid  # type: ignore[return-value]

    async def script(self, statements: Sequence[str]) -> None:
        self.conn.execute("BEGIN")
        try:
            for st in statements:
                self.conn.execute(st)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    async def close(self) -> None:
        self.conn.close()


def _pg(sql: str) -> str:
    """``?`` placeholders to asyncpg's ``$1, $2, ...`` (no SQL here has a literal ?)."""
    out, n = [], 0
    for part in sql.split("?"):
        out.append(part)
        n += 1
        out.append("$%d" % n)
    return "".join(out[:-1])


class _Postgres:
    dialect = "postgres"

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    @classmethod
    async def connect(cls, dsn: str) -> "_Postgres":
        import asyncpg
        return cls(await asyncpg.connect(dsn))

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        status = await self.conn.execute(_pg(sql), *args)
        return int(status.rsplit(" ", 1)[-1]) if status[-1:].isdigit() else 0

    async def fetchone(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return await self.conn.fetchrow(_pg(sql), *args)

    async def fetchall(self, sql: str, args: Sequence[Any] = ()) -> List[Any]:
        return list(await self.conn.fetch(_pg(sql), *args))

    async def insert(self, sql: str, args: Sequence[Any]) -> int:
        return await self.conn.fetchval(_pg(sql) + " RETURNING id", *args)  # type: ignore[no-any-return]

    async def script(self, statements: Sequence[str]) -> None:
        async with self.conn.transaction():
            for st in statements:
                await self.conn.execute(st)

    async def close(self) -> None:
        await self.conn.close()


class Store(GenServer):
    """Owns the connection. ``opts``: ``sqlite_path`` (a file, or ":memory:") or ``dsn``
    (``postgresql://...``: PostgreSQL through asyncpg). Requests (``GenServer.call``):

    ``("create_user", email, password_hash, name, role)`` -> user | ("error", "email_taken");
    ``("user_by_email", email)``, ``("user", id)`` -> user | None;
    ``("update_user", id, fields)`` (name, password_hash) -> user | None;
    ``("set_role", id, role)`` -> user | None; ``("delete_user", id)`` -> bool (both
    ``("error", "last_admin")`` for the only admin);
    ``("list_users", limit, offset)`` -> (users, total);
    ``("add_refresh", token_hash, user_id, family, expires_at)`` -> "ok";
    ``("use_refresh", token_hash)`` -> ("ok", user_id, family) | ("error", why), marks it
    used (a refresh token works once); using a revoked one revokes its whole family;
    ``("revoke_refresh", token_hash)`` -> bool; ``"schema_version"`` -> int.
    Users are dicts with ``password_hash`` included: callers strip it before answering.
    """

    async def init(self, opts: Dict[str, Any]) -> Any:
        if opts.get("dsn"):
            db: Any = await _Postgres.connect(opts["dsn"])
        else:
            db = _Sqlite(opts.get("sqlite_path", ":memory:"))
        await self._migrate(db)
        return ("ok", db)

    @staticmethod
    async def _migrate(db: Any) -> None:
        await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = await db.fetchone("SELECT max(version) FROM schema_version")
        have = (row[0] if row else None) or 0
        steps = MIGRATIONS[db.dialect]
        for version in range(have + 1, len(steps) + 1):
            await db.script(list(steps[version - 1]) +
                            ["INSERT INTO schema_version (version) VALUES (%d)" % version])
            log.info("migrated %s schema to version %d", db.dialect, version)

    async def handle_call(self, req: Any, from_: Any, db: Any) -> Any:
        return ("reply", await self._do(db, req), db)

    async def _do(self, db: Any, req: Any) -> Any:
        now = time.time()
        match req:
            case ("create_user", email, pw_hash, name, role):
                if await db.fetchone("SELECT 1 FROM users WHERE email = ?", (email,)):
                    return ("error", "email_taken")
                uid = await db.insert(
                    "INSERT INTO users (email, password_hash, name, role, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)", (email, pw_hash, name, role, now, now))
                return await self._user(db, uid)
            case ("user_by_email", email):
                return _user(await db.fetchone(
                    "SELECT %s FROM users WHERE email = ?" % _USER_COLS, (email,)))
            case ("user", uid):
                return await self._user(db, uid)
            case ("update_user", uid, fields):
                for col in ("name", "password_hash"):
                    if col in fields:
                        await db.execute("UPDATE users SET %s = ?, updated_at = ? WHERE id = ?" % col,
                                         (fields[col], now, uid))
                return await self._user(db, uid)
            case ("set_role", uid, role) if role in ROLES:
                if role != "admin" and await self._last_admin(db, uid):
                    return ("error", "last_admin")
                await db.execute("UPDATE users SET role = ?, updated_at = ? WHERE id = ?",
                                 (role, now, uid))
                return await self._user(db, uid)
            case ("delete_user", uid):
                if await self._last_admin(db, uid):
                    return ("error", "last_admin")
                await db.execute("DELETE FROM refresh_tokens WHERE user_id = ?", (uid,))
                return await db.execute("DELETE FROM users WHERE id = ?", (uid,)) > 0
            case ("list_users", limit, offset):
                rows = await db.fetchall("SELECT %s FROM users ORDER BY id LIMIT ? OFFSET ?"
                                         % _USER_COLS, (limit, offset))
                total = (await db.fetchone("SELECT count(*) FROM users"))[0]
                return ([_user(r) for r in rows], total)
            case ("add_refresh", token_hash, uid, family, expires_at):
                await db.execute("INSERT INTO refresh_tokens (token_hash, user_id, family, expires_at)"
                                 " VALUES (?, ?, ?, ?)", (token_hash, uid, family, expires_at))
                return "ok"
            case ("use_refresh", token_hash):
                row = await db.fetchone("SELECT user_id, family, expires_at, revoked"
                                        " FROM refresh_tokens WHERE token_hash = ?", (token_hash,))
                if row is None:
                    return ("error", "unknown")
                uid, family, expires_at, revoked = tuple(row)
                if revoked:
                    # a used or revoked token presented again: treat the family as stolen
                    await db.execute("UPDATE refresh_tokens SET revoked = 1 WHERE family = ?", (family,))
                    return ("error", "revoked")
                await db.execute("UPDATE refresh_tokens SET revoked = 1 WHERE token_hash = ?", (token_hash,))
                if expires_at < now:
                    return ("error", "expired")
                return ("ok", uid, family)
            case ("revoke_refresh", token_hash):
                return await db.execute("UPDATE refresh_tokens SET revoked = 1"
                                        " WHERE token_hash = ? AND revoked = 0", (token_hash,)) > 0
            case "schema_version":
                return (await db.fetchone("SELECT max(version) FROM schema_version"))[0]
        return ("error", ("unknown_request", repr(req)[:100]))

    @staticmethod
    async def _last_admin(db: Any, uid: Any) -> bool:
        """Whether ``uid`` is the only admin (who must not be demoted or deleted: the
        service would have no one left to manage it). Checked inside this process, so
        two concurrent demotions cannot both pass."""
        row = await db.fetchone("SELECT role FROM users WHERE id = ?", (uid,))
        if row is None or tuple(row)[0] != "admin":
            return False
        admins: int = (await db.fetchone("SELECT count(*) FROM users WHERE role = 'admin'"))[0]
        return admins <= 1

    @staticmethod
    async def _user(db: Any, uid: Any) -> Optional[Dict[str, Any]]:
        return _user(await db.fetchone("SELECT %s FROM users WHERE id = ?" % _USER_COLS, (uid,)))

    async def terminate(self, reason: Any, db: Any) -> Any:
        await db.close()
