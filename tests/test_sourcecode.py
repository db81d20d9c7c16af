"""The source tree passes ruff with the rules of ``[tool.ruff]`` in
pyproject.toml, so a lint error fails the suite (and CI) with ruff's report.
ruff is in the ``test`` extra: without it the test fails rather than skips."""

import subprocess
import sys

import pytest

from peers import REPO


def test_ruff():
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache",
                        "--output-format", "concise", "."],
                       cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    if r.returncode != 0:
        pytest.fail("ruff check failed:\n{}{}".format(r.stdout, r.stderr), pytrace=False)
