"""The Redis serialization protocol (RESP2 and RESP3), compiled (``core/resp.pyx``).

For servers that Redis clients talk to (``examples/kvstore``): ``Parser`` turns the bytes a
client sends into commands (lists of bytes), incrementally and treating the input as
hostile (bounded lengths, nothing allocated from a declared size); ``encode`` turns
replies into RESP2 or RESP3 bytes. A ``ProtocolError`` carries Redis's own error text:
send ``-ERR <text>`` and close the connection.

>>> from pyotp import resp
>>> p = resp.Parser()
>>> p.feed(b"*3\\r\\n$3\\r\\nSET\\r\\n$1\\r\\nk\\r\\n$1\\r\\nv\\r\\n")
[[b'SET', b'k', b'v']]
>>> resp.encode("OK"), resp.encode(None, 3), resp.encode(resp.ErrorReply("ERR no"))
(b'+OK\\r\\n', b'_\\r\\n', b'-ERR no\\r\\n')
"""
from __future__ import annotations

from ._core import (RespErrorReply as ErrorReply, RespParser as Parser,
                    RespProtocolError as ProtocolError, resp_encode as encode,
                    resp_encode_into as encode_into)

__all__ = ["Parser", "ProtocolError", "ErrorReply", "encode", "encode_into"]
