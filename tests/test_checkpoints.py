"""Checkpoints and undo: no user work lost, byte for byte and mode for mode.

The real `m2-mcp fix` (driven by the scripted M2 stand-in) and the real `m2-mcp undo`, as
subprocesses, on real temp git repos with submodules, nested clones, CRLF files, 0600 files,
merge conflicts and ignored files.
"""

from __future__ import annotations

import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import make_repo, run_cli
from standin import start_standin
from test_fix_e2e import BUGGY, FIX, READ, TESTS, fix, fixing_turns, git


def shell(command: str) -> dict:
    return {"name": "shell", "arguments": {"command": command}}


def turns_with(*calls: dict) -> list[dict]:
    """The agent runs `calls` first, then fixes calc.py as usual."""
    return [*({"think": "First this.", "tool_calls": [c]} for c in calls), *fixing_turns()[1:]]


def state(repo: Path) -> dict:
    """Every file's bytes and permission bits (links as links), outside .git and tool caches."""
    files = {}
    for dirpath, dirnames, filenames in os.walk(repo):
        dirnames[:] = [d for d in dirnames if d not in (".git", ".pytest_cache", "__pycache__")]
        for name in [*filenames, *(d for d in dirnames if os.path.islink(os.path.join(dirpath, d)))]:
            path = Path(dirpath, name)
            rel = path.relative_to(repo).as_posix()
            st = path.lstat()
            files[rel] = ("link", os.readlink(path)) if stat.S_ISLNK(st.st_mode) else \
                (path.read_bytes(), stat.S_IMODE(st.st_mode))
    return files


def checkpoint_refs(repo: Path) -> list[str]:
    return git(repo, "for-each-ref", "--format=%(refname)", "refs/m2-mcp/").split()


def undo(repo: Path, *extra: str) -> subprocess.CompletedProcess:
    proc = run_cli("undo", "--repo", str(repo), *extra)
    assert "Traceback" not in proc.stderr
    return proc


def with_submodule(tmp_path: Path) -> Path:
    upstream = make_repo(tmp_path / "upstream", {"lib.py": "VALUE = 1\n"})
    repo = make_repo(tmp_path / "proj", BUGGY)
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(upstream), "sub")
    git(repo, "commit", "-qm", "add submodule")
    git(repo, "clone", "-q", str(upstream), "nested")  # an untracked nested clone
    (repo / "nested" / "work.txt").write_text("uncommitted work in the nested clone\n")
    return repo


@pytest.mark.parametrize("corrupt", [False, True], ids=["submodule", "corrupted-sub-gitfile"])
def test_submodules_and_nested_clones_are_left_alone(tmp_path: Path, corrupt: bool):
    repo = with_submodule(tmp_path)
    if corrupt:
        (repo / "sub" / ".git").write_text("garbage, not a gitfile\n")
    before = state(repo)
    with start_standin({"scripts": [{"turns": fixing_turns()}]}, tmp_path) as m2:
        proc, result = fix(repo, m2.base_url)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert result["status"] == "fixed" and result["files_changed"] == ["calc.py"]
    assert "sub" not in result["diff"] and "nested" not in result["diff"]
    done = undo(repo)
    assert done.returncode == 0 and len(done.stdout.strip().splitlines()) == 1, done.stdout + done.stderr
    assert state(repo) == before  # submodule, nested clone (its .git too) and the fix's file as they were
    assert git(repo / "nested", "status", "--porcelain") == "?? work.txt\n"


@pytest.mark.parametrize("eol", ["text=auto", "core.autocrlf"])
def test_bytes_and_modes_come_back_exactly(tmp_path: Path, eol: str):
    repo = make_repo(tmp_path / "proj", {**BUGGY, ".gitignore": ".env\n", "run.sh": "#!/bin/sh\necho hi\n"})
    if eol == "text=auto":
        (repo / ".gitattributes").write_text("* text=auto\n")
        git(repo, "add", ".gitattributes")
    else:
        git(repo, "config", "core.autocrlf", "true")
    (repo / "data.txt").write_bytes(b"one\r\ntwo\r\n")
    (repo / "hidden.txt").write_bytes(b"x\r\ny\r\n")
    git(repo, "add", "data.txt", "hidden.txt")
    git(repo, "commit", "-qm", "crlf files")
    (repo / "data.txt").write_bytes(b"one\r\ntwo\r\n")  # CRLF in the working tree, as a Windows editor leaves it
    (repo / "hidden.txt").write_bytes(b"x\r\ny\r\n")
    (repo / ".env").write_text("API_TOKEN=mine\n")
    os.chmod(repo / ".env", 0o600)
    os.chmod(repo / "run.sh", 0o755)
    before, index_before = state(repo), git(repo, "ls-files", "-s")
    vandal = shell("printf 'three\\r\\n' >> data.txt; printf 'x\\ny\\n' > hidden.txt; "
                   "echo AGENT > .env; chmod 644 .env run.sh")
    with start_standin({"scripts": [{"turns": turns_with(vandal)}]}, tmp_path) as m2:
        proc, result = fix(repo, m2.base_url)
    assert result["status"] == "fixed", proc.stderr
    # the diff is byte-exact: the CRLF -> LF rewrite git would normalise away is a change
    assert sorted(result["files_changed"]) == ["calc.py", "data.txt", "hidden.txt", "run.sh"]
    assert "three\r" in result["diff"]
    assert stat.S_IMODE((repo / ".env").stat().st_mode) == 0o644
    done = undo(repo)
    assert done.returncode == 0, done.stderr
    assert state(repo) == before  # bytes (CRLF kept), .env 0600, run.sh 0755
    assert git(repo, "ls-files", "-s") == index_before


def test_a_file_replaced_by_an_empty_directory_comes_back_and_a_lost_big_ignored_file_is_named(tmp_path: Path):
    repo = make_repo(tmp_path / "proj", {**BUGGY, ".gitignore": "build/\n", "script.sh": "#!/bin/sh\necho hi\n"})
    (repo / "build").mkdir()
    (repo / "build" / "big.bin").write_bytes(b"x" * (3 << 20))  # too large for a checkpoint to copy
    before = state(repo)
    vandal = shell("rm script.sh && mkdir script.sh && rm build/big.bin")
    with start_standin({"scripts": [{"turns": turns_with(vandal)}]}, tmp_path) as m2:
        proc, result = fix(repo, m2.base_url)
    assert result["status"] == "fixed", proc.stderr
    done = undo(repo)
    assert done.returncode == 1  # not everything is back, and it says which
    assert "1 git-ignored file(s) the run deleted were too large" in done.stdout and "build/big.bin" in done.stdout
    assert "m2-mcp undo " in done.stdout and "brings it back" in done.stdout
    after = state(repo)
    assert after["script.sh"] == before["script.sh"]  # the empty directory in its place held nothing
    assert {k: v for k, v in after.items() if k != "build/big.bin"} == \
        {k: v for k, v in before.items() if k != "build/big.bin"}


def test_a_merge_conflict_index_is_restored_with_its_stages(tmp_path: Path):
    repo = make_repo(tmp_path / "proj", {**BUGGY, "notes.txt": "base\n"})
    git(repo, "checkout", "-qb", "other")
    (repo / "notes.txt").write_text("theirs\n")
    git(repo, "commit", "-qam", "theirs")
    git(repo, "checkout", "-q", "main")
    (repo / "notes.txt").write_text("ours\n")
    git(repo, "commit", "-qam", "ours")
    merge = subprocess.run(["git", "-C", str(repo), "merge", "other"], capture_output=True, text=True)
    assert merge.returncode == 1 and "CONFLICT" in merge.stdout
    unmerged, staged, before = git(repo, "ls-files", "-u"), git(repo, "ls-files", "-s"), state(repo)
    assert unmerged.count("\n") == 3
    with start_standin({"scripts": [{"turns": fixing_turns()}]}, tmp_path) as m2:
        proc, result = fix(repo, m2.base_url)
    assert result["status"] == "fixed", proc.stderr
    (repo / "notes.txt").write_text("resolved\n")
    git(repo, "add", "notes.txt")  # the index changes after the checkpoint: the conflict is gone
    assert git(repo, "ls-files", "-u") == ""
    done = undo(repo)
    assert done.returncode == 0, done.stderr
    assert git(repo, "ls-files", "-u") == unmerged and git(repo, "ls-files", "-s") == staged
    assert state(repo) == before
    assert (repo / ".git" / "MERGE_HEAD").exists()


def test_undo_deletes_only_files_the_run_created_and_keeps_secrets_out_of_refs(tmp_path: Path):
    repo = make_repo(tmp_path / "proj", {**BUGGY, ".gitignore": "*.log\n.env\nbig/\n"})
    (repo / "debug.log").write_text("my ignored log\n")
    (repo / ".env").write_text("API_TOKEN=s3cret-value\n")
    (repo / "big").mkdir()
    (repo / "big" / "blob.bin").write_bytes(os.urandom(2 << 20))  # too large to copy: not deleted either
    (repo / "mine.txt").write_text("untracked, mine\n")
    before = state(repo)
    agent = shell("printf '' > .gitignore; echo 'def helper(): pass' > helper.py; echo agent > extra.txt; "
                  "mkdir -p gen/deep && echo x > gen/deep/out.txt; echo agent-log > agent.log")
    with start_standin({"scripts": [{"turns": turns_with(agent)}]}, tmp_path) as m2:
        proc, result = fix(repo, m2.base_url)
    assert result["status"] == "fixed", proc.stderr
    # files ignored when the run started are not part of its result, though the run un-ignored them
    assert ".env" not in result["files_changed"] and "debug.log" not in result["files_changed"]
    assert "s3cret-value" not in result["diff"] and "agent.log" in result["files_changed"]
    # the ignored secret is in no object any ref reaches, and its record is private
    secret = git(repo, "hash-object", "--no-filters", ".env").strip()
    assert secret not in git(repo, "rev-list", "--objects", "--all")
    assert len(checkpoint_refs(repo)) == 1
    records = repo / ".git" / "m2-mcp" / "checkpoints"
    assert stat.S_IMODE(records.stat().st_mode) == 0o700
    # the user keeps working: edits one of the agent's files and creates one of their own
    (repo / "extra.txt").write_text("now mine too\n")
    (repo / "later.txt").write_text("written after the run\n")
    done = undo(repo)
    assert done.returncode == 0, done.stderr
    assert "removed 3 file(s)" in done.stdout and "left 2 file(s)" in done.stdout
    after = state(repo)
    assert after.pop("extra.txt")[0] == b"now mine too\n" and after.pop("later.txt")[0] == b"written after the run\n"
    assert after == before  # helper.py, gen/, agent.log gone; debug.log, .env, big/, mine.txt kept
    # the run had un-ignored .env: the checkpoint undo took first keeps it out of refs all the same
    assert secret not in git(repo, "rev-list", "--objects", "--all")
    # and undo can itself be undone: the safety checkpoint has the agent's files
    again = undo(repo, checkpoint_refs(repo)[-1].removeprefix("refs/m2-mcp/checkpoints/"))
    assert again.returncode == 0 and (repo / "helper.py").exists()


def test_no_checkpoint_when_nothing_changed(tmp_path: Path):
    repo = make_repo(tmp_path / "proj", BUGGY)
    (repo / "notes.txt").write_text("untracked\n")
    looker = [{"think": "Look only.", "tool_calls": [READ]}, {"think": "Give up.", "text": "Cannot fix."}]
    with start_standin({"scripts": [{"turns": looker}]}, tmp_path) as m2:
        proc, result = fix(repo, m2.base_url)
    assert result["status"] == "failed" and result["files_changed"] == [], proc.stderr
    assert checkpoint_refs(repo) == [] and not any((repo / ".git" / "m2-mcp" / "checkpoints").iterdir())
    assert undo(repo).returncode == 2


def test_pruning_keeps_the_newest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from m2_mcp.workspace import create_checkpoint, list_checkpoints

    repo = make_repo(tmp_path / "proj", BUGGY)
    monkeypatch.setenv("M2_MCP_CHECKPOINTS_KEEP", "3")
    monkeypatch.setenv("GIT_COMMITTER_DATE", "2001-01-01T00:00:00Z")  # far older than the age limit
    create_checkpoint(repo, "ancient")
    monkeypatch.delenv("GIT_COMMITTER_DATE")
    assert [c["label"] for c in list_checkpoints(repo)] == ["ancient"]  # the newest always stays
    made = []
    for i in range(5):
        (repo / "calc.py").write_text(f"# {i}\n")
        made.append(create_checkpoint(repo, f"run {i}").ref)
    assert [c["ref"] for c in list_checkpoints(repo)] == made[:1:-1]
    records = sorted(p.name for p in (repo / ".git" / "m2-mcp" / "checkpoints").iterdir())
    assert records == sorted(r.removeprefix("refs/m2-mcp/checkpoints/") for r in made[2:])
    monkeypatch.setenv("M2_MCP_CHECKPOINTS_KEEP", "none")
    proc = run_cli("undo", "--repo", str(repo))
    assert proc.returncode == 2 and "M2_MCP_CHECKPOINTS_KEEP" in proc.stderr and proc.stderr.count("\n") == 1


def test_the_test_guard_survives_a_fifo_and_a_dev_zero_link(tmp_path: Path):
    repo = make_repo(tmp_path / "proj", BUGGY)
    os.mkfifo(repo / "tests" / "test_x.py")
    (repo / "tests" / "test_zero.py").symlink_to("/dev/zero")
    with start_standin({"scripts": [{"turns": fixing_turns()}]}, tmp_path) as m2:
        proc, result = fix(repo, m2.base_url, "--test-cmd", f"{sys.executable} -m pytest -q tests/test_calc.py",
                           timeout=300)
    assert proc.returncode == 0 and result["status"] == "fixed", proc.stderr
    assert stat.S_ISFIFO((repo / "tests" / "test_x.py").lstat().st_mode)
    assert os.readlink(repo / "tests" / "test_zero.py") == "/dev/zero"


def test_kill_9_at_random_points_leaves_a_checkpoint_undo_restores(tmp_path: Path):
    repo = make_repo(tmp_path / "proj", {**BUGGY, "data.txt": "data\n", "gone.txt": "will be deleted\n"})
    (repo / "notes.txt").write_text("untracked notes\n")
    (repo / "calc.py").write_text(BUGGY["calc.py"] + "# my edit\n")
    git(repo, "add", "calc.py")
    agent = shell("echo changed >> data.txt; rm gone.txt; chmod 600 notes.txt")
    slow = [{"think": "Work.", "tool_calls": [agent], "delay": 0.3}, {"think": "Read.", "tool_calls": [READ]},
            {"think": "Fix.", "tool_calls": [FIX], "delay": 0.3}, {"think": "Test.", "tool_calls": [TESTS]},
            {"think": "Done.", "text": "Fixed."}]
    rng = random.Random(11)
    before, index_before, restored = state(repo), git(repo, "ls-files", "-s"), 0
    with start_standin({"scripts": [{"turns": slow}]}, tmp_path) as m2:
        for _ in range(5):
            refs_before = checkpoint_refs(repo)
            proc = subprocess.Popen([sys.executable, "-m", "m2_mcp", "fix", "--repo", str(repo), "--base-url",
                                     m2.base_url], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    start_new_session=True)
            for _ in range(rng.randint(0, 6)):  # a random phase: progress lines are its milestones
                proc.stderr.readline()
            time.sleep(rng.uniform(0, 1.5))
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            proc.stderr.close()
            new = [r for r in checkpoint_refs(repo) if r not in refs_before]
            if new:
                done = undo(repo, new[0].removeprefix("refs/m2-mcp/checkpoints/"))
                assert done.returncode == 0, done.stdout + done.stderr
                restored += 1
            assert state(repo) == before and git(repo, "ls-files", "-s") == index_before
            assert not list(repo.rglob("*.m2undo-*"))
    assert restored  # some kills came after the checkpoint
