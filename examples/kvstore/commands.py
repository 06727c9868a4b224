"""The command table: name -> (arity, handler), with Redis's arity convention (n: exactly
n words with the name; -n: at least n). A handler gets the connection and the arguments
and returns either a reply (answered at once) or a ``Plan``: single-key operations the
connection routes to the nodes holding the keys (``("r", op)`` reads, ``("w", op)``
writes, ``("a", op)`` for every live node) and a function that combines their replies.
Errors use Redis's exact wording (tests compare them with a real redis-server).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from pyotp.resp import ErrorReply

from .table import E_INT, now_ms, parse_int

VERSION = b"7.0.0"
E_SYNTAX = ErrorReply("ERR syntax error")


class Plan:
    __slots__ = ("ops", "combine")

    def __init__(self, ops: List[Tuple[str, Tuple[Any, ...]]], combine: Optional[Callable[[List[Any]], Any]] = None):
        self.ops = ops
        self.combine = combine


def _first(parts: List[Any]) -> Any:
    return parts[0]


def _sum(parts: List[Any]) -> Any:
    for p in parts:
        if isinstance(p, ErrorReply):
            return p
    return sum(parts)


def _all_ok(parts: List[Any]) -> Any:
    for p in parts:
        if isinstance(p, ErrorReply):
            return p
    return "OK"


def _err_or(parts: List[Any], f: Callable[[List[Any]], Any]) -> Any:
    for p in parts:
        if isinstance(p, ErrorReply):
            return p
    return f(parts)


def arity_error(name: str) -> ErrorReply:
    return ErrorReply("ERR wrong number of arguments for '%s' command" % name)


def unknown_command(args: Sequence[bytes]) -> ErrorReply:
    rest = ""
    for a in args[1:]:
        if len(rest) >= 128:
            break
        rest += "'%s' " % a.decode("utf-8", "replace")[:128 - len(rest)]
    return ErrorReply("ERR unknown command '%s', with args beginning with: %s"
                      % (args[0].decode("utf-8", "replace")[:128], rest))


# ------------------------------------------------------------------------- strings

def c_get(conn: Any, a: List[bytes]) -> Any:
    return Plan([("r", ("get", a[1]))])


def _parse_set(a: List[bytes], start: int) -> Any:
    exp, nx, xx, get, i = 0, False, False, False, start
    seen_exp = False
    while i < len(a):
        o = a[i].upper()
        if o in (b"EX", b"PX", b"EXAT", b"PXAT") and i + 1 < len(a) and not seen_exp:
            n = parse_int(a[i + 1])
            if n is None:
                return E_INT
            if n <= 0:
                return ErrorReply("ERR invalid expire time in 'set' command")
            exp = {b"EX": now_ms() + n * 1000, b"PX": now_ms() + n, b"EXAT": n * 1000, b"PXAT": n}[o]
            seen_exp = True
            i += 2
            continue
        if o == b"NX" and not xx:
            nx = True
        elif o == b"XX" and not nx:
            xx = True
        elif o == b"GET":
            get = True
        elif o == b"KEEPTTL" and not seen_exp:
            exp, seen_exp = -1, True
        else:
            return E_SYNTAX
        i += 1
    return exp, nx, xx, get


def c_set(conn: Any, a: List[bytes]) -> Any:
    opts = _parse_set(a, 3)
    if isinstance(opts, ErrorReply):
        return opts
    exp, nx, xx, get = opts
    return Plan([("w", ("set", a[1], a[2], exp, nx, xx, get))])


def c_setnx(conn: Any, a: List[bytes]) -> Any:
    return Plan([("w", ("set", a[1], a[2], 0, True, False, False))], lambda p: _err_or(p, lambda q: 1 if q[0] == "OK" else 0))


def _setex(unit: int, cmd: str) -> Callable[[Any, List[bytes]], Any]:
    def c(conn: Any, a: List[bytes]) -> Any:
        n = parse_int(a[2])
        if n is None:
            return E_INT
        if n <= 0:
            return ErrorReply("ERR invalid expire time in '%s' command" % cmd)
        return Plan([("w", ("set", a[1], a[3], now_ms() + n * unit, False, False, False))])
    return c


def c_getset(conn: Any, a: List[bytes]) -> Any:
    return Plan([("w", ("set", a[1], a[2], 0, False, False, True))])


def c_strlen(conn: Any, a: List[bytes]) -> Any:
    return Plan([("r", ("get", a[1]))], lambda p: p[0] if isinstance(p[0], ErrorReply) else len(p[0] or b""))


def c_del(conn: Any, a: List[bytes]) -> Any:
    return Plan([("w", ("del", k)) for k in a[1:]], _sum)


def c_exists(conn: Any, a: List[bytes]) -> Any:
    return Plan([("r", ("exists", k)) for k in a[1:]], _sum)


def _incr(sign: int, fixed: Optional[int]) -> Callable[[Any, List[bytes]], Any]:
    def c(conn: Any, a: List[bytes]) -> Any:
        n = fixed if fixed is not None else parse_int(a[2])
        if n is None:
            return E_INT
        if sign < 0 and n == -(1 << 63):
            return ErrorReply("ERR decrement would overflow")
        return Plan([("w", ("incrby", a[1], sign * n))])
    return c


def c_mget(conn: Any, a: List[bytes]) -> Any:
    return Plan([("r", ("get", k)) for k in a[1:]], lambda p: [None if isinstance(x, ErrorReply) else x for x in p])


def c_mset(conn: Any, a: List[bytes]) -> Any:
    if len(a) % 2 == 0:
        return arity_error("mset")
    return Plan([("w", ("set", a[i], a[i + 1], 0, False, False, False)) for i in range(1, len(a), 2)], _all_ok)


# ------------------------------------------------------------------------- expiry

def _expire(unit: int, absolute: bool, cmd: str) -> Callable[[Any, List[bytes]], Any]:
    def c(conn: Any, a: List[bytes]) -> Any:
        n = parse_int(a[2])
        if n is None:
            return E_INT
        if len(a) > 3:
            return ErrorReply("ERR Unsupported option %s" % a[3].decode("utf-8", "replace"))
        at = n * unit if absolute else now_ms() + n * unit
        return Plan([("w", ("expire", a[1], at))])
    return c


def c_persist(conn: Any, a: List[bytes]) -> Any:
    return Plan([("w", ("expire", a[1], None))])


def c_pttl(conn: Any, a: List[bytes]) -> Any:
    return Plan([("r", ("pttl", a[1]))])


def c_ttl(conn: Any, a: List[bytes]) -> Any:
    return Plan([("r", ("pttl", a[1]))], lambda p: p[0] if isinstance(p[0], ErrorReply) or p[0] < 0 else (p[0] + 500) // 1000)


# ------------------------------------------------------------------------- key space

def _union(parts: List[Any]) -> Any:
    return _err_or(parts, lambda ps: sorted(set().union(*ps)))


def c_keys(conn: Any, a: List[bytes]) -> Any:
    return Plan([("a", ("keys", a[1]))], _union)


def c_dbsize(conn: Any, a: List[bytes]) -> Any:
    return Plan([("a", ("keys", b"*"))], lambda p: _err_or(p, lambda ps: len(set().union(*ps))))


def c_scan(conn: Any, a: List[bytes]) -> Any:
    from .ring import khash
    cursor = parse_int(a[1])
    if cursor is None or cursor < 0:
        return ErrorReply("ERR invalid cursor")
    pat: Optional[bytes] = b"*"
    count, i = 10, 2
    while i < len(a):
        o = a[i].upper()
        if o == b"MATCH" and i + 1 < len(a):
            pat = a[i + 1]
        elif o == b"COUNT" and i + 1 < len(a):
            c = parse_int(a[i + 1])
            if c is None:
                return E_INT
            if c < 1:
                return E_SYNTAX
            count = c
        elif o == b"TYPE" and i + 1 < len(a):
            if a[i + 1].lower() != b"string":
                pat = None       # only strings live here
        else:
            return E_SYNTAX
        i += 2

    def page(parts: List[Any]) -> Any:
        # Cursor = position in hash order, so keys present for the whole scan are returned
        # at least once however the key space changes between calls (Redis's guarantee).
        from .glob import matcher
        for x in parts:
            if isinstance(x, ErrorReply):
                return x
        keyed = sorted(((khash(k) >> 1) + 1, k) for k in set().union(*parts))
        lo, hi = 0, len(keyed)
        while lo < hi:
            mid = (lo + hi) // 2
            if keyed[mid][0] < cursor:
                lo = mid + 1
            else:
                hi = mid
        batch = keyed[lo:lo + count]
        nxt = keyed[lo + count][0] if lo + count < len(keyed) else 0
        m = matcher(pat) if pat is not None else (lambda k: False)
        return [b"%d" % nxt, [k for _, k in batch if m(k)]]
    return Plan([("a", ("keys", b"*"))], page)


def c_flushdb(conn: Any, a: List[bytes]) -> Any:
    if len(a) > 2 or (len(a) == 2 and a[1].upper() not in (b"SYNC", b"ASYNC")):
        return E_SYNTAX
    return Plan([("a", ("flush", conn.cluster.table.next_version(b"")))], _all_ok)


# ------------------------------------------------------------------------- connection

def c_ping(conn: Any, a: List[bytes]) -> Any:
    if len(a) > 2:
        return arity_error("ping")
    return a[1] if len(a) == 2 else "PONG"


def c_echo(conn: Any, a: List[bytes]) -> Any:
    return a[1]


def c_quit(conn: Any, a: List[bytes]) -> Any:
    conn.closing = True
    return "OK"


def c_select(conn: Any, a: List[bytes]) -> Any:
    n = parse_int(a[1])
    if n is None:
        return E_INT
    return "OK" if n == 0 else ErrorReply("ERR DB index is out of range")


def hello_map(conn: Any) -> Dict[bytes, Any]:
    return {b"server": b"redis", b"version": VERSION, b"proto": conn.proto, b"id": conn.id,
            b"mode": b"standalone", b"role": b"master", b"modules": []}


def c_hello(conn: Any, a: List[bytes]) -> Any:
    i = 1
    if len(a) > 1:
        v = parse_int(a[1])
        if v is None:
            return ErrorReply("ERR Protocol version is not an integer or out of range")
        if v not in (2, 3):
            return ErrorReply("NOPROTO unsupported protocol version")
        i = 2
        proto = v
    else:
        proto = conn.proto
    name = None
    while i < len(a):
        o = a[i].upper()
        if o == b"SETNAME" and i + 1 < len(a):
            name = a[i + 1]
            if b" " in name or b"\n" in name:
                return ErrorReply("ERR Client names cannot contain spaces, newlines or special characters.")
            i += 2
        elif o == b"AUTH" and i + 2 < len(a):
            if a[i + 1] != b"default":
                return ErrorReply("WRONGPASS invalid username-password pair or user is disabled.")
            i += 3            # no passwords configured: the default user accepts any
        else:
            return ErrorReply("ERR Syntax error in HELLO option '%s'" % a[i].decode("utf-8", "replace"))
    conn.proto = proto
    if name is not None:
        conn.name = name
    conn.published()
    return hello_map(conn)


def c_client(conn: Any, a: List[bytes]) -> Any:
    sub = a[1].upper()
    if sub == b"SETNAME":
        if len(a) != 3:
            return arity_error("client|setname")
        if any(c <= 32 or c > 126 for c in a[2]):
            return ErrorReply("ERR Client names cannot contain spaces, newlines or special characters.")
        conn.name = a[2]
        conn.published()
        return "OK"
    if sub == b"GETNAME":
        return conn.name
    if sub == b"ID":
        return conn.id
    if sub == b"SETINFO":
        return "OK" if len(a) == 4 else arity_error("client|setinfo")
    if sub == b"INFO":
        return client_line(conn.id, conn.addr, conn.name, conn.proto)
    if sub == b"LIST":
        from pyotp import Registry
        return b"".join(client_line(k, *v) for k, _, v in sorted(Registry.select(CLIENTS), key=lambda e: e[0]))
    if sub == b"KILL":
        # CLIENT KILL ID <id>: the connection's process is found in the registry and told
        # to close (a message, not an exit signal, so it closes its socket on the way out)
        if len(a) != 4 or a[2].upper() != b"ID":
            return E_SYNTAX
        n = parse_int(a[3])
        if n is None:
            return E_INT
        from pyotp import Atom, Registry, send
        killed = 0
        for pid, _ in Registry.lookup(CLIENTS, n):
            send(pid, (Atom("client_kill"),))
            killed += 1
        return killed
    return ErrorReply("ERR unknown subcommand '%s'. Try CLIENT HELP." % a[1].decode("utf-8", "replace"))


CLIENTS = "kvstore.clients"          # Registry of the connection processes: id -> (addr, name, proto)


def client_line(cid: int, addr: bytes, name: Any, proto: int) -> bytes:
    return b"id=%d addr=%s name=%s resp=%d\n" % (cid, addr, name or b"", proto)


def c_command(conn: Any, a: List[bytes]) -> Any:
    if len(a) > 1 and a[1].upper() == b"COUNT":
        return len(COMMANDS) // 2
    return []


def c_config(conn: Any, a: List[bytes]) -> Any:
    sub = a[1].upper()
    cfg = conn.cluster.config()
    if sub == b"GET":
        if len(a) < 3:
            return arity_error("config|get")
        from .glob import matcher
        out: Dict[bytes, bytes] = {}
        for p in a[2:]:
            m = matcher(p.lower())
            out.update((k, v) for k, v in cfg.items() if m(k))
        return out
    if sub == b"SET":
        if len(a) < 4 or len(a) % 2:
            return arity_error("config|set")
        for i in range(2, len(a), 2):
            err = conn.cluster.set_config(a[i].lower(), a[i + 1])
            if err is not None:
                return ErrorReply(err)
        return "OK"
    if sub == b"RESETSTAT":
        return "OK"
    return ErrorReply("ERR unknown subcommand '%s'. Try CONFIG HELP." % a[1].decode("utf-8", "replace"))


def c_info(conn: Any, a: List[bytes]) -> Any:
    return conn.cluster.info(a[1].lower() if len(a) > 1 else b"default").encode()


COMMANDS: Dict[bytes, Tuple[int, Callable[[Any, List[bytes]], Any]]] = {}
for _name, _arity, _fn in [
        ("get", 2, c_get), ("set", -3, c_set), ("setnx", 3, c_setnx), ("setex", 4, _setex(1000, "setex")),
        ("psetex", 4, _setex(1, "psetex")), ("getset", 3, c_getset), ("strlen", 2, c_strlen),
        ("del", -2, c_del), ("unlink", -2, c_del), ("exists", -2, c_exists),
        ("incr", 2, _incr(1, 1)), ("decr", 2, _incr(-1, 1)), ("incrby", 3, _incr(1, None)),
        ("decrby", 3, _incr(-1, None)), ("mget", -2, c_mget), ("mset", -3, c_mset),
        ("expire", -3, _expire(1000, False, "expire")), ("pexpire", -3, _expire(1, False, "pexpire")),
        ("expireat", -3, _expire(1000, True, "expireat")), ("pexpireat", -3, _expire(1, True, "pexpireat")),
        ("persist", 2, c_persist), ("ttl", 2, c_ttl), ("pttl", 2, c_pttl),
        ("keys", 2, c_keys), ("scan", -2, c_scan), ("dbsize", 1, c_dbsize),
        ("flushdb", -1, c_flushdb), ("flushall", -1, c_flushdb),
        ("ping", -1, c_ping), ("echo", 2, c_echo), ("quit", -1, c_quit), ("select", 2, c_select),
        ("hello", -1, c_hello), ("client", -2, c_client), ("command", -1, c_command),
        ("config", -2, c_config), ("info", -1, c_info)]:
    COMMANDS[_name.encode()] = (_arity, _fn)
    COMMANDS[_name.upper().encode()] = (_arity, _fn)
