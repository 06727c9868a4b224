"""The editor's merge logic (examples/editor/ot.py): TP1 for any pair of concurrent
operations, and convergence of a server with several clients under any delivery order."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from examples.editor.ot import Client, History, OTError, apply, transform, validate

ALPHABET = "ab\u00e9\U0001F600"


@st.composite
def text_and_op(draw, text=None):
    """A text and a valid operation on it (a few primitives, each valid in turn)."""
    if text is None:
        text = draw(st.text(ALPHABET, max_size=12))
    ops, cur = [], text
    for _ in range(draw(st.integers(1, 3))):
        if cur and draw(st.booleans()):
            pos = draw(st.integers(0, len(cur) - 1))
            p = ["d", pos, draw(st.integers(1, len(cur) - pos))]
        else:
            p = ["i", draw(st.integers(0, len(cur))), draw(st.text(ALPHABET, min_size=1, max_size=3))]
        ops.append(p)
        cur = apply(cur, [p])
    return text, ops


@st.composite
def concurrent_pair(draw):
    text, a = draw(text_and_op())
    _, b = draw(text_and_op(text))
    return text, a, b


@settings(max_examples=400, deadline=None)
@given(concurrent_pair(), st.booleans())
def test_transform_satisfies_tp1(case, a_first):
    text, a, b = case
    a2, b2 = transform(a, b, a_first)
    assert apply(apply(text, a), b2) == apply(apply(text, b), a2)


def test_concurrent_inserts_at_one_place_keep_the_first_in_front():
    a2, b2 = transform([["i", 1, "A"]], [["i", 1, "B"]], True)
    assert apply(apply("xy", [["i", 1, "A"]]), b2) == "xABy"
    assert apply(apply("xy", [["i", 1, "B"]]), a2) == "xABy"


def test_insert_inside_a_concurrently_deleted_range_survives():
    text = "abcdef"
    a, b = [["i", 3, "X"]], [["d", 1, 4]]
    a2, b2 = transform(a, b, False)
    assert apply(apply(text, a), b2) == apply(apply(text, b), a2) == "aXf"


@st.composite
def schedule(draw):
    """Three clients making edits while deliveries happen in an arbitrary order."""
    return draw(st.lists(st.tuples(st.sampled_from(["edit", "up", "down"]), st.integers(0, 2),
                                   st.integers(0, 10**6), st.text(ALPHABET, min_size=1, max_size=2)),
                         max_size=40))


@settings(max_examples=200, deadline=None)
@given(st.text(ALPHABET, max_size=8), schedule())
def test_server_and_three_clients_converge_in_any_delivery_order(start, steps):
    server = History(start)
    clients = [Client(start) for _ in range(3)]
    up = [[] for _ in clients]        # client -> server, in order
    down = [[] for _ in clients]      # server -> client, in order: ("ack",) or ("op", ops)

    def deliver_up(i):
        rev, ops = up[i].pop(0)
        _, applied = server.receive(rev, ops)
        for j in range(len(clients)):
            down[j].append(("ack",) if j == i else ("op", applied))

    def deliver_down(i):
        msg = down[i].pop(0)
        if msg[0] == "ack":
            out = clients[i].ack()
            if out is not None:
                up[i].append(out)
        else:
            clients[i].remote(msg[1])

    for kind, i, n, s in steps:
        c = clients[i]
        if kind == "edit":
            if c.text and n % 2:
                pos = n % len(c.text)
                op = [["d", pos, 1 + n % min(3, len(c.text) - pos)]]
            else:
                op = [["i", n % (len(c.text) + 1), s]]
            out = c.edit(op)
            if out is not None:
                up[i].append(out)
        elif kind == "up" and up[i]:
            deliver_up(i)
        elif kind == "down" and down[i]:
            deliver_down(i)
    while any(up) or any(down):       # drain everything
        for i in range(len(clients)):
            while up[i]:
                deliver_up(i)
            while down[i]:
                deliver_down(i)
    assert [c.text for c in clients] == [server.text] * 3
    assert all(c.rev == server.rev for c in clients)


@pytest.mark.parametrize("bad", [
    "x", [["i", -1, "a"]], [["i", 0, ""]], [["d", 0, 0]], [["d", 0, "1"]], [["i", 0, 5]],
    [["q", 0, 1]], [["i", 0]], [("i", 0, "a")], [["i", True, "a"]], [["i", 0, "a"]] * 1001,
    [["i", 0, "x" * 100_001]],
])
def test_validate_refuses_malformed_operations(bad):
    with pytest.raises(OTError):
        validate(bad)


def test_apply_refuses_positions_past_the_end():
    with pytest.raises(OTError, match="past the end"):
        apply("ab", [["i", 3, "x"]])
    with pytest.raises(OTError, match="past the end"):
        apply("ab", [["d", 1, 2]])


def test_history_refuses_an_unknown_revision():
    h = History("ab")
    with pytest.raises(OTError, match="revision 5 unknown"):
        h.receive(5, [["i", 0, "x"]])
