import sys
sys.path.insert(0, "/work/wt/sandbox/tests")
from test_fix_e2e import *
def test_dbg(tmp_path):
    slow = "import os, time\n\ndef test_slow():\n    if not os.path.exists('slept'):\n" \
           "        open('slept', 'w').close()\n        time.sleep(120)\n"
    repo = make_repo(tmp_path / "slow", {**BUGGY, ".gitignore": "slept\n", "tests/test_slow.py": slow})
    proc, result = fix(repo, "http://127.0.0.1:9/v1", "--timeout", "3")
    print(proc.stderr)
    print(result)
    print(sorted(p.name for p in repo.iterdir()))
    assert 0
