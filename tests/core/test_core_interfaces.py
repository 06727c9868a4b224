"""The compiled core's declared interfaces (src/core/dist_iface.pxi): the local core
(process, scheduler, api, gen_server, ...) reaches the distribution layer only through
the names declared there. The core is one Cython module of included files, so nothing
but this test enforces the boundary."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "src" / "core"
# a check of the source tree: a wheel's tests run without it (cibuildwheel's test-sources)
pytestmark = pytest.mark.skipif(not CORE.is_dir(), reason="needs the source tree (src/core)")
LOCAL = ["terms", "errors", "mailbox", "timer", "process", "scheduler", "gen_server", "api",
         "etf", "wait_policy"]
DIST_NAME = re.compile(r"\b(_dist_\w+|_remote_\w+|_dc_\w+|_DC_\w+|DistChannel)\b")


def _declared() -> set:
    text = (CORE / "dist_iface.pxi").read_text()
    head = text.split("\ncdef ", 1)[0]          # the documented list at the top
    return set(re.findall(r"^#\s+(_\w+)", head, re.M))


def _code(path: Path) -> str:
    out = []
    for line in path.read_text().splitlines():
        code = line.split("#", 1)[0]
        out.append(code)
    return "\n".join(out)


def test_the_interface_lists_what_it_defines_or_names():
    declared = _declared()
    assert {"_dist_connected", "_remote_send", "_remote_call", "_remote_hook",
            "_set_remote_handler", "_remote_handler"} <= declared
    iface = (CORE / "dist_iface.pxi").read_text()
    channel = (CORE / "dist_channel.pyx").read_text()
    for name in declared:
        assert re.search(r"^(cdef|def|cdef inline)\b.*\b%s\b" % name, iface + "\n" + channel, re.M), name


def test_local_core_uses_only_the_declared_distribution_names():
    declared = _declared()
    for comp in LOCAL:
        used = set(DIST_NAME.findall(_code(CORE / (comp + ".pyx"))))
        assert used <= declared, "%s.pyx uses undeclared distribution names: %s" % (comp, sorted(used - declared))
