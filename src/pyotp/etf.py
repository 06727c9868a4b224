"""Erlang External Term Format: the codec pyotp's distribution uses, for direct use too.

The codec is compiled (``src/core/etf.pyx`` inside ``pyotp._core``); this module only
re-exports it. The type mapping and the ``python=True`` extension are documented in
``docs/etf.md``.

>>> from pyotp.etf import term_to_binary, binary_to_term, Atom
>>> binary_to_term(term_to_binary((Atom("ok"), [1, 2], b"bin")))
(Atom('ok'), [1, 2], b'bin')
"""
from pyotp._core import (
    ETF_MAX_DEPTH,
    PYOTP_EXT_MARKER,
    Atom,
    BitString,
    DecodeError,
    ExportFun,
    ImproperList,
    ListKey,
    MapKey,
    OpaqueFun,
    Pid,
    Port,
    Reference,
    binary_to_term,
    decode_term,
    decode_with_version,
    encode_term_into,
    term_to_binary,
    term_to_iovec,
)

__all__ = [
    "ETF_MAX_DEPTH",
    "PYOTP_EXT_MARKER",
    "Atom",
    "BitString",
    "DecodeError",
    "ExportFun",
    "ImproperList",
    "ListKey",
    "MapKey",
    "OpaqueFun",
    "Pid",
    "Port",
    "Reference",
    "binary_to_term",
    "decode_term",
    "decode_with_version",
    "encode_term_into",
    "term_to_binary",
    "term_to_iovec",
]
