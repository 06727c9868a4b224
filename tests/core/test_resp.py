"""pyotp.resp: the compiled RESP parser (hostile input, any split of the stream) and the
RESP2/RESP3 encoder."""
import pytest
from hypothesis import given, settings, strategies as st

from pyotp import resp


def multibulk(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


commands = st.lists(st.lists(st.binary(max_size=40), min_size=1, max_size=5), min_size=1, max_size=8)


@settings(max_examples=200, deadline=None)
@given(commands, st.lists(st.integers(min_value=1, max_value=30), max_size=40))
def test_any_split_of_the_stream_gives_the_same_commands(cmds, cuts):
    data = b"".join(multibulk(*c) for c in cmds)
    p = resp.Parser()
    got, pos = [], 0
    for n in cuts:
        got += p.feed(data[pos:pos + n])
        pos += n
    got += p.feed(data[pos:])
    assert got == cmds and p.buffered == 0


def test_byte_by_byte_and_partial_state():
    p = resp.Parser()
    data = multibulk(b"SET", b"k", b"v" * 1000) + b"PING\r\n"
    out = []
    for i in range(len(data)):
        out += p.feed(data[i:i + 1])
    assert out == [[b"SET", b"k", b"v" * 1000], [b"PING"]]


@pytest.mark.parametrize("data, msg", [
    (b"*1\r\n$1073741824\r\n", "Protocol error: invalid bulk length"),
    (b"*1\r\n$-1\r\n", "Protocol error: invalid bulk length"),
    (b"*1\r\n$+1\r\n", "Protocol error: invalid bulk length"),
    (b"*1\r\n$01\r\n", "Protocol error: invalid bulk length"),
    (b"*1x\r\n", "Protocol error: invalid multibulk length"),
    (b"*2000000\r\n", "Protocol error: invalid multibulk length"),
    (b"*99999999999999999999999\r\n", "Protocol error: invalid multibulk length"),
    (b"*1\r\n:1\r\n", "Protocol error: expected '$', got ':'"),
    (b"a" * 70000, "Protocol error: too big inline request"),
    (b"*" + b"1" * 70000, "Protocol error: too big mbulk count string"),
    (b"*1\r\n$" + b"1" * 70000, "Protocol error: too big bulk count string"),
    (b'GET "abc\r\n', "Protocol error: unbalanced quotes in request"),
    (b'GET "a"b\r\n', "Protocol error: unbalanced quotes in request"),
])
def test_violations_carry_redis_wording_and_poison_the_parser(data, msg):
    p = resp.Parser()
    with pytest.raises(resp.ProtocolError) as e:
        p.feed(data)
    assert str(e.value) == msg and p.error == msg
    with pytest.raises(resp.ProtocolError):
        p.feed(b"PING\r\n")


def test_commands_before_a_violation_are_returned_first():
    p = resp.Parser()
    assert p.feed(b"PING\r\n*1\r\n$4\r\nECHO\r\n*1\r\n$999999999999\r\n") == [[b"PING"], [b"ECHO"]]
    assert p.error == "Protocol error: invalid bulk length"
    with pytest.raises(resp.ProtocolError):
        p.feed(b"")


def test_a_declared_bulk_is_not_allocated_before_it_arrives():
    p = resp.Parser(max_bulk=512 * 1024 * 1024)
    assert p.feed(b"*1\r\n$500000000\r\n" + b"x" * 100) == []
    assert p.buffered == 100          # what arrived, not what was declared


def test_limits_are_configurable_and_checked():
    p = resp.Parser(max_bulk=10, max_args=2)
    with pytest.raises(resp.ProtocolError, match="invalid bulk length"):
        p.feed(multibulk(b"x" * 11))
    with pytest.raises(resp.ProtocolError, match="invalid multibulk length"):
        resp.Parser(max_args=2).feed(multibulk(b"a", b"b", b"c"))
    with pytest.raises(ValueError):
        resp.Parser(max_bulk=0)


def test_inline_commands_split_like_redis():
    p = resp.Parser()
    assert p.feed(b'SET k "a b\\n\\x41"\r\n  \r\nGET \'it\\\'s\'\n') == [[b"SET", b"k", b"a b\nA"], [b"GET", b"it's"]]


def test_encode_resp2_and_resp3():
    E = resp.encode
    assert E(b"ab") == b"$2\r\nab\r\n" and E("OK") == b"+OK\r\n" and E(-3) == b":-3\r\n"
    assert E(None) == b"$-1\r\n" and E(None, 3) == b"_\r\n"
    assert E(resp.ErrorReply("ERR x\r\ny")) == b"-ERR x  y\r\n"
    assert E([b"a", [1, None]]) == b"*2\r\n$1\r\na\r\n*2\r\n:1\r\n$-1\r\n"
    assert E({b"k": 1}) == b"*2\r\n$1\r\nk\r\n:1\r\n" and E({b"k": 1}, 3) == b"%1\r\n$1\r\nk\r\n:1\r\n"
    assert E(True, 3) == b"#t\r\n" and E(True) == b":1\r\n"
    assert E(1.5, 3) == b",1.5\r\n" and E(1.5) == b"$3\r\n1.5\r\n"
    assert E({b"a"}, 3) == b"~1\r\n$1\r\na\r\n"
    with pytest.raises(TypeError, match="no RESP form"):
        E(object())
    deep: list = []
    for _ in range(100):
        deep = [deep]
    with pytest.raises(ValueError, match="nested deeper"):
        E(deep)


def test_encode_into_is_all_or_nothing():
    out = bytearray(b"x")
    resp.encode_into(out, b"a")
    assert out == b"x$1\r\na\r\n"
    with pytest.raises(TypeError):
        resp.encode_into(out, [b"b", object()])
    assert out == b"x$1\r\na\r\n"
