"""The wheel tests run the whole suite where Erlang is absent (macOS and Windows runners,
cibuildwheel's containers): a test that needs a BEAM (an Erlang or Elixir node, erl_call,
escript, a RabbitMQ broker) must carry ``@pytest.mark.erlang`` (on itself or its module's
``pytestmark``) so that tests/conftest.py skips it there with the reason (issue 16, 5).
A static check: a test function that names one of those directly is marked."""
import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
NEEDS_BEAM = ("ErlNode", "ExNode", "require_erl", "erl_call", '"escript"', "rabbitmq-server", "amqp_url")


def _marks_erlang(decorators) -> bool:
    return any("erlang" in ast.unparse(d) and "mark" in ast.unparse(d) for d in decorators)


def _module_marked(tree: ast.Module) -> bool:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark"
                                                for t in node.targets):
            if "mark.erlang" in ast.unparse(node.value):
                return True
    return False


def unmarked(path: Path) -> list:
    """The test functions of the file at path that name a BEAM tool without the marker."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    if _module_marked(tree):
        return []
    return ["%s::%s" % (path.name, n.name) for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name.startswith("test")
            and any(k in ast.unparse(n) for k in NEEDS_BEAM) and not _marks_erlang(n.decorator_list)]


def test_tests_that_need_a_beam_are_marked_erlang():
    files = [p for p in TESTS.rglob("test_*.py")
             if p.parent.name != "helpers" and p.name != Path(__file__).name]
    assert len(files) > 40
    assert [t for p in sorted(files) for t in unmarked(p)] == []


def test_the_check_sees_an_unmarked_test(tmp_path):
    p = tmp_path / "test_x.py"
    p.write_text("import pytest\n\n\ndef test_a():\n    ErlNode('x')\n\n\n"
                 "@pytest.mark.erlang\ndef test_b():\n    ErlNode('y')\n\n\n"
                 "def test_c():\n    pass\n")
    assert unmarked(p) == ["test_x.py::test_a"]
    p.write_text("import pytest\n\npytestmark = pytest.mark.erlang\n\n\n"
                 "def test_a():\n    ErlNode('x')\n")
    assert unmarked(p) == []
