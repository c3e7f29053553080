"""The README's test command works on a fresh clone with nothing beside it (no project notes next to the clone, no data outside the repo)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the source checkout (git) of m2-mcp")


def test_a_fresh_clone_collects_every_test_on_its_own(tmp_path: Path):
    # Only what is committed goes into the clone, and the clone sits alone in an empty directory.
    clone = tmp_path / "alone" / "m2-mcp"
    subprocess.run(["git", "clone", "-q", "--no-local", str(ROOT), str(clone)], check=True)
    assert not (clone.parent.parent / "shared").exists() and sorted(os.listdir(clone.parent)) == ["m2-mcp"]
    env = {**os.environ, "PYTHONPATH": str(clone)}
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q"], cwd=clone, env=env,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    found = re.search(r"(\d+) tests? collected", done.stdout)
    assert found and int(found.group(1)) > 100, done.stdout[-2000:]


def test_nothing_in_the_repo_points_outside_it():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    outside = re.compile(r"\.\./shared|/work/shared")
    hits = [name for name in files
            if (ROOT / name).is_file() and name != "tests/test_fresh_clone.py"
            and outside.search((ROOT / name).read_text(errors="replace"))]
    assert hits == []
