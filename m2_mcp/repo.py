"""The repository a server or agent works on, and the one place where paths are checked."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

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
        return cls(path, **kw)

    def resolve(self, path: str, *, write: bool = False) -> Path:
        """Resolve `path` (relative to the root; symlinks followed) or raise ToolError.

        Refuses anything outside the root and anything inside `.git/`. With `write`,
        also refuses test files when tests are protected.
        """
        if not isinstance(path, str) or not path.strip():
            raise ToolError("path must be a non-empty string")
        if "\x00" in path:
            raise ToolError("path contains a NUL byte")
        candidate = Path(path).expanduser()
        if not candidate.is_absolute():
            candidate = self.root / candidate
        resolved = candidate.resolve()
        try:
            rel = resolved.relative_to(self.root)
        except ValueError:
            raise ToolError(f"path is outside the repository root: {path}") from None
        if rel.parts and rel.parts[0] == ".git":
            raise ToolError(f"path is inside .git/, which tools may not touch: {path}")
        if write and self.protect_tests and self.is_protected(rel.as_posix()):
            raise ToolError(
                f"refused: {rel.as_posix()} is a test file or test configuration; fix the code, not the tests "
                "(run with --allow-test-edits to permit test edits)"
            )
        return resolved

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
