"""Property-based: any sequence of casts and calls keeps a GenServer's documented state,
and every call gets exactly its own reply, in order."""
from hypothesis import given, settings, strategies as st

import pyotp
from pyotp import GenServer


class KV(GenServer):
    """A key-value store: casts put/delete, calls get/size/snapshot."""

    def init(self, _):
        return ("ok", {})

    def handle_cast(self, op, d):
        if op[0] == "put":
            d[op[1]] = op[2]
        elif op[0] == "delete":
            d.pop(op[1], None)
        return ("noreply", d)

    def handle_call(self, op, from_, d):
        if op[0] == "get":
            return ("reply", d.get(op[1]), d)
        if op[0] == "size":
            return ("reply", len(d), d)
        return ("reply", dict(d), d)


keys = st.integers(min_value=0, max_value=5)
ops = st.lists(st.one_of(
    st.tuples(st.just("put"), keys, st.integers()),
    st.tuples(st.just("delete"), keys),
    st.tuples(st.just("get"), keys),
    st.tuples(st.just("size")),
    st.tuples(st.just("snapshot")),
), max_size=60)


@settings(max_examples=60, deadline=None)
@given(ops)
def test_any_sequence_matches_the_model(seq):
    async def main():
        pid = await KV.start_link(None)
        model, expected, got = {}, [], []
        for op in seq:
            if op[0] == "put":
                model[op[1]] = op[2]
                GenServer.cast(pid, op)
            elif op[0] == "delete":
                model.pop(op[1], None)
                GenServer.cast(pid, op)
            else:
                expected.append(model.get(op[1]) if op[0] == "get"
                                else len(model) if op[0] == "size" else dict(model))
                got.append(await GenServer.call(pid, op))
        final = await GenServer.call(pid, ("snapshot",))
        return expected, got, final, model
    expected, got, final, model = pyotp.run(main)
    assert got == expected
    assert final == model


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=20), min_size=1, max_size=8))
def test_concurrent_callers_each_get_their_own_replies(counts):
    class Echo(GenServer):
        def handle_call(self, req, from_, s):
            return ("reply", req, s)

    async def caller(server, parent, tag, n):
        out = [await GenServer.call(server, (tag, i)) for i in range(n)]
        pyotp.send(parent, (tag, out))

    async def main():
        pid = await Echo.start_link(None)
        for tag, n in enumerate(counts):
            pyotp.spawn(caller, pid, pyotp.self(), tag, n)
        results = dict([await pyotp.receive() for _ in counts])
        return results
    results = pyotp.run(main)
    assert results == {tag: [(tag, i) for i in range(n)] for tag, n in enumerate(counts)}
