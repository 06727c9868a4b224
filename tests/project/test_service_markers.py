"""The wheel tests run the whole suite where the outside services are absent (macOS and
Windows runners, cibuildwheel's containers): a test that needs one (a BEAM node,
redis-server, chromium, PostgreSQL, RabbitMQ) must carry its marker (on itself or its
module's ``pytestmark``) so that tests/conftest.py skips it there with the reason, and
fails it where the service is required (issue 16). A static check: a test function that
names a service's tools (tests/helpers/services.py, ``uses``), directly or through the
fixtures and helper functions of its module that do, carries the service's marker."""
import ast
from pathlib import Path
from typing import Dict, List, Set

from services import SERVICES

TESTS = Path(__file__).resolve().parent.parent


def _marks(expr_src: str) -> Set[str]:
    return {name for name in SERVICES if "mark.%s" % name in expr_src}


def _module_marks(tree: ast.Module) -> Set[str]:
    marks: Set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark"
                                                for t in node.targets):
            marks |= _marks(ast.unparse(node.value))
    return marks


def _direct(fn: ast.AST) -> Set[str]:
    src = ast.unparse(fn)
    return {name for name, s in SERVICES.items() if any(k in src for k in s.uses)}


def _refs(fn) -> Set[str]:
    """The names a function takes (fixtures) or uses (the module's helper functions)."""
    return {a.arg for a in fn.args.args + fn.args.kwonlyargs} | {
        n.id for n in ast.walk(fn) if isinstance(n, ast.Name)}


def unmarked(path: Path) -> List[str]:
    """'file::test needs service' for each test function of the file at path that needs a
    service without carrying its marker."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    module = _module_marks(tree)
    funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    # Module-level only: the functions nested in a test are part of its source already,
    # and their names (main, ...) repeat from test to test.
    helpers = [f for f in tree.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
               and not f.name.startswith("test")]
    # A fixture or helper function needs what it names and what the fixtures it takes and
    # the helpers it calls need: to a fixpoint.
    need: Dict[str, Set[str]] = {f.name: _direct(f) for f in helpers}
    changed = True
    while changed:
        changed = False
        for f in helpers:
            more = set().union(*(need.get(r, set()) for r in _refs(f) if r != f.name)) - need[f.name]
            if more:
                need[f.name] |= more
                changed = True
    out = []
    for fn in funcs:
        if not fn.name.startswith("test"):
            continue
        wanted = _direct(fn).union(*(need.get(r, set()) for r in _refs(fn)))
        marked = module.union(*(_marks(ast.unparse(d)) for d in fn.decorator_list))
        out += ["%s::%s needs %s" % (path.name, fn.name, s) for s in sorted(wanted - marked)]
    return out


def test_tests_that_need_a_service_carry_its_marker():
    files = [p for p in TESTS.rglob("test_*.py")
             if p.parent.name != "helpers" and p.name != Path(__file__).name]
    assert len(files) > 40
    assert [t for p in sorted(files) for t in unmarked(p)] == []


def test_the_markers_declared_are_the_services(pytestconfig):
    declared = {line.split(":")[0].strip() for line in pytestconfig.getini("markers")}
    assert set(SERVICES) <= declared


def test_the_check_sees_an_unmarked_test(tmp_path):
    p = tmp_path / "test_x.py"
    p.write_text("import pytest\n\n\ndef test_a():\n    ErlNode('x')\n\n\n"
                 "@pytest.mark.erlang\ndef test_b():\n    ErlNode('y')\n\n\n"
                 "def test_c():\n    pass\n")
    assert unmarked(p) == ["test_x.py::test_a needs erlang"]
    p.write_text("import pytest\n\npytestmark = pytest.mark.erlang\n\n\n"
                 "def test_a():\n    ErlNode('x')\n")
    assert unmarked(p) == []


def test_the_check_follows_fixtures_and_tells_services_apart(tmp_path):
    p = tmp_path / "test_y.py"
    p.write_text(
        "import pytest\n\n\n"
        "@pytest.fixture\ndef real_server():\n    return RedisServer()\n\n\n"
        "@pytest.fixture\ndef client(real_server):\n    return real_server\n\n\n"
        "def test_via_two_fixtures(client):\n    pass\n\n\n"
        "@pytest.mark.erlang\ndef test_wrong_marker(real_server):\n    pass\n\n\n"
        "@pytest.mark.redis\ndef test_marked(client):\n    pass\n\n\n"
        "def open_page():\n    return webdriver.Chrome()\n\n\n"
        "@pytest.fixture\ndef pages():\n    return [open_page()]\n\n\n"
        "def test_browser_unmarked(pages):\n    pass\n\n\n"
        "def test_postgres_unmarked(postgres_dsn):\n    pass\n\n\n"
        "def test_plain():\n    pass\n")
    assert unmarked(p) == ["test_y.py::test_via_two_fixtures needs redis",
                           "test_y.py::test_wrong_marker needs redis",
                           "test_y.py::test_browser_unmarked needs chromium",
                           "test_y.py::test_postgres_unmarked needs postgres"]
    p.write_text("import pytest\n\npytestmark = [pytest.mark.pyotp, pytest.mark.erlang, pytest.mark.rabbitmq]\n\n\n"
                 "async def test_a(amqp_url):\n    pass\n")
    assert unmarked(p) == []
