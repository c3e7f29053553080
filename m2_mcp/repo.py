"""The repository a server or agent works on, and the one place where paths are checked."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from m2_mcp import fsops
from m2_mcp.errors import ToolError, UsageError

DEFAULT_TEST_CMD = "python -m pytest -q"
_TEST_FILE = re.compile(r"(^|/)(test_[^/]*\.py|[^/]*_test\.py|conftest\.py)$")
# Files that decide what the tests check or how they run: protected like the tests themselves.
_TEST_CONFIG = {"pytest.ini", ".pytest.ini", "pytest.toml", "tox.ini", "setup.cfg", "pyproject.toml",
                "sitecustomize.py", "usercustomize.py"}
# At the top level these would shadow pytest itself (`python -m pytest` puts the cwd first on sys.path).
_SHADOWS = {"pytest.py", "pytest", "_pytest", "py.py"}


@dataclass
class Repo:
    """A repo root plus the policies every tool call obeys."""

    root: Path
    test_cmd: str = DEFAULT_TEST_CMD
    protect_tests: bool = False  # the agent sets this unless --allow-test-edits
    env: dict[str, str] = field(default_factory=dict)  # extra environment for shell and test commands

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()

    @classmethod
    def open(cls, root: str | os.PathLike[str] | None = None, **kw) -> "Repo":
        """Open a repo root given by the user (`--repo`, `M2_REPO`, or the cwd); UsageError if unusable."""
        path = Path(root or os.environ.get("M2_REPO") or os.getcwd()).expanduser()
        if not path.is_dir():
            raise UsageError(f"repository path is not a directory: {path}")
        repo = cls(path, **kw)
        fsops.clean_temp_files(repo.root)  # what a killed write left behind
        return repo

    def resolve(self, path: str, *, write: bool = False) -> Path:
        """Resolve `path` (relative to the root; symlinks followed) or raise ToolError.

        Refuses anything outside the root and anything inside a `.git` at any depth. With
        `write`, also refuses targets inside a submodule or nested repository (their changes
        would escape this repo's checkpoints and diffs) and, when tests are protected, test files.
        """
        if not isinstance(path, str) or not path.strip():
            raise ToolError("path must be a non-empty string")
        if "\x00" in path:
            raise ToolError("path contains a NUL byte")
        if len(path.encode("utf-8", "surrogateescape")) > 4000 or any(
                len(part.encode("utf-8", "surrogateescape")) > 255 for part in path.split("/")):
            raise ToolError("path too long: a file name has at most 255 bytes, a path at most 4000")
        candidate = Path(path).expanduser()
        if not candidate.is_absolute():
            candidate = self.root / candidate
        resolved = candidate.resolve()
        try:
            rel = resolved.relative_to(self.root)
        except ValueError:
            raise ToolError(f"path is outside the repository root: {path}") from None
        if any(part.lower() == ".git" for part in rel.parts):
            raise ToolError(f"path is inside .git/ (at any depth), which tools may not touch: {path}")
        if write:
            self.refuse_nested(rel)
        if write and self.protect_tests and self.is_protected(rel.as_posix()):
            raise ToolError(
                f"refused: {rel.as_posix()} is a test file or test configuration; fix the code, not the tests "
                "(run with --allow-test-edits to permit test edits)"
            )
        return resolved

    def nested_repo(self, rel: Path) -> str | None:
        """The submodule or nested repository (repo-relative) that contains `rel`, if any."""
        for i in range(1, len(rel.parts) + 1):
            sub = rel.parts[:i]
            if os.path.lexists(self.root.joinpath(*sub, ".git")):
                return "/".join(sub)
        return None

    def refuse_nested(self, rel: Path) -> None:
        sub = self.nested_repo(rel)
        if sub is None:
            return
        what = "a git submodule" if os.path.isfile(self.root / sub / ".git") else "a nested git repository"
        raise ToolError(f"refused: {rel.as_posix()} is inside {sub}/, {what}; its changes would not be in this "
                        "repo's checkpoints or diff, so the file tools do not write there")

    def rel(self, path: Path) -> str:
        """The repo-relative POSIX form of an absolute path inside the root."""
        rel = Path(path).resolve().relative_to(self.root).as_posix()
        return rel or "."

    @classmethod
    def is_protected(cls, rel: str) -> bool:
        """Tests, test configuration, and anything that could stand in for pytest."""
        rel = rel.replace(os.sep, "/")
        parts = rel.split("/")
        return (cls.is_test_file(rel) or parts[-1] in _TEST_CONFIG or parts[0] in _SHADOWS
                or parts[0].startswith("_pytest") or rel.endswith(".pth"))

    @staticmethod
    def is_test_file(rel: str) -> bool:
        rel = rel.replace(os.sep, "/")
        return bool(_TEST_FILE.search(rel)) or rel.startswith("tests/") or "/tests/" in rel
