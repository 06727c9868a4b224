"""Redis's glob patterns (KEYS, SCAN MATCH): ``*``, ``?``, ``[abc]``, ``[^a-z]``, ``\\x``."""
from __future__ import annotations

import re
from typing import Callable, Dict

_cache: Dict[bytes, Callable[[bytes], object]] = {}


def matcher(pat: bytes) -> Callable[[bytes], object]:
    """>>> matcher(b"user:[0-9]*")(b"user:42")
    True
    """
    m = _cache.get(pat)
    if m is not None:
        return m
    if pat == b"*":
        m = lambda k: True  # noqa: E731
    else:
        out, i, n = [], 0, len(pat)
        while i < n:
            c = pat[i:i + 1]
            if c == b"*":
                out.append(b".*")
            elif c == b"?":
                out.append(b".")
            elif c == b"\\" and i + 1 < n:
                i += 1
                out.append(re.escape(pat[i:i + 1]))
            elif c == b"[":
                j = i + 1
                neg = j < n and pat[j:j + 1] == b"^"
                if neg:
                    j += 1
                body = []
                while j < n and pat[j:j + 1] != b"]":
                    if pat[j:j + 1] == b"\\" and j + 1 < n:
                        j += 1
                        body.append(re.escape(pat[j:j + 1]))
                    elif pat[j:j + 1] == b"-" and body and j + 1 < n and pat[j + 1:j + 2] != b"]":
                        body.append(b"-")
                    else:
                        body.append(re.escape(pat[j:j + 1]))
                    j += 1
                out.append(b"[" + (b"^" if neg else b"") + b"".join(body) + b"]" if body else b"(?!)")
                i = j
            else:
                out.append(re.escape(c))
            i += 1
        rx = re.compile(b"".join(out) + b"\\Z", re.S)
        m = lambda k: rx.match(k) is not None  # noqa: E731
    if len(_cache) > 1000:
        _cache.clear()
    _cache[pat] = m
    return m
