"""Operational transformation for plain text, the merge logic of the editor.

An *operation* is a list of primitives applied in order:

* ``["i", pos, text]``: insert ``text`` before character ``pos``;
* ``["d", pos, n]``: delete ``n`` characters starting at ``pos``.

Positions count Unicode code points in Python; the page (``static/editor.js``) has the
same functions over JavaScript strings and only ever sends positions that it computed
on code points too (it converts at the edges), so both sides agree.

``transform(a, b, a_first)`` rewrites two operations made concurrently on the same
text so that each can be applied after the other: ``apply(apply(s, a), b2) ==
apply(apply(s, b), a2)`` where ``a2, b2 = transform(a, b, ...)`` (the TP1 property,
checked by ``tests/apps/test_editor_ot.py`` with hypothesis). ``a_first`` breaks the only tie,
two inserts at the same place; the server and the pages always give the server's
already-applied operation the first place, so they break it the same way.

With one authoritative copy (the document process) TP1 is all that is needed for every
copy to converge: this is the Jupiter / Google Wave / ot.js scheme. The server numbers
each operation it applies (the *revision*); a page sends one operation at a time with
the revision it was made on, and the server transforms it over what was applied since.

>>> a = [["i", 0, "Hi "]]
>>> b = [["d", 0, 1]]
>>> a2, b2 = transform(a, b, True)
>>> apply(apply("xyz", a), b2) == apply(apply("xyz", b), a2) == "Hi yz"
True
"""
from __future__ import annotations

from typing import Any, List, Tuple

Op = List[Any]           # one primitive: ["i", pos, text] or ["d", pos, n]
Ops = List[Op]

__all__ = ["apply", "transform", "validate", "OTError"]


class OTError(ValueError):
    """An operation that is malformed or does not fit the text it is applied to."""


def validate(ops: Any, *, max_ops: int = 1000, max_text: int = 100_000) -> Ops:
    """Check the shape of an operation received from outside and return it.

    >>> validate([["i", 0, "a"], ["d", 3, 2]])
    [['i', 0, 'a'], ['d', 3, 2]]
    >>> try: validate([["x", 0]])
    ... except OTError as e: print(e)
    bad primitive #0: ['x', 0]
    """
    if type(ops) is not list:
        raise OTError("an operation must be a list, got %s" % type(ops).__name__)
    if len(ops) > max_ops:
        raise OTError("operation too long: %d primitives (at most %d)" % (len(ops), max_ops))
    total = 0
    for k, p in enumerate(ops):
        ok = (type(p) is list and len(p) == 3 and type(p[1]) is int and p[1] >= 0
              and ((p[0] == "i" and type(p[2]) is str and p[2] != "")
                   or (p[0] == "d" and type(p[2]) is int and p[2] > 0)))
        if not ok:
            raise OTError("bad primitive #%d: %.80r" % (k, p))
        if p[0] == "i":
            total += len(p[2])
    if total > max_text:
        raise OTError("operation inserts %d characters (at most %d)" % (total, max_text))
    return ops


def apply(text: str, ops: Ops) -> str:
    """The text after ``ops``; raises ``OTError`` if a position is past the end.

    >>> apply("hello", [["d", 0, 1], ["i", 0, "J"]])
    'Jello'
    """
    for p in ops:
        pos = p[1]
        if p[0] == "i":
            if pos > len(text):
                raise OTError("insert at %d past the end (%d)" % (pos, len(text)))
            text = text[:pos] + p[2] + text[pos:]
        else:
            if pos + p[2] > len(text):
                raise OTError("delete of %d..%d past the end (%d)" % (pos, pos + p[2], len(text)))
            text = text[:pos] + text[pos + p[2]:]
    return text


def _t1(a: Op, b: Op, a_first: bool) -> Ops:
    """Primitive ``a`` rewritten to apply after primitive ``b`` (both on the same text)."""
    ka, pa, xa = a
    kb, pb, xb = b
    if ka == "i":
        if kb == "i":
            if pa < pb or (pa == pb and a_first):
                return [a]
            return [["i", pa + len(xb), xa]]
        # b deletes [pb, pb + xb): an insert inside the hole lands where the hole was
        if pa <= pb:
            return [a]
        if pa >= pb + xb:
            return [["i", pa - xb, xa]]
        return [["i", pb, xa]]
    if kb == "i":
        if pb <= pa:
            return [["d", pa + len(xb), xa]]
        if pb >= pa + xa:
            return [a]
        # the insert falls inside our range: delete around it, keep the inserted text
        left = pb - pa
        return [["d", pa, left], ["d", pa + len(xb), xa - left]]
    # two deletes: remove what b already deleted from our range
    ea, eb = pa + xa, pb + xb
    if ea <= pb:
        return [a]
    if pa >= eb:
        return [["d", pa - xb, xa]]
    n = xa - (min(ea, eb) - max(pa, pb))
    return [["d", min(pa, pb), n]] if n > 0 else []


def transform(a: Ops, b: Ops, a_first: bool) -> Tuple[Ops, Ops]:
    """``(a2, b2)``: ``a`` rewritten to follow ``b`` and ``b`` to follow ``a``."""
    if not a or not b:
        return a, b
    if len(a) == 1 and len(b) == 1:
        return _t1(a[0], b[0], a_first), _t1(b[0], a[0], not a_first)
    if len(a) > 1:
        a0, b1 = transform(a[:1], b, a_first)
        ar, b2 = transform(a[1:], b1, a_first)
        return a0 + ar, b2
    a1, b0 = transform(a, b[:1], a_first)
    a2, br = transform(a1, b[1:], a_first)
    return a2, b0 + br


class Client:
    """One editor's copy of the text, as the page keeps it (``static/editor.js`` is the
    same state machine): at most one operation in flight to the server, the local edits
    made meanwhile buffered, and each operation from the server transformed over both.

    >>> c = Client("abc", rev=0)
    >>> c.edit([["i", 3, "!"]])          # the first edit goes out at once
    (0, [['i', 3, '!']])
    >>> c.edit([["i", 0, ">"]]) is None  # the next waits for the ack
    True
    >>> c.remote([["d", 0, 1]])          # someone deleted "a" meanwhile
    >>> c.text, c.rev
    ('>bc!', 1)
    >>> c.ack()                          # the buffered edit goes out now
    (2, [['i', 0, '>']])
    """

    def __init__(self, text: str = "", rev: int = 0) -> None:
        self.text = text
        self.rev = rev
        self.inflight: Ops | None = None
        self.buffer: Ops | None = None

    def edit(self, ops: Ops) -> Tuple[int, Ops] | None:
        """Apply a local edit; returns ``(rev, ops)`` to send, or None while one is in flight."""
        self.text = apply(self.text, ops)
        if self.inflight is None:
            self.inflight = ops
            return (self.rev, ops)
        self.buffer = (self.buffer or []) + ops
        return None

    def ack(self) -> Tuple[int, Ops] | None:
        """The server applied our operation; returns the next one to send, if any."""
        self.rev += 1
        self.inflight, self.buffer = self.buffer, None
        return None if self.inflight is None else (self.rev, self.inflight)

    def remote(self, ops: Ops) -> None:
        """Apply an operation from the server (already applied there, so it goes first)."""
        self.rev += 1
        if self.inflight is not None:
            self.inflight, ops = transform(self.inflight, ops, False)
        if self.buffer is not None:
            self.buffer, ops = transform(self.buffer, ops, False)
        self.text = apply(self.text, ops)


class History:
    """The server side: the text, every applied operation by revision.

    >>> h = History("abc")
    >>> h.receive(0, [["i", 0, "x"]])
    (1, [['i', 0, 'x']])
    >>> h.receive(0, [["i", 3, "y"]])    # made on revision 0: shifted over the "x"
    (2, [['i', 4, 'y']])
    >>> h.text
    'xabcy'
    """

    def __init__(self, text: str = "", rev: int = 0, ops: List[Ops] | None = None) -> None:
        self.text = text
        self.rev = rev
        self.ops: List[Ops] = list(ops or [])   # the last len(ops) operations, up to rev

    def since(self, rev: int) -> List[Ops]:
        """The operations applied after ``rev``; OTError if they are no longer kept."""
        first = self.rev - len(self.ops)
        if rev < first or rev > self.rev:
            raise OTError("revision %d unknown (kept: %d..%d)" % (rev, first, self.rev))
        return self.ops[rev - first:]

    def transformed(self, rev: int, ops: Ops) -> Ops:
        """``ops`` made on revision ``rev``, rewritten to apply to the current text."""
        for h in self.since(rev):
            ops = transform(ops, h, False)[0]
        apply(self.text, ops)           # raises OTError before anything changes
        return ops

    def receive(self, rev: int, ops: Ops) -> Tuple[int, Ops]:
        """Apply an operation made on revision ``rev``; returns (new revision, as applied)."""
        ops = self.transformed(rev, ops)
        self.push(ops)
        return self.rev, ops

    def push(self, ops: Ops, keep: int = 1000) -> None:
        self.text = apply(self.text, ops)
        self.rev += 1
        self.ops.append(ops)
        if len(self.ops) > keep:
            del self.ops[: len(self.ops) - keep]
