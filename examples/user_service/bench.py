"""A load run: N concurrent logins against a running user service.

    python -m examples.user_service.bench                 # starts its own service (cheap argon2)
    python -m examples.user_service.bench --url http://127.0.0.1:8000 --n 1000

Registers ``accounts`` users, then fires ``n`` logins at once (each on its own
connection, all in flight together) and prints requests/s and latency percentiles.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple
from urllib.parse import urlsplit

try:
    import pyotp  # noqa: F401
except ImportError:  # a source checkout without pyotp installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))


async def post_json(host: str, port: int, path: str, payload: Any) -> Tuple[int, Any]:
    """One ``POST`` on a fresh connection (HTTP/1.1, ``Connection: close``), on asyncio
    streams: a client light enough that the load run measures the server, not the
    client (httpx spends more CPU per request than the server does)."""
    body = json.dumps(payload).encode()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n"
                     % (path.encode(), host.encode(), port, len(body)) + body)
        data = await reader.read()
    finally:
        writer.close()
    head, _, raw = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), (json.loads(raw) if raw else None)


async def login_run(url: str, n: int = 1000, accounts: int = 50,
                    password: str = "bench-password") -> Dict[str, Any]:
    """Register ``accounts`` users (ignoring ones that exist), then ``n`` concurrent
    logins spread over them, each on its own connection. Returns ``{"n", "errors",
    "seconds", "rps", "p50_ms", "p99_ms", "statuses"}`` (``errors``: requests that
    failed or did not answer 200 with a token)."""
    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    emails = ["bench%d@example.com" % i for i in range(accounts)]
    for e in emails:
        status, body = await post_json(host, port, "/auth/register", {"email": e, "password": password})
        if status not in (201, 409):
            raise RuntimeError("register %s: %d %s" % (e, status, body))
    latencies: List[float] = []
    statuses: Dict[Any, int] = {}

    async def one(i: int) -> None:
        t0 = time.perf_counter()
        status: Any
        try:
            status, body = await post_json(host, port, "/auth/login",
                                           {"email": emails[i % accounts], "password": password})
            if status == 200 and not (isinstance(body, dict) and "access_token" in body):
                status = "no_token"
        except Exception as e:       # counted as an error, reported by type
            status = type(e).__name__
        latencies.append(time.perf_counter() - t0)
        statuses[status] = statuses.get(status, 0) + 1

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    seconds = time.perf_counter() - start
    latencies.sort()
    return {"n": n, "errors": n - statuses.get(200, 0), "seconds": seconds, "rps": n / seconds,
            "p50_ms": 1000 * latencies[len(latencies) // 2],
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            "statuses": statuses}


def report(r: Dict[str, Any]) -> str:
    return ("%d concurrent logins in %.2f s: %.0f requests/s, p50 %.1f ms, p99 %.1f ms, %d errors %s"
            % (r["n"], r["seconds"], r["rps"], r["p50_ms"], r["p99_ms"], r["errors"], r["statuses"]))


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m examples.user_service.bench")
    p.add_argument("--url", help="a running service (default: start one with cheap argon2)")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--accounts", type=int, default=50)
    a = p.parse_args()
    if a.url:
        r = asyncio.run(login_run(a.url, a.n, a.accounts))
    else:
        from .app import Config, ServiceThread
        cfg = Config(port=0, db=":memory:", argon2_time_cost=1, argon2_memory_cost=8,
                     ip_policy=_no_ip_limit())
        with ServiceThread(cfg) as svc:
            r = asyncio.run(login_run(svc.url, a.n, a.accounts))
    print(report(r))
    return 1 if r["errors"] else 0


def _no_ip_limit() -> Any:
    from .ratelimit import Policy
    return Policy(10 ** 9, 1.0, 1.0)


if __name__ == "__main__":
    sys.exit(main())
