"""Two editor nodes (two OS processes, pyotp distribution): both serve one document whose
process lives on the first; when that node is killed, the second restarts the document
from SQLite and a page reconnecting there goes on from its revision."""
from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from editor_helpers import EditorProc

websockets = pytest.importorskip("websockets")


async def recv_type(ws, kind):
    while True:
        m = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if m["type"] == kind:
            return m


def test_document_restarts_on_the_surviving_node(tmp_path):
    tag = uuid.uuid4().hex[:8]
    n1, n2 = "ed1_%s@127.0.0.1" % tag, "ed2_%s@127.0.0.1" % tag
    a = EditorProc(tmp_path / "docs.db", node=n1).ready()
    b = EditorProc(tmp_path / "docs.db", node=n2, connect=[n1]).ready(nodes=1)
    try:
        async def main():
            wa = await websockets.connect(a.url.replace("http", "ws") + "/ws")
            await wa.send(json.dumps({"type": "join", "doc": "f", "client": "ca", "name": "a", "rev": None}))
            snap = await recv_type(wa, "snapshot")
            assert snap["node"] == n1
            wb = await websockets.connect(b.url.replace("http", "ws") + "/ws")
            await wb.send(json.dumps({"type": "join", "doc": "f", "client": "cb", "name": "b", "rev": None}))
            await recv_type(wb, "snapshot")
            await wb.send(json.dumps({"type": "op", "doc": "f", "seq": 1, "rev": 0, "ops": [["i", 0, "hello"]]}))
            await recv_type(wb, "ack")
            await recv_type(wa, "op")
            assert b.doc("f")["node"] == n1          # the process lives on the first node
            a.kill()
            # the second node's session sees the document go and closes with 4001
            with pytest.raises(websockets.ConnectionClosed) as ei:
                await recv_type(wb, "never")
            assert ei.value.rcvd.code == 4001
            # the page reconnects and rejoins from its revision: the document restarts here
            wb = await websockets.connect(b.url.replace("http", "ws") + "/ws")
            await wb.send(json.dumps({"type": "join", "doc": "f", "client": "cb", "name": "b", "rev": 1}))
            cu = await recv_type(wb, "catchup")
            await wb.send(json.dumps({"type": "op", "doc": "f", "seq": 2, "rev": 1, "ops": [["i", 5, "!"]]}))
            ack = await recv_type(wb, "ack")
            await wb.close()
            return cu, ack
        cu, ack = asyncio.run(main())
        assert cu == {"type": "catchup", "node": n2, "ops": []}
        assert ack["rev"] == 2
        assert b.doc("f") == {"text": "hello!", "rev": 2, "node": n2, "open": True}
    finally:
        a.stop()
        b.stop()
