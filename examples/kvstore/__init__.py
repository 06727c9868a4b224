"""A Redis-compatible distributed key-value store on pyotp (docs/kvstore.md).

``python -m examples.kvstore --port 6379 [--nodes N] [--data DIR]``; any Redis client
(redis-cli, redis-benchmark, redis-py) talks to it.
"""
