"""The `repo_map` tool: a ranked outline of the repo's definitions (see m2_mcp/repomap.py)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from m2_mcp import budget
from m2_mcp.errors import ToolError
from m2_mcp.repo import Repo
from m2_mcp.repomap import build_map
from m2_mcp.tools.registry import tool


class RepoMapResult(BaseModel):
    map: str = Field(description="`file:` headers, each followed by its key signature lines")
    files: list[str] = Field(description="files shown, best-ranked first")
    total_files: int = Field(description="source files considered")
    tokens: int
    truncated: bool = Field(description="true when definitions were left out to fit max_tokens")


@tool()
def repo_map(
    repo: Repo,
    paths: list[str] | None = None,
    max_tokens: Annotated[int, Field(ge=1)] = 2048,
) -> RepoMapResult:
    """Ranked outline of the repo: its most-used files with their class and function signatures.
    `paths` (files or directories) focuses the ranking on them and the code they use;
    `max_tokens` bounds the output. Call it first to learn the shape of an unfamiliar repo.
    """
    focus = []
    for path in paths or []:
        resolved = repo.resolve(path)
        if not resolved.exists():
            raise ToolError(f"path not found: {path}")
        focus.append(repo.rel(resolved))
    result = build_map(repo.root, focus=focus, max_tokens=min(max_tokens, budget.output_tokens()))
    return RepoMapResult(
        map=result.map, files=result.files, total_files=result.total_files,
        tokens=result.tokens, truncated=result.truncated,
    )
