"""Passwords and tokens.

* Passwords: argon2id (``argon2-cffi``), parameters from the config (tests use cheap
  ones). Hashing and verifying run on a worker thread (argon2 releases the GIL), so a
  login never stalls the node's event loop. A password is never logged or stored.
* Access tokens: JWT (HS256, PyJWT) with ``sub`` (user id), ``role``, ``iat``, ``exp``,
  ``typ = "access"``; checked for signature, expiry and type on every request.
* Refresh tokens: 32 random bytes, stored only as their SHA-256, single use (each
  refresh rotates them); presenting a used one revokes its whole family (a stolen token
  and its legitimate twin cannot both live on); logout revokes one.

>>> hasher = Hasher(time_cost=1, memory_cost=8, parallelism=1)
>>> h = await hasher.hash("correct horse")
>>> await hasher.verify(h, "correct horse")
True
"""
from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from typing import Any, Dict

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from .web import ApiError


class Hasher:
    """argon2id with the given cost (``memory_cost`` in KiB)."""

    def __init__(self, time_cost: int, memory_cost: int, parallelism: int) -> None:
        self.ph = PasswordHasher(time_cost=time_cost, memory_cost=memory_cost,
                                 parallelism=parallelism)
        # verified against when the account does not exist, so that an unknown email
        # costs as much time as a wrong password (no account enumeration by timing)
        self.dummy = self.ph.hash(secrets.token_hex(16))

    async def hash(self, password: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(None, self.ph.hash, password)

    async def verify(self, pw_hash: str, password: str) -> bool:
        def check() -> bool:
            try:
                return self.ph.verify(pw_hash, password)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False
        return await asyncio.get_running_loop().run_in_executor(None, check)


class Tokens:
    """Issues and checks tokens with ``secret`` (HS256)."""

    ALG = "HS256"

    def __init__(self, secret: str, access_ttl: float, refresh_ttl: float) -> None:
        self.secret, self.access_ttl, self.refresh_ttl = secret, access_ttl, refresh_ttl

    def access(self, user: Dict[str, Any], now: float) -> str:
        claims = {"sub": str(user["id"]), "role": user["role"], "iat": int(now),
                  "exp": int(now + self.access_ttl), "typ": "access",
                  "jti": secrets.token_hex(8)}
        return jwt.encode(claims, self.secret, algorithm=self.ALG)

    def check_access(self, token: str) -> Dict[str, Any]:
        """The claims of a valid access token, else ApiError 401."""
        try:
            claims = jwt.decode(token, self.secret, algorithms=[self.ALG],
                                options={"require": ["sub", "exp", "iat", "typ"]})
        except jwt.ExpiredSignatureError:
            raise _unauthorized("token_expired", "the access token has expired")
        except jwt.InvalidTokenError:
            raise _unauthorized("invalid_token", "the access token is invalid")
        if claims.get("typ") != "access" or not str(claims["sub"]).isdigit():
            raise _unauthorized("invalid_token", "the access token is invalid")
        return claims

    @staticmethod
    def new_refresh() -> str:
        return secrets.token_urlsafe(32)

    @staticmethod
    def digest(refresh_token: str) -> str:
        return hashlib.sha256(refresh_token.encode()).hexdigest()

    def refresh_expiry(self) -> float:
        return time.time() + self.refresh_ttl


def _unauthorized(code: str, message: str) -> ApiError:
    return ApiError(401, code, message, {"WWW-Authenticate": 'Bearer error="invalid_token"'})
