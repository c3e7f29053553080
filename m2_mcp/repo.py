"""The repository a server or agent works on, and the one place where paths are checked."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from m2_mcp.errors import ToolError, UsageError

DEFAULT_TEST_CMD = "python -m pytest -q"
_TEST_FILE = re.compile(r"(^|/)(test_[^/]*\.py|[^/]*_test\.py|conftest\.py)$")


@dataclass
class Repo:
    """A repo root plus the policies every tool call obeys."""

    root: Path
    test_cmd: str = DEFAULT_TEST_CMD
    protect_tests: bool = False  # the agent sets this unless --allow-test-edits

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
        if write and self.protect_tests and self.is_test_file(rel.as_posix()):
            raise ToolError(
                f"refused: {rel.as_posix()} is a test file; fix the code, not the tests "
                "(run with --allow-test-edits to permit test edits)"
            )
        return resolved

    def rel(self, path: Path) -> str:
        """The repo-relative POSIX form of an absolute path inside the root."""
        rel = Path(path).resolve().relative_to(self.root).as_posix()
        return rel or "."

    @staticmethod
    def is_test_file(rel: str) -> bool:
        rel = rel.replace(os.sep, "/")
        return bool(_TEST_FILE.search(rel)) or rel.startswith("tests/") or "/tests/" in rel
