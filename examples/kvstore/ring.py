"""Consistent hashing: each member node owns ``VNODES`` points on a 64-bit ring; a key's
preference list is the first ``rf`` distinct nodes met walking clockwise from the key's
hash. Adding or removing a node moves only the keys next to its points."""
from __future__ import annotations

import bisect
import hashlib
from typing import Dict, Iterable, List, Tuple

VNODES = 64


def khash(key: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")


class Ring:
    """>>> r = Ring(["a@h", "b@h", "c@h"], 2); len(r.preference(b"k"))
    2
    """

    def __init__(self, nodes: Iterable[str], rf: int) -> None:
        self.nodes = sorted(set(nodes))
        self.rf = max(1, min(rf, len(self.nodes)))
        pts: List[Tuple[int, str]] = []
        for n in self.nodes:
            for i in range(VNODES):
                pts.append((khash(("%s#%d" % (n, i)).encode()), n))
        pts.sort()
        self._points = [p for p, _ in pts]
        self._owners = [o for _, o in pts]
        self._cache: Dict[bytes, Tuple[str, ...]] = {}

    def preference(self, key: bytes) -> Tuple[str, ...]:
        got = self._cache.get(key)
        if got is not None:
            return got
        out: List[str] = []
        if self.nodes:
            i = bisect.bisect_left(self._points, khash(key)) % len(self._points)
            while len(out) < self.rf:
                o = self._owners[i]
                if o not in out:
                    out.append(o)
                i = (i + 1) % len(self._points)
        res = tuple(out)
        if len(self._cache) > 100000:
            self._cache.clear()
        self._cache[key] = res
        return res
