"""``python -m examples.user_service [--port PORT] [--db FILE | --dsn DSN]``"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

try:
    import pyotp  # noqa: F401
except ImportError:  # a source checkout without pyotp installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from .app import Config, serve


def main(argv: "list[str] | None" = None) -> int:
    p = argparse.ArgumentParser(prog="python -m examples.user_service",
                                description="pyotp user service (HTTP JSON API)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0: any free port")
    p.add_argument("--db", default="user_service.db", help="SQLite file (default %(default)s)")
    p.add_argument("--dsn", default=os.environ.get("USER_SERVICE_DSN"),
                   help="PostgreSQL DSN (postgresql://...): used instead of SQLite")
    p.add_argument("--admin-email", default=os.environ.get("USER_SERVICE_ADMIN_EMAIL"))
    p.add_argument("--admin-password", default=os.environ.get("USER_SERVICE_ADMIN_PASSWORD"))
    p.add_argument("--argon2-time-cost", type=int, default=3)
    p.add_argument("--argon2-memory-cost", type=int, default=64 * 1024, help="KiB")
    p.add_argument("--log-level", default="INFO")
    a = p.parse_args(argv)
    logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = Config(host=a.host, port=a.port, db=a.db, dsn=a.dsn, admin_email=a.admin_email,
                 admin_password=a.admin_password, argon2_time_cost=a.argon2_time_cost,
                 argon2_memory_cost=a.argon2_memory_cost)

    def ready(port: int) -> None:
        print("user service listening on http://%s:%d" % (cfg.host, port), flush=True)

    try:
        import uvloop  # the faster event loop, when installed
        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    try:
        how = loop.run_until_complete(serve(cfg, on_ready=ready))
    finally:
        loop.close()
    print("stopped (%s)" % how, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
