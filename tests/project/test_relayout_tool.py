"""tools/relayout_tests.py, which the coordinator reruns after merging branches written
before the layout: where files go, the references it rewrites, idempotence, and that this
checkout is laid out already."""
import subprocess
import sys

import pytest

from pathutil import ROOT

if not (ROOT / "tools" / "relayout_tests.py").is_file():
    pytest.skip("no tools/ beside the tests (an installed-wheel run)", allow_module_level=True)
sys.path.insert(0, str(ROOT / "tools"))
import relayout_tests as tool  # noqa: E402


@pytest.mark.parametrize("name, folder", [
    ("test_dist_fragments.py", "distribution"), ("test_shm_transport.py", "distribution"),
    ("test_global_protocol.py", "distribution"), ("test_atom_cache.py", "distribution"),
    ("test_channel_stats.py", "distribution"), ("test_unawaited_calls.py", "core"),
    ("test_thread_calls.py", "core"), ("test_wait_policy.py", "core"),
    ("test_gen_server_x.py", "behaviours"), ("test_partition_supervisor.py", "behaviours"),
    ("test_examples_new_app.py", "apps"), ("test_kvstore_pool.py", "apps"),
    ("test_doctests_more.py", "project"), ("test_mypy_examples.py", "project"),
    ("test_something_else.py", "core"),
])
def test_new_flat_files_are_placed_by_their_names(name, folder):
    assert tool.folder_for(name)[0] == folder


# written "tests" + "/..." so that the tool, run on this checkout, does not take the
# fixtures below for references of ours to rewrite
T = "tests" + "/"


def _tree(tmp_path):
    tests = tmp_path / "tests"
    (tests / "distribution").mkdir(parents=True)
    (tests / "conftest.py").write_text("")
    (tests / "distribution" / "test_dist_basic.py").write_text("def test_x(): pass\n")
    (tests / "test_dist_new.py").write_text(
        "from pathlib import Path\nROOT = Path(__file__).resolve().parent.parent\n")
    (tests / "new_roles.py").write_text("X = 1\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "x.md").write_text(
        "See %stest_dist_new.py and %stest_dist_basic.py::test_x, %snew_roles.py;"
        " not %stest_dist_new.pyc nor other_%stest_dist_new.py.\n" % (T, T, T, T, T))
    return tests


def test_moves_rewrites_references_and_is_idempotent(tmp_path):
    tests = _tree(tmp_path)
    report = tool.relayout(tmp_path)
    assert (tests / "distribution" / "test_dist_new.py").is_file()
    assert (tests / "helpers" / "new_roles.py").is_file()
    assert not (tests / "test_dist_new.py").exists()
    moved = (tests / "distribution" / "test_dist_new.py").read_text()
    assert "Path(__file__).resolve().parents[2]" in moved     # still the repository root
    assert (tmp_path / "docs" / "x.md").read_text() == (
        "See %sdistribution/test_dist_new.py and %sdistribution/test_dist_basic.py::test_x,"
        " %shelpers/new_roles.py; not %stest_dist_new.pyc nor other_%stest_dist_new.py.\n"
        % (T, T, T, T, T))
    assert any("docs/x.md" in line for line in report)
    assert tool.relayout(tmp_path) == ["nothing to move: tests/ is laid out already"]


def test_a_flat_file_whose_name_is_taken_is_left_for_a_person(tmp_path):
    tests = _tree(tmp_path)
    (tests / "test_dist_basic.py").write_text("def test_x(): assert 1\n")   # an old copy
    with pytest.raises(SystemExit, match="merge the changes of " + T + "test_dist_basic.py"):
        tool.relayout(tmp_path)
    assert (tests / "test_dist_basic.py").is_file()


def test_this_checkout_is_laid_out():
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "relayout_tests.py"), "--dry-run"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "nothing to move: tests/ is laid out already"
