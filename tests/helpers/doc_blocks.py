"""Runs the Python code blocks of the documentation (README.md, docs/*.md,
examples/README.md), as a reader would paste them, one file at a time.

The conventions (also in CONTRIBUTING.md, "Code blocks in the docs"):

* Every fenced ``python`` block runs. The blocks of one Markdown file run in order in one
  namespace, in a fresh interpreter per file (so a later block may use an earlier block's
  imports and definitions, as a reader pasting them into one module would).
* Expected output: a line ``Output:`` after a block, then a fenced ``text`` block. The
  block's stdout must equal it (trailing spaces and blank lines aside).
* A block that defines ``main()`` runs it (``pyotp.run(main)``), so that its body is
  exercised, not just defined.
* A block that truly cannot run on its own starts with the visible comment
  ``# doc-test: compile only (REASON)``; it is still compiled. Keep such blocks rare.

``python tests/helpers/doc_blocks.py FILE.md`` runs one file by hand; the tests are in
tests/project/test_doc_blocks.py.
"""
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

# the repository root: above tests/, wherever this helper sits in it (tests/helpers/ too)
ROOT = next(p for p in Path(__file__).resolve().parents if p.name == "tests").parent
COMPILE_ONLY = "# doc-test: compile only"
# printed between blocks so that the parent can split the output per block
SEP = "\x00doc-block-end\x00"

_FENCE = re.compile(r"^(\s*)```\s*([\w+-]*)\s*$")


@dataclass
class Block:
    path: str           # relative to the repository root
    line: int           # 1-based line of the opening fence
    lang: str
    source: str
    expected: Optional[str] = None      # the Output: block, if any

    @property
    def compile_only(self) -> bool:
        return self.source.lstrip().startswith(COMPILE_ONLY)

    def label(self) -> str:
        return "%s:%d" % (self.path, self.line)


def doc_files() -> List[Path]:
    """README.md, docs/*.md and examples/README.md, where present (a wheel test run copies
    only what pyproject's test-sources lists)."""
    found = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md")) + [ROOT / "examples" / "README.md"]
    return [p for p in found if p.is_file()]


def parse(path: Path) -> List[Block]:
    """Every fenced block of a Markdown file, with a python block's expected output
    attached (the ``text`` block after a line ``Output:``)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    rel = os.path.relpath(path, ROOT)
    blocks: List[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m or not m.group(2):
            i += 1
            continue
        indent, lang = len(m.group(1)), m.group(2).lower()
        start = i
        body = []
        i += 1
        while i < len(lines) and not re.match(r"^\s*```\s*$", lines[i]):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        if i >= len(lines):
            raise ValueError("%s:%d: unclosed code fence" % (rel, start + 1))
        i += 1
        block = Block(rel, start + 1, lang, "\n".join(body) + "\n")
        if lang == "text" and blocks and blocks[-1].lang == "python" \
                and _only_output_between(lines, blocks[-1], start):
            blocks[-1].expected = block.source
        blocks.append(block)
    return blocks


def _only_output_between(lines: List[str], prev: Block, start: int) -> bool:
    prev_end = prev.line + prev.source.count("\n")        # the closing fence's index
    between = [l.strip() for l in lines[prev_end + 1:start] if l.strip()]
    return between == ["Output:"]


def python_blocks(path: Path) -> List[Block]:
    return [b for b in parse(path) if b.lang in ("python", "py")]


def normalize(text: str) -> str:
    return "\n".join(l.rstrip() for l in text.strip("\n").splitlines())


def _run_as_script(b: Block) -> None:
    import subprocess
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        script = Path(d) / "doc_block.py"
        script.write_text(b.source)
        r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                           timeout=120)
    sys.stdout.write(r.stdout)
    sys.stdout.flush()
    if r.returncode != 0:
        raise RuntimeError("the block exited with %d:\n%s" % (r.returncode, r.stderr[-3000:]))


def run_file(path: Path) -> int:
    """Child side: compile every block, run those not marked compile-only in one
    namespace, print SEP after each block. A failing block ends the run (exit 1) with its
    location and traceback on stderr."""
    import traceback
    ns = {"__name__": "__main__", "__file__": str(path)}
    for b in python_blocks(path):
        try:
            code = compile(b.source, "%s (block at line %d)" % (b.path, b.line), "exec")
        except SyntaxError:
            traceback.print_exc()
            sys.stderr.write("\nFAILED to compile the block at %s\n" % b.label())
            return 1
        if not b.compile_only:
            if re.search(r"^(async )?def main\(", b.source, re.M) and not re.search(r"run\w*\(main\b", b.source):
                sys.stderr.write("FAILED: the block at %s defines main() but never runs it "
                                 "(end it with pyotp.run(main))\n" % b.label())
                return 1
            try:
                if re.search(r"^if __name__ == .__main__.:", b.source, re.M):
                    # a script guarded for multiprocessing's spawn (pool workers import
                    # the main module): run it as a file of its own, as a user would
                    _run_as_script(b)
                else:
                    exec(code, ns)
            except BaseException:
                traceback.print_exc()
                sys.stderr.write("\nFAILED: the block at %s raised\n" % b.label())
                return 1
        sys.stdout.write(SEP + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/helpers/doc_blocks.py FILE.md")
    sys.exit(run_file(Path(sys.argv[1]).resolve()))
