"""The suite's own parallel run: with `-n 2 --dist loadgroup` (the front page's test command), each
test file runs whole in one worker, so its module fixtures (a trained run, a compiled model) are
made once. pytest-xdist marks the groups through the node ids, which some pytest releases no longer
let it change; then the tests are spread one by one and every fixture is made in both workers."""

import os
import subprocess
import sys
import textwrap

from tests.conftest import LONGEST_FIRST, ROOT

TEST_FILE = textwrap.dedent("""
    import os

    def _note(request):
        with open(os.path.join(os.path.dirname(__file__), "ran.txt"), "a") as f:
            f.write(f"{request.node.nodeid.split('::')[0]} {os.environ['PYTEST_XDIST_WORKER']}\\n")
    """) + "".join(f"\ndef test_{i}(request):\n    _note(request)\n" for i in range(6))


def test_each_file_runs_in_one_worker(tmp_path):
    (tmp_path / "conftest.py").write_text("from tests.conftest import pytest_collection_modifyitems\n")
    for name in ("test_one.py", "test_two.py"):
        (tmp_path / name).write_text(TEST_FILE)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadgroup", "-p",
                           "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path)],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    ran = [line.split() for line in (tmp_path / "ran.txt").read_text().splitlines()]
    assert len(ran) == 12
    workers = {f: {w for g, w in ran if g == f} for f, _ in ran}
    assert all(len(w) == 1 for w in workers.values()), workers


def test_each_longest_first_prefix_names_a_test_file_or_page():
    """A prefix that no longer names anything would silently order nothing."""
    for prefix in LONGEST_FIRST:
        path, _, test = prefix.partition("::")
        assert os.path.exists(os.path.join(ROOT, path)), prefix
        if "[" in test:  # a page run: test_page[docs/X.md]
            assert os.path.isfile(os.path.join(ROOT, test[test.index("[") + 1:-1])), prefix
        if test:
            with open(os.path.join(ROOT, path)) as f:
                assert f"def {test.split('[')[0]}(" in f.read(), prefix
