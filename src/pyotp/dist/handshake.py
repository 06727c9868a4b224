"""The distribution handshake (protocol version 6, OTP 23+), as pure functions: building
and parsing the handshake messages, the capability flags, the challenge digest.

The state machine that drives them lives in :mod:`pyotp.dist.connection`. Message order
(each message prefixed by a 2-byte length until the connection is up):

1. initiator -> ``'N'`` flags:64 creation:32 name_len:16 name
2. acceptor -> ``'s'`` status (``ok``, ``ok_simultaneous``, ``nok``, ``not_allowed``, ``alive``)
3. acceptor -> ``'N'`` flags:64 challenge:32 creation:32 name_len:16 name
4. initiator -> ``'r'`` challenge:32 digest:16   (initiator may first send ``'c'`` complement
   if it opened with the old ``'n'`` message)
5. acceptor -> ``'a'`` digest:16

digest = md5(cookie + decimal(challenge)); compared with :func:`hmac.compare_digest`.

>>> digest(1234, "secret") == hashlib.md5(b"secret1234").digest()
True
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass
from typing import Tuple

# -- capability flags (erts/emulator/beam/dist.h) -------------------------------------------
PUBLISHED = 0x1
ATOM_CACHE = 0x2
EXTENDED_REFERENCES = 0x4
DIST_MONITOR = 0x8
FUN_TAGS = 0x10
DIST_MONITOR_NAME = 0x20
HIDDEN_ATOM_CACHE = 0x40
NEW_FUN_TAGS = 0x80
EXTENDED_PIDS_PORTS = 0x100
EXPORT_PTR_TAG = 0x200
BIT_BINARIES = 0x400
NEW_FLOATS = 0x800
UNICODE_IO = 0x1000
DIST_HDR_ATOM_CACHE = 0x2000
SMALL_ATOM_TAGS = 0x4000
UTF8_ATOMS = 0x10000
MAP_TAG = 0x20000
BIG_CREATION = 0x40000
SEND_SENDER = 0x80000
BIG_SEQTRACE_LABELS = 0x100000
EXIT_PAYLOAD = 0x400000
FRAGMENTS = 0x800000
HANDSHAKE_23 = 0x1000000
UNLINK_ID = 0x2000000
MANDATORY_25_DIGEST = 0x4000000
SPAWN = 1 << 32
NAME_ME = 1 << 33
V4_NC = 1 << 34
ALIAS = 1 << 35

PYOTP = 1 << 56
"""pyotp's own flag bit: set by pyotp nodes only (Erlang ignores flag bits it does not
know). When both sides set it, message payloads on that connection use the ETF codec's
python extension for exact ``str`` values (no pickles unless PYOTP_PICKLE is set by both
too). See docs/distribution.md, "Wire extension"."""

PYOTP_PICKLE = 1 << 57
"""Set by a pyotp node started with ``python_payloads``: it accepts pickled Python values
(through its restricted unpickler). Pickles flow on a connection only when both sides set
it; a peer's bit alone never makes this node decode a pickle."""

MANDATORY_25 = (EXTENDED_REFERENCES | FUN_TAGS | NEW_FUN_TAGS | EXTENDED_PIDS_PORTS
                | EXPORT_PTR_TAG | BIT_BINARIES | NEW_FLOATS | UTF8_ATOMS | MAP_TAG
                | BIG_CREATION | HANDSHAKE_23)
"""What OTP 25 requires of a peer (0x1070F94); pyotp requires the same of its peers."""

OUR_FLAGS = (MANDATORY_25 | DIST_MONITOR | DIST_MONITOR_NAME | UNICODE_IO | SMALL_ATOM_TAGS
             | BIG_SEQTRACE_LABELS | EXIT_PAYLOAD | UNLINK_ID | SPAWN | V4_NC | SEND_SENDER
             | ALIAS)
"""The flags pyotp advertises (plus HEADER_FLAGS, PUBLISHED for visible connections and
PYOTP). ALIAS: process aliases (ALIAS_SEND), so call replies go to the caller's alias and
a late one is dropped, as between BEAM nodes. Deliberately absent: NAME_ME."""

HEADER_FLAGS = DIST_HDR_ATOM_CACHE | FRAGMENTS
"""Also advertised, as OTP 25 does by default: with a peer that sets them too, frames
carry a distribution header (131,68; atoms by cache ref from BEAM) and large messages
travel in fragments between the small ones (src/core/dist_header.pyx). Kept apart from
OUR_FLAGS so that a raw test peer offering OUR_FLAGS still gets plain ``'p'`` frames."""

VERSION = 6

STATUSES = ("ok", "ok_simultaneous", "nok", "not_allowed", "alive", "named:")


class HandshakeError(ConnectionError):
    """A handshake failed (wrong cookie, refused, malformed message, missing flags).

    >>> raise HandshakeError("b@host: wrong cookie")
    Traceback (most recent call last):
    HandshakeError: b@host: wrong cookie
    """


def new_challenge() -> int:
    """A random 32-bit challenge (``secrets``, not ``random``).

    >>> 0 <= new_challenge() < 2**32
    True
    """
    return secrets.randbits(32)


def digest(challenge: int, cookie: str) -> bytes:
    """md5(cookie + decimal text of the unsigned 32-bit challenge): 16 bytes.

    >>> len(digest(42, "cookie"))
    16
    """
    return hashlib.md5(cookie.encode("latin-1", "replace") + str(challenge & 0xFFFFFFFF).encode()).digest()


def check_digest(got: bytes, challenge: int, cookie: str) -> bool:
    """Constant-time comparison of a received digest with the expected one.

    >>> check_digest(digest(7, "c"), 7, "c")
    True
    """
    return hmac.compare_digest(bytes(got), digest(challenge, cookie))


def frame2(body: bytes) -> bytes:
    """Prefix a handshake message with its 2-byte length."""
    return struct.pack(">H", len(body)) + body


def send_name(flags: int, creation: int, name: str) -> bytes:
    """The initiator's ``'N'`` message (framed).

    >>> send_name(OUR_FLAGS, 1, "a@h")[:3]      # its length (18), then "N"
    b'\\x00\\x12N'
    """
    nb = name.encode("utf-8")
    return frame2(b"N" + struct.pack(">QIH", flags, creation, len(nb)) + nb)


def send_status(status: str) -> bytes:
    """The acceptor's ``'s'`` status message (framed)."""
    return frame2(b"s" + status.encode("ascii"))


def send_challenge(flags: int, challenge: int, creation: int, name: str) -> bytes:
    """The acceptor's ``'N'`` challenge message (framed)."""
    nb = name.encode("utf-8")
    return frame2(b"N" + struct.pack(">QIIH", flags, challenge, creation, len(nb)) + nb)


def send_challenge_reply(challenge: int, dig: bytes) -> bytes:
    """The initiator's ``'r'`` message (framed)."""
    return frame2(b"r" + struct.pack(">I", challenge) + dig)


def send_challenge_ack(dig: bytes) -> bytes:
    """The acceptor's ``'a'`` message (framed)."""
    return frame2(b"a" + dig)


@dataclass
class NameMsg:
    """A parsed name message: from the initiator (``'N'`` v6 or ``'n'`` v5)."""
    flags: int
    creation: int
    name: str
    version: int


def parse_name(msg: bytes) -> NameMsg:
    """Parse the initiator's ``'N'`` (v6) or ``'n'`` (v5) message (unframed).

    >>> parse_name(send_name(OUR_FLAGS, 9, "a@h")[2:]).name
    'a@h'
    """
    try:
        tag = msg[0]
        if tag == ord("N"):
            flags, creation, nlen = struct.unpack_from(">QIH", msg, 1)
            name = bytes(msg[15:15 + nlen]).decode("utf-8")
            if len(msg) < 15 + nlen:
                raise HandshakeError("truncated name message")
            return NameMsg(flags, creation, name, 6)
        if tag == ord("n"):
            version, flags = struct.unpack_from(">HI", msg, 1)
            name = bytes(msg[7:]).decode("utf-8")
            if version < 5:
                raise HandshakeError("peer speaks distribution version %d (5 or 6 required)" % version)
            return NameMsg(flags, 0, name, 5)
    except (struct.error, IndexError, UnicodeDecodeError) as e:
        raise HandshakeError("malformed name message: %s" % e) from None
    raise HandshakeError("expected a name message ('N' or 'n'), got tag %r" % msg[:1])


@dataclass
class ChallengeMsg:
    """A parsed acceptor challenge (``'N'`` v6 or ``'n'`` v5)."""
    flags: int
    challenge: int
    creation: int
    name: str


def parse_challenge(msg: bytes) -> ChallengeMsg:
    """Parse the acceptor's challenge (unframed).

    >>> parse_challenge(send_challenge(OUR_FLAGS, 5, 6, "b@h")[2:]).challenge
    5
    """
    try:
        tag = msg[0]
        if tag == ord("N"):
            flags, challenge, creation, nlen = struct.unpack_from(">QIIH", msg, 1)
            name = bytes(msg[19:19 + nlen]).decode("utf-8")
            return ChallengeMsg(flags, challenge, creation, name)
        if tag == ord("n"):
            _version, flags, challenge = struct.unpack_from(">HII", msg, 1)
            return ChallengeMsg(flags, challenge, 0, bytes(msg[11:]).decode("utf-8"))
    except (struct.error, IndexError, UnicodeDecodeError) as e:
        raise HandshakeError("malformed challenge message: %s" % e) from None
    raise HandshakeError("expected a challenge message ('N'), got tag %r" % msg[:1])


def parse_challenge_reply(msg: bytes) -> Tuple[int, bytes]:
    """Parse ``'r'``: (peer challenge, digest)."""
    if len(msg) != 21 or msg[0] != ord("r"):
        raise HandshakeError("malformed challenge reply (%d bytes, tag %r)" % (len(msg), msg[:1]))
    return struct.unpack_from(">I", msg, 1)[0], bytes(msg[5:21])


def parse_complement(msg: bytes) -> Tuple[int, int]:
    """Parse ``'c'`` (flags high 32 bits, creation), sent by initiators that began with 'n'."""
    if len(msg) != 9 or msg[0] != ord("c"):
        raise HandshakeError("malformed complement message")
    hi, creation = struct.unpack_from(">II", msg, 1)
    return hi, creation


def missing_mandatory(flags: int) -> int:
    """The mandatory flags a peer did not offer (0 when it is acceptable).

    >>> missing_mandatory(OUR_FLAGS)
    0
    """
    return MANDATORY_25 & ~flags
