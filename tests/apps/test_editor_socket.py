"""The editor's WebSocket protocol with a plain client (the `websockets` package): edits
and acks, and bad input closing that one socket with an error message while another
editor of the same document goes on."""
from __future__ import annotations

import asyncio
import json

import pytest

from editor_helpers import EditorProc

websockets = pytest.importorskip("websockets")


@pytest.fixture(scope="module")
def editor(tmp_path_factory):
    e = EditorProc(tmp_path_factory.mktemp("editor") / "docs.db").ready()
    yield e
    out = e.stop()
    assert "Traceback" not in out, out


async def connect(editor, doc="shared", client="c1", rev=None):
    ws = await websockets.connect(editor.url.replace("http", "ws") + "/ws", max_size=None)
    await ws.send(json.dumps({"type": "join", "doc": doc, "client": client, "name": client, "rev": rev}))
    return ws


async def recv_type(ws, kind):
    """The next message of type ``kind`` (presence messages come and go meanwhile)."""
    while True:
        m = json.loads(await asyncio.wait_for(ws.recv(), 20))
        if m["type"] == "presence":
            ws.last_presence = m          # kept: a later check may want the latest one
        if m["type"] == kind:
            return m


def run(coro):
    return asyncio.run(coro)


def test_edits_are_acknowledged_broadcast_and_stored(editor):
    async def main():
        a = await connect(editor, "t1", "ca")
        snap = await recv_type(a, "snapshot")
        b = await connect(editor, "t1", "cb")
        await recv_type(b, "snapshot")
        await a.send(json.dumps({"type": "op", "doc": "t1", "seq": 1, "rev": snap["rev"],
                                 "ops": [["i", 0, "h\u00e9llo \U0001F600"]]}))
        ack = await recv_type(a, "ack")
        op = await recv_type(b, "op")
        # b inserts at the same place on the old revision: the server transforms it over
        # a's insert, which was applied first and so stays first
        await b.send(json.dumps({"type": "op", "doc": "t1", "seq": 1, "rev": snap["rev"],
                                 "ops": [["i", 0, ">"]]}))
        ack_b = await recv_type(b, "ack")
        op_a = await recv_type(a, "op")
        peers = getattr(a, "last_presence", None) or await recv_type(a, "presence")
        await a.close()
        await b.close()
        return ack, op, ack_b, op_a, peers
    ack, op, ack_b, op_a, peers = run(main())
    assert ack == {"type": "ack", "rev": 1, "seq": 1}
    assert op["ops"] == [["i", 0, "h\u00e9llo \U0001F600"]] and op["client"] == "ca"
    assert ack_b["rev"] == 2 and op_a["ops"] == [["i", 7, ">"]]
    assert [p["name"] for p in peers["peers"]] == ["cb"]
    assert editor.doc("t1")["text"] == "h\u00e9llo \U0001F600>"


def test_rejoining_from_a_revision_gets_what_was_missed(editor):
    async def main():
        a = await connect(editor, "t2", "ca")
        await recv_type(a, "snapshot")
        for k in range(3):
            await a.send(json.dumps({"type": "op", "doc": "t2", "seq": k + 1, "rev": k, "ops": [["i", k, str(k)]]}))
            await recv_type(a, "ack")
        await a.close()
        b = await connect(editor, "t2", "cb", rev=1)
        cu = await recv_type(b, "catchup")
        await b.close()
        return cu
    cu = run(main())
    assert [(o["rev"], o["client"], o["seq"], o["ops"]) for o in cu["ops"]] == [
        (2, "ca", 2, [["i", 1, "1"]]), (3, "ca", 3, [["i", 2, "2"]])]


BAD = {
    "garbage text": ("}{ not json", 4400, "invalid JSON"),
    "binary frame": (b"\x00\xff\xfe", 4400, "binary frames"),
    "huge message": ("x" * (300 * 1024), 4413, "larger than"),
    "deep nesting": ("[" * 200_000, 4400, "nested too deeply"),
    "not an object": ("[1, 2]", 4400, "JSON object"),
    "unknown type": ({"type": "launch", "doc": "shared"}, 4400, "unknown message type"),
    "edit to an unknown document": ({"type": "op", "doc": "nope", "seq": 1, "rev": 0,
                                     "ops": [["i", 0, "x"]]}, 4400, "unknown document 'nope'"),
    "malformed operation": ({"type": "op", "doc": "shared", "seq": 1, "rev": 0,
                             "ops": [["i", -5, "x"]]}, 4400, "bad primitive"),
    "insert too large": ({"type": "op", "doc": "shared", "seq": 1, "rev": 0,
                          "ops": [["i", 0, "y" * 100_001]]}, 4400, "at most 100000"),
    "position past the end": ({"type": "op", "doc": "shared", "seq": 1, "rev": 0,
                               "ops": [["d", 10**6, 1]]}, 4400, "past the end"),
    "unknown revision": ({"type": "op", "doc": "shared", "seq": 1, "rev": 10**6,
                          "ops": [["i", 0, "x"]]}, 4400, "revision 1000000 unknown"),
    "second join": ({"type": "join", "doc": "other", "client": "c9", "name": "n", "rev": None},
                    4400, "already joined"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_input_closes_that_socket_only(editor, case):
    frame, code, message = BAD[case]

    async def main():
        good = await connect(editor, "shared", "good")
        g = await recv_type(good, "snapshot")
        bad = await connect(editor, "shared", "bad")
        await recv_type(bad, "snapshot")
        await bad.send(frame if isinstance(frame, (str, bytes)) else json.dumps(frame))
        err = await recv_type(bad, "error")
        try:
            await asyncio.wait_for(bad.recv(), 20)
        except websockets.ConnectionClosed as e:
            closed = e.rcvd.code if e.rcvd else None
        # the other editor of the document is unaffected
        await good.send(json.dumps({"type": "op", "doc": "shared", "seq": 1, "rev": g["rev"],
                                    "ops": [["i", 0, "k"]]}))
        ack = await recv_type(good, "ack")
        await good.close()
        return err, closed, ack
    err, closed, ack = run(main())
    assert message in err["message"]
    assert closed == code
    assert ack["seq"] == 1


def test_bad_input_before_joining(editor):
    async def main():
        out = []
        for frame in ({"type": "op", "doc": "shared", "seq": 1, "rev": 0, "ops": []},
                      {"type": "join", "doc": "../etc/passwd", "client": "c", "name": "n"},
                      {"type": "join", "doc": "ok", "client": "c", "name": ""}):
            ws = await websockets.connect(editor.url.replace("http", "ws") + "/ws")
            await ws.send(json.dumps(frame))
            out.append((await recv_type(ws, "error"))["message"])
            await ws.close()
        return out
    assert run(main()) == ['not joined to a document: send a "join" first',
                           "bad document id (letters, digits, - and _, at most 64)",
                           "bad name (1 to 40 characters)"]
