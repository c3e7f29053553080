"""The result object of a run (contract section 5): `fix` stdout and the `m2_task` result."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from m2_mcp.redact import redact_obj

from m2_mcp.tools.testing import TestCounts  # the five numbers of tests_before / tests_after

Status = Literal["fixed", "already_passing", "failed", "budget_exhausted", "cancelled", "error"]


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


class RunResult(BaseModel):
    """Built from plain data; secret values (m2_mcp.redact) never reach a result, wherever it goes next."""

    status: Status
    tests_before: TestCounts = Field(default_factory=TestCounts)
    tests_after: TestCounts = Field(default_factory=TestCounts)
    files_changed: list[str] = Field(default_factory=list)
    diff: str = ""
    branch: str | None = None
    commits: list[str] = Field(default_factory=list)
    steps: int = 0
    tool_calls: int = 0
    usage: Usage = Field(default_factory=Usage)
    errors: list[str] = Field(default_factory=list)
    summary: str = ""
    # Where the change went (see README, "the result object"):
    applied: bool | None = Field(default=None, description=(
        "true: the change is in your working tree; false: there is a change that was not applied (see conflicts, "
        "errors, patch and branch); null: nothing to apply, or the result stays on its branch"))
    patch: str | None = Field(default=None, description="path of the saved patch (m2_task without branch), else null")
    conflicts: list[str] = Field(default_factory=list, description=(
        "files you changed meanwhile where the change collides with yours; non-empty means not applied"))

    @model_validator(mode="before")
    @classmethod
    def _without_secrets(cls, data):
        return redact_obj(data) if isinstance(data, dict) else data


def exit_code_for(result: RunResult, endpoint_failed: bool = False) -> int:
    """Contract exit codes: 0 success, 1 not fixed, 3 endpoint unreachable/failing."""
    if result.status in ("fixed", "already_passing"):
        return 0
    if result.status == "error" and endpoint_failed:
        return 3
    return 1
