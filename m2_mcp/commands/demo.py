"""`m2-mcp demo`: the real `fix` on a small buggy repo, against the scripted stand-in (no GPU, no key)."""

from __future__ import annotations

import sys

HELP = "watch the agent fix a small bug: the real 'fix' against a scripted stand-in for M2 (no GPU, no key)"

BANNER = ("m2-mcp demo: the model here is a SCRIPTED STAND-IN for MiniMax-M2 (m2_mcp/standin.py replays a fixed "
          "scenario); the agent, the tools and the test runs are real. No GPU, no key, nothing leaves this machine.")

BUGGY_REPO = {
    "shop/__init__.py": "",
    "shop/cart.py": (
        "def total(prices, discount=0.0):\n"
        '    """The sum of `prices` after a fractional `discount` (0.1 means 10% off)."""\n'
        "    subtotal = sum(prices)\n"
        "    return subtotal - discount\n"
    ),
    "tests/test_cart.py": (
        "from shop.cart import total\n\n\n"
        "def test_no_discount():\n    assert total([5, 5]) == 10\n\n\n"
        "def test_discount():\n    assert total([10, 20], discount=0.1) == 27.0\n\n\n"
        "def test_empty():\n    assert total([]) == 0\n"
    ),
    "pytest.ini": "[pytest]\npythonpath = .\naddopts = -p no:cacheprovider\n",
}
READY = "M2 stand-in listening on "


def add_arguments(parser) -> None:
    parser.add_argument("--keep", action="store_true", help="keep the demo repository (its path is printed)")
    parser.epilog = ("Then try it for real: 'm2-mcp fix --repo YOUR_REPO' against your own vLLM ('m2-mcp model serve'), "
                     "MiniMax's API (M2_BASE_URL=https://api.minimax.io/v1, M2_MODEL=MiniMax-M2, M2_API_KEY) or any "
                     "OpenAI-compatible endpoint: see the README's quick start.")


def run(args) -> int:
    import contextlib
    import io
    import json
    import os
    import shlex
    import shutil
    import tempfile
    from pathlib import Path

    from m2_mcp.cli import build_parser
    from m2_mcp.commands import fix

    print(BANNER, flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="m2-mcp-demo-"))
    # The run's ledger entry, checkpoint state and repo-map cache stay in the demo's directory,
    # and no API key of the user's is sent to the stand-in.
    os.environ.update(M2_MCP_HOME=str(workdir / "state"), M2_MCP_CACHE_DIR=str(workdir / "cache"), M2_API_KEY="EMPTY")
    os.environ.pop("OPENAI_API_KEY", None)
    try:
        repo = make_repo(workdir / "shop")
        print(f"buggy repo: {repo} (shop/cart.py; tests/test_cart.py has a failing test)", flush=True)
        standin = start_standin(workdir)
        try:
            # The tests run with this interpreter: it has pytest (an m2-mcp dependency), whatever is on PATH.
            argv = ["fix", "--repo", str(repo), "--base-url", standin.base_url, "--model", standin.model,
                    "--test-cmd", f"{shlex.quote(sys.executable)} -m pytest -q", "--max-steps", "10",
                    "--timeout", "300"]
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                code = fix.run(build_parser().parse_args(argv))
        finally:
            standin.stop()
    except BaseException:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    result = json.loads(out.getvalue())
    print("\nthe agent's diff:\n" + (result["diff"].rstrip() or "(none)"), flush=True)
    before, after = result["tests_before"], result["tests_after"]
    print(f"\nresult: {result['status']} (tests before: {before['passed']} passed, {before['failed']} failed; "
          f"after: {after['passed']} passed, {after['failed']} failed; {result['steps']} steps, "
          f"{result['tool_calls']} tool calls)")
    print(f"summary: {result['summary']}")
    if args.keep:
        print(f"kept: {repo} (the full result JSON is what 'm2-mcp fix' prints on stdout)")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    print("next: the same against real M2: see 'm2-mcp demo --help' or the README's quick start")
    return code


def make_repo(root):
    """The small buggy project, committed in a fresh git repository."""
    import git

    from m2_mcp.workspace.gitutil import AUTHOR_ENV

    for rel, text in BUGGY_REPO.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    g = git.Repo.init(root)
    g.git.add("-A")
    with g.git.custom_environment(**AUTHOR_ENV):
        g.git.commit("-q", "--no-gpg-sign", "-m", "a small shop with a discount bug")
    return root


class StandIn:
    """The scripted stand-in (python -m m2_mcp.standin) on a free local port, with the shipped scenario."""

    def __init__(self, process, base_url: str, model: str):
        self.process, self.base_url, self.model = process, base_url, model

    def stop(self) -> None:
        import subprocess

        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process.stdout.close()


def start_standin(workdir) -> StandIn:
    import json
    import subprocess
    import threading
    from importlib import resources

    from m2_mcp.errors import M2Error

    scenario = workdir / "scenario.json"
    scenario.write_text(resources.files("m2_mcp").joinpath("data/demo_scenario.json").read_text(encoding="utf-8"))
    model = json.loads(scenario.read_text())["model"]
    process = subprocess.Popen(
        [sys.executable, "-m", "m2_mcp.standin", "--scenario", str(scenario), "--port", "0"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(30)
    if not line or not line[0].startswith(READY):
        StandIn(process, "", model).stop()
        raise M2Error("the demo's stand-in did not start (try 'python -m m2_mcp.standin --help')")
    return StandIn(process, line[0][len(READY):].strip(), model)
