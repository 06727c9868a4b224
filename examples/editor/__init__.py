"""A collaborative text editor on pyotp: several people edit one document at once in
their browsers.

    python -m examples.editor --port 8000            # then open http://127.0.0.1:8000/
    python -m examples.editor --port 8000 --nodes 2  # two nodes, ports 8000 and 8001

* ``ot``: the merge logic (operational transformation), mirrored by ``static/editor.js``;
* ``document``: one ``Document`` GenServer per open document under a DynamicSupervisor,
  named through a Registry (and a global name across nodes), persisted in SQLite;
* ``server``: the HTTP/WebSocket server (Starlette on uvicorn) hosting the pyotp node; one
  session process per open socket, presence through PubSub;
* ``__main__``: the command line, and the launcher of several nodes.

See ``docs/editor.md``.
"""
import sys
from pathlib import Path

try:
    import pyotp  # noqa: F401
except ImportError:  # running from a source checkout without pyotp installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
