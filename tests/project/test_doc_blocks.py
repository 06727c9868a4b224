"""Every Python code block of README.md, docs/*.md and examples/README.md runs (see
tests/helpers/doc_blocks.py for the conventions), and prints what the docs say it prints."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import doc_blocks
from pathutil import ROOT, child_pythonpath

FILES = [p for p in doc_blocks.doc_files() if doc_blocks.python_blocks(p)]


def test_the_docs_have_python_blocks():
    # the docs are there (pyproject's test-sources copies them for the wheel tests)
    assert sum(len(doc_blocks.python_blocks(p)) for p in FILES) >= 30


@pytest.mark.parametrize("path", FILES, ids=[os.path.relpath(p, ROOT) for p in FILES])
def test_doc_blocks_run(path: Path):
    blocks = doc_blocks.python_blocks(path)
    env = dict(os.environ, PYTHONPATH=child_pythonpath(str(ROOT)), PYTHONWARNINGS="error::RuntimeWarning")
    proc = subprocess.run([sys.executable, str(Path(doc_blocks.__file__)), str(path)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    outputs = proc.stdout.split(doc_blocks.SEP + "\n")
    assert len(outputs) == len(blocks) + 1, proc.stdout
    for block, out in zip(blocks, outputs):
        if block.expected is not None:
            assert doc_blocks.normalize(out) == doc_blocks.normalize(block.expected), block.label()


def test_compile_only_blocks_are_rare_and_say_why():
    marked = [b for p in FILES for b in doc_blocks.python_blocks(p) if b.compile_only]
    for b in marked:
        first = b.source.lstrip().splitlines()[0]
        assert first.startswith(doc_blocks.COMPILE_ONLY + " (") and first.endswith(")"), b.label()
    assert len(marked) <= 3, [b.label() for b in marked]


def test_parser_attaches_expected_output(tmp_path):
    md = tmp_path / "x.md"
    md.write_text("```python\nprint(1)\n```\n\nOutput:\n\n```text\n1\n```\n\n"
                  "```python\nprint(2)\n```\n\n```text\nnot an output\n```\n")
    a, b = doc_blocks.python_blocks(md)
    assert (a.source, a.expected) == ("print(1)\n", "1\n")
    assert b.expected is None


def _documented_commands():
    """The `python -m MODULE [SUBCOMMAND]` commands of the docs' shell blocks."""
    found = set()
    for path in doc_blocks.doc_files():
        for b in doc_blocks.parse(path):
            if b.lang not in ("sh", "console", "bash", "shell"):
                continue
            for line in b.source.splitlines():
                words = line.strip().removeprefix("$ ").split()
                if words[:2] != ["python", "-m"] or len(words) < 3:
                    continue
                if words[2] == "pyotp" and len(words) > 3:
                    found.add(("pyotp", words[3]))
                elif words[2] != "pyotp":
                    found.add((words[2],))
    return sorted(found)


def test_doc_shell_commands_exist():
    # the commands need a running node or a network to do their work; what can be checked
    # offline is that each module (and pyotp subcommand) exists and parses its options
    commands = _documented_commands()
    assert ("pyotp", "run") in commands
    env = dict(os.environ, PYTHONPATH=child_pythonpath(str(ROOT)))
    for cmd in commands:
        if not (ROOT / cmd[0].split(".")[0]).exists() and cmd[0] != "pyotp":
            continue            # bench/ is not copied for the wheel tests
        if cmd == ("bench.workloads",):
            # `python -m bench.workloads run WORKLOAD IMPL SIZE` has no --help: its usage
            proc = subprocess.run([sys.executable, "-m", "bench.workloads"], cwd=ROOT, env=env,
                                  capture_output=True, text=True, timeout=60)
            assert "run" in proc.stdout + proc.stderr, cmd
            continue
        proc = subprocess.run([sys.executable, "-m", *cmd, "--help"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and "usage" in proc.stdout.lower(), (cmd, proc.stderr[-2000:])
