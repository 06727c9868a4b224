"""The append-only log of one node (``<data>/appendonly.aof``), as Redis's AOF.

Record: ``b"K"`` + u32 payload length + u32 crc32(payload) + payload, payload being
key length (u32), key, flags (u8: 1 = has a value), value length (u32), value, expiry
(i64 unix ms, 0 = none) and version (i64); a FLUSHDB is ``b"F"`` + u32 8 + crc + version.
Records are written with one ``os.write`` each, so a SIGKILLed node loses nothing the
kernel got; ``appendfsync`` says when the file is fsynced: ``always`` (before the write
is acknowledged), ``everysec`` (a one-second pyotp timer, the default) or ``no``.

Replay stops at the first record that is incomplete or fails its checksum: that is the
write a crash cut short. It is logged (a notice, not an error), the file is truncated to
the last good record, and the node starts. After replay the log is rewritten compactly
(the live state only), as Redis's BGREWRITEAOF.
"""
from __future__ import annotations

import logging
import os
import struct
import zlib
from typing import Callable, Iterator, Optional, Tuple

_log = logging.getLogger("examples.kvstore")

_HDR = struct.Struct("<cII")
_KEYLEN = struct.Struct("<I")
_TAIL = struct.Struct("<Bqq")
_I64 = struct.Struct("<q")
POLICIES = ("always", "everysec", "no")

Record = Tuple[bytes, Optional[bytes], int, int]     # key, value (None: deleted), exp ms, version


def encode_record(key: bytes, value: Optional[bytes], exp: int, ver: int) -> bytes:
    payload = b"".join((_KEYLEN.pack(len(key)), key,
                        _TAIL.pack(1 if value is not None else 0, exp, ver),
                        _KEYLEN.pack(len(value) if value is not None else 0), value or b""))
    return _HDR.pack(b"K", len(payload), zlib.crc32(payload)) + payload


def encode_flush(ver: int) -> bytes:
    payload = _I64.pack(ver)
    return _HDR.pack(b"F", len(payload), zlib.crc32(payload)) + payload


def _decode(kind: bytes, payload: bytes) -> Tuple[str, object]:
    if kind == b"F":
        return "flush", _I64.unpack(payload)[0]
    (klen,) = _KEYLEN.unpack_from(payload, 0)
    key = payload[4:4 + klen]
    has, exp, ver = _TAIL.unpack_from(payload, 4 + klen)
    off = 4 + klen + _TAIL.size
    (vlen,) = _KEYLEN.unpack_from(payload, off)
    value = payload[off + 4:off + 4 + vlen] if has else None
    if off + 4 + vlen != len(payload):
        raise ValueError("record length mismatch")
    return "put", (key, value, exp, ver)


def read_records(path: str) -> Iterator[Tuple[str, object]]:
    """Yield ("put", Record) and ("flush", version) from ``path``; a damaged tail is logged
    and cut off (the file is truncated to its last good record)."""
    if not os.path.exists(path):
        return
    with open(path, "rb") as f:
        data = f.read()
    pos, n = 0, len(data)
    while pos < n:
        bad = None
        if n - pos < _HDR.size:
            bad = "an incomplete record header"
        else:
            kind, length, crc = _HDR.unpack_from(data, pos)
            if kind not in (b"K", b"F"):
                bad = "an unknown record type"
            elif n - pos - _HDR.size < length:
                bad = "an incomplete record (%d of %d bytes)" % (n - pos - _HDR.size, length)
            else:
                payload = data[pos + _HDR.size:pos + _HDR.size + length]
                if zlib.crc32(payload) != crc:
                    bad = "a record with a bad checksum"
                else:
                    try:
                        rec = _decode(kind, payload)
                    except (struct.error, ValueError):
                        bad = "a malformed record"
        if bad is not None:
            _log.warning("kvstore: %s ends with %s at byte %d (a write cut short by a crash); "
                         "ignoring the last %d bytes", path, bad, pos, n - pos)
            with open(path, "r+b") as f:
                f.truncate(pos)
            return
        yield rec
        pos += _HDR.size + length


class Aof:
    """The open log. ``append`` writes one record (and fsyncs under ``always``)."""

    def __init__(self, path: str, fsync: str = "everysec") -> None:
        if fsync not in POLICIES:
            raise ValueError("appendfsync must be one of %s, got %r" % ("/".join(POLICIES), fsync))
        self.path = path
        self.fsync = fsync
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.dirty = False

    def append(self, rec: bytes) -> None:
        os.write(self.fd, rec)
        if self.fsync == "always":
            os.fsync(self.fd)
        else:
            self.dirty = True

    def sync(self) -> None:
        """The everysec tick: fsync if anything was written since the last one."""
        if self.dirty:
            self.dirty = False
            os.fsync(self.fd)

    def rewrite(self, records: Callable[[], Iterator[bytes]]) -> None:
        """Replace the log by ``records()`` (the live state), atomically (rename)."""
        tmp = self.path + ".rewrite"
        with open(tmp, "wb") as f:
            for r in records():
                f.write(r)
            f.flush()
            os.fsync(f.fileno())
        os.close(self.fd)
        os.replace(tmp, self.path)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def close(self) -> None:
        if self.fd >= 0:
            try:
                os.fsync(self.fd)
            finally:
                os.close(self.fd)
                self.fd = -1
