"""Replies as they cross nodes: a str would arrive as bytes (pyotp's type mapping), so
simple-string and error replies travel tagged."""
from __future__ import annotations

from typing import Any, Tuple

from pyotp import Atom
from pyotp.resp import ErrorReply


def wire(v: Any) -> Any:
    """A reply as it crosses nodes (a str would arrive as bytes)."""
    if isinstance(v, ErrorReply):
        return (Atom("err"), str(v).encode())
    if type(v) is str:
        return (Atom("str"), v.encode())
    return v


def unwire(v: Any) -> Any:
    if type(v) is tuple and len(v) == 2 and isinstance(v[0], str):
        return ErrorReply(v[1].decode()) if v[0] == "err" else v[1].decode()
    return v


def wire_op(op: Tuple[Any, ...]) -> Tuple[Any, ...]:
    return (Atom(op[0]),) + op[1:]
