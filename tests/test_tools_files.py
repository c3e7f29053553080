"""File tools through the registry, on real git repos: read, write, edit, multi_edit, find_files."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import make_repo
from m2_mcp.errors import ToolError
from m2_mcp.repo import Repo
from m2_mcp.rg import find_rg
from m2_mcp.fsops import _umask
from m2_mcp.globs import compile_glob
from m2_mcp.tools import edits, registry
from m2_mcp.tools.files import MAX_FOUND_FILES

pytestmark = pytest.mark.anyio

CLASS_SRC = (
    "class Account:\n"
    "    def deposit(self, amount):\n"
    "        self.balance += amount\n"
    "\n"
    "    def withdraw(self, amount):\n"
    "        self.balance -= amount\n"
)


@pytest.fixture
def repo(git_repo: Path) -> Repo:
    (git_repo / "account.py").write_text(CLASS_SRC)
    return Repo(git_repo)


async def call(repo: Repo, name: str, **args):
    return await registry.call(repo, name, args)


async def refused(repo: Repo, name: str, **args) -> str:
    with pytest.raises(ToolError) as info:
        await registry.call(repo, name, args)
    return str(info.value)


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and ".git" not in p.parts}


# --------------------------------------------------------------------------- read_file


async def test_read_numbers_lines_and_pages_on(repo: Repo):
    (repo.root / "ten.txt").write_text("".join(f"line {i}\n" for i in range(1, 11)))
    whole = await call(repo, "read_file", path="ten.txt")
    assert whole["content"].splitlines()[0] == "     1\tline 1"
    assert (whole["start_line"], whole["end_line"], whole["total_lines"]) == (1, 10, 10)
    assert whole["truncated"] is False and whole["next_offset"] is None

    page = await call(repo, "read_file", path="ten.txt", offset=4, limit=3)
    assert page["content"] == "     4\tline 4\n     5\tline 5\n     6\tline 6"
    assert page["truncated"] is True and page["next_offset"] == 7
    assert "offset=7" in page["note"]

    last = await call(repo, "read_file", path="ten.txt", offset=page["next_offset"], limit=100)
    assert (last["start_line"], last["end_line"], last["truncated"]) == (7, 10, False)

    assert "10 lines" in await refused(repo, "read_file", path="ten.txt", offset=11)


async def test_read_stops_at_the_output_budget_on_a_whole_line(repo: Repo, monkeypatch):
    monkeypatch.setenv("M2_MCP_OUTPUT_TOKENS", "500")  # 2000 characters
    (repo.root / "big.txt").write_text("".join(f"row {i:04d} " + "x" * 30 + "\n" for i in range(1, 1001)))
    out = await call(repo, "read_file", path="big.txt")
    assert len(out["content"]) <= 2000
    lines = out["content"].split("\n")
    assert len(lines) == out["end_line"] and lines[-1].endswith("x" * 30)
    assert out["truncated"] and out["next_offset"] == out["end_line"] + 1
    assert "budget" in out["note"] and f"offset={out['next_offset']}" in out["note"]


async def test_read_cuts_long_lines_and_decodes_bad_utf8(repo: Repo):
    (repo.root / "long.txt").write_bytes(b"a" * 5000 + b"\r\nbad \xff byte\r\n")
    out = await call(repo, "read_file", path="long.txt")
    first, second = out["content"].split("\n")
    assert first.startswith("     1\t" + "a" * 2000) and "3000 more characters" in first
    assert second == "     2\tbad \ufffd byte"
    assert "cut" in out["note"] and out["truncated"] is False


async def test_read_refuses_binary_missing_and_directories(repo: Repo):
    (repo.root / "blob.bin").write_bytes(b"\x89PNG\x00\x00data")
    assert "binary" in await refused(repo, "read_file", path="blob.bin")
    assert "nope.py" in await refused(repo, "read_file", path="nope.py")
    assert "directory" in await refused(repo, "read_file", path="tests")


async def test_read_empty_file(repo: Repo):
    (repo.root / "empty.txt").write_text("")
    out = await call(repo, "read_file", path="empty.txt")
    assert out["content"] == "" and out["total_lines"] == 0 and not out["truncated"]


# --------------------------------------------------------------------------- write_file


async def test_write_creates_dirs_and_adds_final_newline(repo: Repo):
    out = await call(repo, "write_file", path="pkg/sub/new.py", content="x = 1")
    assert out == {"path": "pkg/sub/new.py", "bytes_written": 6, "created": True}
    assert (repo.root / "pkg/sub/new.py").read_bytes() == b"x = 1\n"
    again = await call(repo, "write_file", path="pkg/sub/new.py", content="y = 2\n")
    assert again["created"] is False and (repo.root / "pkg/sub/new.py").read_text() == "y = 2\n"
    await call(repo, "write_file", path="empty.txt", content="")
    assert (repo.root / "empty.txt").read_bytes() == b""
    assert not [p for p in (repo.root / "pkg/sub").iterdir() if p.name.endswith(".m2tmp")]


async def test_write_keeps_file_mode(repo: Repo):
    script = repo.root / "run.sh"
    script.write_text("echo hi\n")
    script.chmod(0o750)
    await call(repo, "write_file", path="run.sh", content="echo bye")
    assert stat.S_IMODE(script.stat().st_mode) == 0o750
    await call(repo, "edit_file", path="run.sh", old_string="bye", new_string="again")
    assert stat.S_IMODE(script.stat().st_mode) == 0o750
    assert script.read_text() == "echo again\n"


# --------------------------------------------------------------------------- edit_file


async def test_edit_unique_match_returns_diff(repo: Repo):
    out = await call(repo, "edit_file", path="calc.py", old_string="return a + b", new_string="return a - b")
    assert out["replacements"] == 1 and out["path"] == "calc.py"
    assert "-    return a + b" in out["diff"] and "+    return a - b" in out["diff"]
    assert (repo.root / "calc.py").read_text() == "def add(a, b):\n    return a - b\n"


async def test_edit_no_match_shows_closest_lines_and_changes_nothing(repo: Repo):
    before = snapshot(repo.root)
    msg = await refused(repo, "edit_file", path="account.py",
                        old_string="def withdraw(self, amt):\n        self.balance -= amt", new_string="pass")
    assert "not found" in msg
    assert "     5\t    def withdraw(self, amount):" in msg
    assert snapshot(repo.root) == before


async def test_edit_several_matches_names_lines_and_changes_nothing(repo: Repo):
    before = snapshot(repo.root)
    msg = await refused(repo, "edit_file", path="account.py", old_string="self.balance", new_string="self.total")
    assert "2 times" in msg and "lines 3, 6" in msg and "replace_all" in msg
    assert snapshot(repo.root) == before


async def test_edit_replace_all(repo: Repo):
    out = await call(repo, "edit_file", path="account.py", old_string="self.balance",
                     new_string="self.total", replace_all=True)
    assert out["replacements"] == 2
    assert (repo.root / "account.py").read_text() == CLASS_SRC.replace("self.balance", "self.total")


async def test_edit_refusals_leave_the_file_alone(repo: Repo):
    before = snapshot(repo.root)
    assert "identical" in await refused(repo, "edit_file", path="calc.py", old_string="a", new_string="a")
    assert "write_file" in await refused(repo, "edit_file", path="calc.py", old_string="", new_string="x")
    assert "not found: missing.py" in await refused(repo, "edit_file", path="missing.py",
                                                     old_string="x", new_string="y")
    (repo.root / "blob.bin").write_bytes(b"a\x00b")
    assert "binary" in await refused(repo, "edit_file", path="blob.bin", old_string="a", new_string="c")
    assert snapshot(repo.root) == {**before, "blob.bin": b"a\x00b"}


async def test_edit_with_stripped_strings_keeps_indentation(repo: Repo):
    """vLLM strips argument values: the method's indentation and trailing newline are gone."""
    old = "    def withdraw(self, amount):\n        self.balance -= amount\n"
    new = "    def withdraw(self, amount):\n        if amount > self.balance:\n            raise ValueError(amount)\n        self.balance -= amount\n"
    await call(repo, "edit_file", path="account.py", old_string=old.strip(), new_string=new.strip())
    assert (repo.root / "account.py").read_text() == CLASS_SRC.replace(old, new)


async def test_edit_falls_back_to_stripped_match(repo: Repo):
    # a tab where the file has spaces, and a trailing blank line the file does not have
    old = "\tdef withdraw(self, amount):\n        self.balance -= amount\n\n"
    new = "\tdef withdraw(self, amount):\n        self.balance -= 2 * amount\n\n"
    out = await call(repo, "edit_file", path="account.py", old_string=old, new_string=new)
    assert out["replacements"] == 1
    assert (repo.root / "account.py").read_text() == CLASS_SRC.replace("-= amount", "-= 2 * amount")


async def test_edit_deleting_whole_lines_leaves_no_stray_blank_line(repo: Repo):
    await call(repo, "edit_file", path="account.py",
               old_string="def deposit(self, amount):\n        self.balance += amount", new_string="")
    assert (repo.root / "account.py").read_text() == (
        "class Account:\n\n    def withdraw(self, amount):\n        self.balance -= amount\n")
    (repo.root / "lines.txt").write_text("a\n    b\nc\n")
    await call(repo, "edit_file", path="lines.txt", old_string="b\n", new_string="")
    assert (repo.root / "lines.txt").read_text() == "a\nc\n"


async def test_edit_crlf_file_with_lf_strings(repo: Repo):
    (repo.root / "win.txt").write_bytes(b"one\r\ntwo\r\nthree\r\n")
    await call(repo, "edit_file", path="win.txt", old_string="one\ntwo", new_string="one\n2")
    assert (repo.root / "win.txt").read_bytes() == b"one\r\n2\r\nthree\r\n"


async def test_edit_keeps_undecodable_bytes(repo: Repo):
    (repo.root / "latin1.txt").write_bytes(b"caf\xe9 = 1\nend\n")
    out = await call(repo, "edit_file", path="latin1.txt", old_string="= 1", new_string="= 2")
    assert (repo.root / "latin1.txt").read_bytes() == b"caf\xe9 = 2\nend\n"
    assert "+caf\ufffd = 2" in out["diff"]
    json.dumps(out).encode("utf-8")  # no lone surrogates reach the result


async def test_edit_keeps_final_newline(repo: Repo):
    (repo.root / "end.txt").write_text("first\nlast\n")
    await call(repo, "edit_file", path="end.txt", old_string="last\n", new_string="final")
    assert (repo.root / "end.txt").read_text() == "first\nfinal\n"


# --------------------------------------------------------------------------- multi_edit


async def test_multi_edit_later_edit_sees_earlier_one(repo: Repo):
    out = await call(repo, "multi_edit", edits=[
        {"path": "calc.py", "old_string": "def add(a, b):", "new_string": "def plus(a, b):"},
        {"path": "calc.py", "old_string": "def plus(a, b):\n    return a + b",
         "new_string": "def plus(a, b):\n    return b + a"},
        {"path": "account.py", "old_string": "class Account:", "new_string": "class Wallet:"},
    ])
    assert out["edits"] == 3 and out["files_changed"] == ["calc.py", "account.py"]
    assert (repo.root / "calc.py").read_text() == "def plus(a, b):\n    return b + a\n"
    assert (repo.root / "account.py").read_text().startswith("class Wallet:\n")
    assert "+++ b/calc.py" in out["diff"] and "+++ b/account.py" in out["diff"]


async def test_multi_edit_failure_leaves_every_file_byte_identical(repo: Repo):
    (repo.root / "b.py").write_text("B = 1\n")
    before = snapshot(repo.root)
    msg = await refused(repo, "multi_edit", edits=[
        {"path": "calc.py", "old_string": "a + b", "new_string": "a * b"},
        {"path": "account.py", "old_string": "Account", "new_string": "Wallet"},
        {"path": "b.py", "old_string": "B = 2", "new_string": "B = 3"},
        {"path": "new_file.py", "old_string": "", "new_string": "created = True"},
    ])
    assert msg.startswith("edit 3 of 4 (b.py): old_string not found")
    assert "no file was changed" in msg.splitlines()[0] and "     1\tB = 1" in msg
    assert snapshot(repo.root) == before


async def test_multi_edit_creates_files_and_accepts_edits_as_json_text(repo: Repo):
    edits = [{"path": "pkg/new.py", "old_string": "", "new_string": "X = 1"},
             {"path": "pkg/new.py", "old_string": "X = 1", "new_string": "X = 2"}]
    out = await call(repo, "multi_edit", edits=json.dumps(edits))
    assert out["files_changed"] == ["pkg/new.py"] and "--- /dev/null" in out["diff"]
    assert (repo.root / "pkg/new.py").read_text() == "X = 2\n"


async def test_multi_edit_refuses_empty_and_bad_items(repo: Repo):
    assert "empty" in await refused(repo, "multi_edit", edits=[])
    msg = await refused(repo, "multi_edit", edits=[{"path": "calc.py", "old_string": "a"}])
    assert msg.startswith("invalid arguments:") and "new_string" in msg


def test_multi_edit_schema_shows_edit_fields():
    schema = registry.load_all()["multi_edit"].input_schema()
    edit = schema["$defs"]["Edit"]
    assert set(edit["properties"]) == {"path", "old_string", "new_string", "replace_all"}
    assert set(edit["required"]) == {"path", "old_string", "new_string"}
    assert schema["properties"]["edits"]["type"] == "array"


def test_failed_write_midway_restores_written_files(repo: Repo):
    """A write that fails after others succeeded puts the earlier files back (and removes created ones)."""
    root = repo.root
    before = snapshot(root)
    (root / "blocker").mkdir()
    (root / "blocker/keep.txt").write_text("k\n")  # os.replace onto a non-empty directory fails
    changes = [
        edits._FileChange(root / "calc.py", "calc.py", (root / "calc.py").read_text(), "changed\n"),
        edits._FileChange(root / "fresh/dir/new.py", "fresh/dir/new.py", None, "new\n"),
        edits._FileChange(root / "blocker", "blocker", "", "oops\n"),
    ]
    with pytest.raises(ToolError, match="cannot write blocker"):
        edits._commit(repo, changes)
    assert snapshot(root) == {**before, "blocker/keep.txt": b"k\n"}
    assert not (root / "fresh").exists()


# --------------------------------------------------------------------------- confinement


@pytest.fixture
def outside(tmp_path: Path, repo: Repo) -> Path:
    target = tmp_path / "outside"
    target.mkdir()
    (target / "secret.txt").write_text("secret\n")
    (repo.root / "link_file").symlink_to(target / "secret.txt")
    (repo.root / "link_dir").symlink_to(target)
    return target


ESCAPES = ["../outside/secret.txt", "/etc/passwd", "link_file", "link_dir/secret.txt", ".git/config"]


@pytest.mark.parametrize("bad", ESCAPES)
async def test_every_path_tool_refuses_escapes(repo: Repo, outside: Path, bad: str):
    git_config = (repo.root / ".git/config").read_bytes()
    secret = (outside / "secret.txt").read_bytes()
    calls = [
        ("read_file", {"path": bad}),
        ("write_file", {"path": bad, "content": "pwned"}),
        ("edit_file", {"path": bad, "old_string": "secret", "new_string": "pwned"}),
        ("multi_edit", {"edits": [{"path": "calc.py", "old_string": "a + b", "new_string": "a - b"},
                                  {"path": bad, "old_string": "secret", "new_string": "pwned"}]}),
        ("find_files", {"pattern": "*", "path": bad.rsplit("/", 1)[0] if "/" in bad else bad}),
    ]
    for name, args in calls:
        msg = await refused(repo, name, **args)
        assert "outside the repository" in msg or ".git/" in msg, (name, msg)
    assert (repo.root / ".git/config").read_bytes() == git_config
    assert (outside / "secret.txt").read_bytes() == secret
    assert (repo.root / "calc.py").read_text() == "def add(a, b):\n    return a + b\n"


async def test_protected_test_files_refused_only_when_asked(repo: Repo):
    guarded = Repo(repo.root, protect_tests=True)
    test_file = "tests/test_calc.py"
    before = snapshot(repo.root)
    for name, args in [
        ("write_file", {"path": "tests/test_new.py", "content": "x"}),
        ("write_file", {"path": "conftest.py", "content": "x"}),
        ("edit_file", {"path": test_file, "old_string": "== 5", "new_string": "== 6"}),
        ("multi_edit", {"edits": [{"path": "calc.py", "old_string": "a + b", "new_string": "a - b"},
                                  {"path": test_file, "old_string": "== 5", "new_string": "== 6"}]}),
    ]:
        assert "test file" in await refused(guarded, name, **args)
    assert snapshot(repo.root) == before
    assert "assert add" in (await call(guarded, "read_file", path=test_file))["content"]
    await call(repo, "edit_file", path=test_file, old_string="== 5", new_string="== 6")
    assert "== 6" in (repo.root / test_file).read_text()


async def test_invalid_arguments_are_tool_errors(repo: Repo):
    assert "offset" in await refused(repo, "read_file", path="calc.py", offset="abc")
    assert "path" in await refused(repo, "read_file")
    assert "extra" in (await refused(repo, "read_file", path="calc.py", lines=3)).lower()
    assert "content" in await refused(repo, "write_file", path="x.py")
    assert "replace_all" in await refused(repo, "edit_file", path="calc.py", old_string="a",
                                          new_string="b", replace_all="maybe")
    assert "edits" in await refused(repo, "multi_edit", edits="not json")
    assert "pattern" in await refused(repo, "find_files", pattern=["*.py"])


# --------------------------------------------------------------------------- find_files


@pytest.fixture(params=["rg", "fallback"])
def rg_mode(request, monkeypatch):
    if request.param == "fallback":
        monkeypatch.setenv("M2_MCP_RG", "none")
    else:
        monkeypatch.delenv("M2_MCP_RG", raising=False)
    find_rg.cache_clear()
    if request.param == "rg" and not find_rg():
        pytest.skip("ripgrep not installed")
    yield request.param
    find_rg.cache_clear()


TREE = {
    "top.py": "", ".hidden.py": "", "notes.log": "", "README.md": "",
    "src/m.py": "", "src/a.ts": "", "src/a/n.py": "", "src/a/b/o.py": "", "src/a/b/c.ts": "",
    "x/src/q.py": "", "tests/test_x.py": "", "ignored/i.py": "", ".github/w/ci.yml": "",
}
PATTERNS = ["*.py", "src/*.py", "src/**/*.py", "**/test_*.py", "**/*.ts", "*.{py,ts}", "src/**",
            "**/src/*.py", "[st]*.py", "/top.py", ".github/**", "src", "*", "*.log", "?op.py"]


@pytest.fixture(scope="module")
def tree_repo(tmp_path_factory) -> Repo:
    root = make_repo(tmp_path_factory.mktemp("find") / "repo",
                     {**TREE, ".gitignore": "ignored/\n*.log\n"}, commit=False)
    (root / "link.py").symlink_to(root / "top.py")
    return Repo(root)


async def test_find_files_respects_gitignore_and_skips_git(tree_repo: Repo, rg_mode: str):
    every = (await call(tree_repo, "find_files", pattern="*"))["files"]
    assert "top.py" in every and ".github/w/ci.yml" in every and ".gitignore" in every
    assert not [f for f in every if f.startswith((".git/", "ignored/")) or f.endswith(".log")]
    out = await call(tree_repo, "find_files", pattern="*.py", path="src")
    assert out["files"] == ["src/a/b/o.py", "src/a/n.py", "src/m.py"] and out["total"] == 3
    assert (await call(tree_repo, "find_files", pattern="a/*.py", path="src"))["files"] == ["src/a/n.py"]
    none = await call(tree_repo, "find_files", pattern="*.rs")
    assert none["files"] == [] and "no files" in none["note"]


async def test_find_files_rg_and_fallback_agree(tree_repo: Repo, monkeypatch):
    answers = {}
    for mode in ("rg", "none"):
        monkeypatch.setenv("M2_MCP_RG", "none") if mode == "none" else monkeypatch.delenv("M2_MCP_RG", raising=False)
        find_rg.cache_clear()
        if mode == "rg" and not find_rg():
            pytest.skip("ripgrep not installed")
        answers[mode] = {p: (await call(tree_repo, "find_files", pattern=p))["files"] for p in PATTERNS}
    find_rg.cache_clear()
    assert answers["rg"] == answers["none"]
    assert answers["rg"]["src/*.py"] == ["src/m.py"]
    assert answers["rg"]["**/src/*.py"] == ["src/m.py", "x/src/q.py"]


async def test_find_files_caps_results(repo: Repo, rg_mode: str):
    many = repo.root / "many"
    many.mkdir()
    for i in range(MAX_FOUND_FILES + 20):
        (many / f"f{i:04d}.txt").touch()
    out = await call(repo, "find_files", pattern="*.txt")
    assert out["total"] == MAX_FOUND_FILES + 20 and len(out["files"]) == MAX_FOUND_FILES
    assert out["truncated"] and "narrow" in out["note"] and out["files"][0] == "many/f0000.txt"


async def test_find_files_bad_path_and_glob(repo: Repo, rg_mode: str):
    assert "not found" in await refused(repo, "find_files", pattern="*", path="nowhere")
    assert "not a directory" in await refused(repo, "find_files", pattern="*", path="calc.py")
    assert "invalid glob" in await refused(repo, "find_files", pattern="src/{a,b")


def test_glob_basics():
    assert compile_glob("*.py").match("deep/er/x.py")
    assert not compile_glob("src/*.py").match("src/a/x.py")
    assert compile_glob("src/**/*.py").match("src/x.py")
    assert compile_glob("[!a]*.py").match("b.py") and not compile_glob("[!a]*.py").match("a.py")
    assert not compile_glob("build/").match("build/x")
    assert compile_glob("build/", subtree=True).match("build/x") and compile_glob("*.{py,ts}").match("a/b.ts")
    many = "*a" * 12 + "*b"  # past the regex threshold: the NFA path
    assert compile_glob(many).match("a" * 12 + "b") and not compile_glob(many).match("a" * 3000)
    assert compile_glob("**/x/*a*a*a*c", subtree=True).match("q/x/aaac/deeper/file")


def test_umask_probe_matches_the_shell():
    shell = subprocess.run(["sh", "-c", "umask"], capture_output=True, text=True, check=True).stdout
    assert _umask() == int(shell.strip(), 8)
