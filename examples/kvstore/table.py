"""The data of one node: a dict of keys (bytes) to values (bytes), absolute expiry times
(unix ms, so that every replica agrees on them), a version per key and the append-only
log. Shared by the node's processes the way an ETS table is: it lives in one OS thread, so
reads by connection processes need no message; every write goes through ``apply``.

Versions order the writes to a key across nodes: the primary stamps each write with a
version above the key's current one (and above the clock, in microseconds, so a replica
that takes over keeps counting up), and a replica applies a record only if its version is
newer. Deleted keys keep their version as a tombstone, so a node that was down and
catches up cannot resurrect them; FLUSHDB is one version for all keys (``flush_ver``).
"""
from __future__ import annotations

import os
import random
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

from pyotp.resp import ErrorReply

from . import aof as _aof

OVERHEAD = 64                     # bytes counted per key on top of its key and value
E_INT = ErrorReply("ERR value is not an integer or out of range")
E_OVERFLOW = ErrorReply("ERR increment or decrement would overflow")
E_OOM = ErrorReply("OOM command not allowed when used memory > 'maxmemory'.")
POLICIES = ("noeviction", "allkeys-random")
I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1


def now_ms() -> int:
    return int(time.time() * 1000)


def parse_int(b: bytes) -> Optional[int]:
    """Redis's strict integer syntax (no spaces, no '+', no leading zeros, signed 64-bit)."""
    digits = b[1:] if b[:1] == b"-" else b
    if not digits or len(b) > 20 or not digits.isdigit() or (digits[:1] == b"0" and b != b"0"):
        return None
    v = int(b)
    return v if I64_MIN <= v <= I64_MAX else None


class Table:
    def __init__(self, data_dir: Optional[str] = None, appendfsync: str = "everysec",
                 maxmemory: int = 0, policy: str = "noeviction") -> None:
        self.data: Dict[bytes, bytes] = {}
        self.exp: Dict[bytes, int] = {}
        self.ver: Dict[bytes, int] = {}
        self.flush_ver = 0
        self.last_ver = 0
        self.used = 0
        self.maxmemory = maxmemory
        self.policy = policy
        self.evicted = 0
        self.expired = 0
        self.on_expiry: Any = None          # callback(key, exp_ms): arm a timer
        self.aof: Optional[_aof.Aof] = None
        self.loaded = 0
        if data_dir:
            os.makedirs(data_dir, exist_ok=True)
            path = os.path.join(data_dir, "appendonly.aof")
            for kind, rec in _aof.read_records(path):
                self.loaded += 1
                if kind == "flush":
                    self._flush(rec)        # type: ignore[arg-type]
                else:
                    self._put(*rec)         # type: ignore[misc]
            self.aof = _aof.Aof(path, appendfsync)
            self.aof.rewrite(self.records)

    # ---------------------------------------------------------------- raw state changes
    def _put(self, key: bytes, value: Optional[bytes], exp: int, ver: int) -> bool:
        if ver <= self.ver.get(key, 0) or ver <= self.flush_ver:
            return False
        old = self.data.get(key)
        if old is not None:
            self.used -= len(key) + len(old) + OVERHEAD
        if value is None or (exp and exp <= now_ms()):
            self.data.pop(key, None)
            self.exp.pop(key, None)
        else:
            self.data[key] = value
            self.used += len(key) + len(value) + OVERHEAD
            if exp:
                self.exp[key] = exp
                if self.on_expiry is not None:
                    self.on_expiry(key, exp)
            else:
                self.exp.pop(key, None)
        self.ver[key] = ver
        if ver > self.last_ver:
            self.last_ver = ver
        return True

    def _flush(self, ver: int) -> None:
        if ver > self.flush_ver:
            self.flush_ver = ver
            self.data.clear()
            self.exp.clear()
            self.ver.clear()
            self.used = 0
            self.last_ver = max(self.last_ver, ver)

    def apply(self, rec: _aof.Record) -> bool:
        """Apply a replicated (or local) record if it is newer; log it. True if applied."""
        if self._put(*rec):
            if self.aof is not None:
                self.aof.append(_aof.encode_record(*rec))
            return True
        return False

    def apply_flush(self, ver: int) -> None:
        if ver > self.flush_ver:
            self._flush(ver)
            if self.aof is not None:
                self.aof.append(_aof.encode_flush(ver))

    def next_version(self, key: bytes) -> int:
        v = max(self.ver.get(key, 0), self.flush_ver, self.last_ver) + 1
        t = time.time_ns() // 1000
        return t if t > v else v

    def records(self) -> Iterator[bytes]:
        """The live state as log records (for the rewrite and for a catching-up node)."""
        if self.flush_ver:
            yield _aof.encode_flush(self.flush_ver)
        for k, v in self.ver.items():
            yield _aof.encode_record(k, self.data.get(k), self.exp.get(k, 0), v)

    def dump_for(self, wanted: Any) -> List[_aof.Record]:
        """Records (tombstones included) of the keys ``wanted(key)`` accepts."""
        return [(k, self.data.get(k), self.exp.get(k, 0), v) for k, v in self.ver.items() if wanted(k)]

    # ------------------------------------------------------------------ reads
    def get(self, key: bytes) -> Optional[bytes]:
        v = self.data.get(key)
        if v is not None and key in self.exp and self.exp[key] <= now_ms():
            self.expire_now(key, self.exp[key])
            return None
        return v

    def expire_now(self, key: bytes, exp: int) -> None:
        """Drop ``key`` if it still carries expiry ``exp`` and that has passed. Not logged
        nor replicated: every replica (and a replay) reaches the same verdict from ``exp``."""
        if self.exp.get(key) == exp and exp <= now_ms():
            old = self.data.pop(key, None)
            del self.exp[key]
            if old is not None:
                self.used -= len(key) + len(old) + OVERHEAD
                self.expired += 1

    def ttl_ms(self, key: bytes) -> int:
        if self.get(key) is None:
            return -2
        e = self.exp.get(key)
        return -1 if e is None else max(0, e - now_ms())

    def live_keys(self) -> List[bytes]:
        t = now_ms()
        return [k for k in self.data if not (k in self.exp and self.exp[k] <= t)]

    # ------------------------------------------------------------------ writes
    def room_for(self, extra: int) -> bool:
        """maxmemory: True if ``extra`` more bytes fit (evicting under allkeys-random)."""
        if not self.maxmemory or self.used + extra <= self.maxmemory:
            return True
        if self.policy == "allkeys-random":
            keys = list(self.data)
            random.shuffle(keys)
            for k in keys:
                if self.used + extra <= self.maxmemory:
                    break
                self.apply((k, None, 0, self.next_version(k)))
                self.evicted += 1
        return self.used + extra <= self.maxmemory


def execute_read(t: Table, op: Tuple[Any, ...]) -> Any:
    """A single-key read: ("get", k) | ("exists", k) | ("pttl", k)."""
    name, key = op[0], op[1]
    if name == "get":
        return t.get(key)
    if name == "exists":
        return 0 if t.get(key) is None else 1
    if name == "pttl":
        return t.ttl_ms(key)
    raise ValueError("unknown read op %r" % (name,))


def execute_write(t: Table, op: Tuple[Any, ...]) -> Tuple[Any, Optional[_aof.Record]]:
    """A single-key write on the key's primary: returns (reply, record to replicate)."""
    name, key = op[0], op[1]
    cur = t.get(key)
    if name == "set":               # ("set", k, value, exp_ms | 0 | -1 keepttl, nx, xx, get)
        _, _, value, exp, nx, xx, get = op
        old = cur if get else None
        if (nx and cur is not None) or (xx and cur is None):
            return (old if get else None), None
        if not t.room_for(len(key) + len(value) + OVERHEAD - (len(cur) + len(key) + OVERHEAD if cur else 0)):
            return E_OOM, None
        if exp == -1:
            exp = t.exp.get(key, 0)
        rec = (key, value, exp, t.next_version(key))
        t.apply(rec)
        return (old if get else "OK"), rec
    if name == "del":
        if cur is None:
            return 0, None
        rec = (key, None, 0, t.next_version(key))
        t.apply(rec)
        return 1, rec
    if name == "incrby":
        n = 0
        if cur is not None:
            v = parse_int(cur)
            if v is None:
                return E_INT, None
            n = v
        n += op[2]
        if not I64_MIN <= n <= I64_MAX:
            return E_OVERFLOW, None
        value = b"%d" % n
        if not t.room_for(len(value) + (0 if cur is not None else len(key) + OVERHEAD)):
            return E_OOM, None
        rec = (key, value, t.exp.get(key, 0) if cur is not None else 0, t.next_version(key))
        t.apply(rec)
        return n, rec
    if name == "expire":            # ("expire", k, abs_ms | None for persist)
        if cur is None:
            return 0, None
        at = op[2]
        if at is None:
            if key not in t.exp:
                return 0, None
            rec = (key, cur, 0, t.next_version(key))
        else:
            rec = (key, cur if at > now_ms() else None, at if at > now_ms() else 0, t.next_version(key))
        t.apply(rec)
        return 1, rec
    raise ValueError("unknown write op %r" % (name,))
