"""`apply_patch`: a unified diff (as `git diff` writes it) applied through git, all or nothing.

The work is in workspace/patch.py, shared with the code that brings an `m2_task` result
back into the user's working tree.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from m2_mcp import budget
from m2_mcp.errors import ToolError, UsageError
from m2_mcp.repo import Repo
from m2_mcp.tools.registry import tool
from m2_mcp.workspace.patch import apply_patch_text


class PatchResult(BaseModel):
    applied: bool = Field(description="true when the files were changed (false with check=true)")
    check: bool = Field(description="true when the patch was only validated")
    files: list[str] = Field(description="paths the patch touches (old and new names of renames)")
    summary: list[str] = Field(description="files created, deleted, renamed, or whose mode changed (git apply --summary)")
    note: str | None = None


@tool(read_only=False)
def apply_patch(
    repo: Repo,
    patch: Annotated[str, Field(description="a unified diff as `git diff` writes it (several files, new files, "
                                            "deletions, renames, mode changes; paths relative to the repository root)")],
    check: Annotated[bool, Field(description="only check that the patch applies; change nothing")] = False,
) -> PatchResult:
    """Apply a unified diff to the working tree through `git apply`, all or nothing: new files, deletions,
    renames and mode changes included; check=true only validates. On failure no file changes and the error
    names the file and hunk. Hunks with damaged whitespace or wrong line counts are placed when git can."""
    try:
        outcome = apply_patch_text(repo, patch, check=check)
    except UsageError as exc:  # not a git repository (the patch goes through git)
        raise ToolError(str(exc)) from None
    notes = []
    if outcome.options:
        notes.append(f"placed with git apply {' '.join(outcome.options)} (the patch's whitespace, line counts "
                     "or context did not match exactly)")
    files, room = [], budget.output_chars() // 3  # a third for the files, a third for the summary
    for path in outcome.files:
        room -= len(path) + 4
        if room < 0:
            notes.append(f"{len(outcome.files) - len(files)} more files not listed")
            break
        files.append(path)
    summary, cut = budget.truncate("\n".join(outcome.summary), budget.output_chars() // 3)
    summary = summary.splitlines() if cut else outcome.summary
    return PatchResult(applied=not check, check=check, files=files, summary=summary,
                       note="; ".join(notes) or None)
