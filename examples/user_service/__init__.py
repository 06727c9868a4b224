"""A user service with authentication and authorization on pyotp: an HTTP JSON API
(Starlette on uvicorn, in the node's loop), argon2 passwords, JWT access tokens and
revocable refresh tokens, roles, login rate limiting as processes, SQLite or
PostgreSQL storage owned by a supervised process. See docs/user_service.md.

    python -m examples.user_service --port 8000
"""
from .app import Config, ServiceThread, UserService, create_app, serve
from .ratelimit import Policy

__all__ = ["Config", "Policy", "ServiceThread", "UserService", "create_app", "serve"]
