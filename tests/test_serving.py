"""`m2-mcp model serve|plan|k8s`: the engine command, the memory plan, the manifest, and a real
serve -> ready -> tool call -> Ctrl-C cycle against a fake `vllm` that runs the M2 stand-in."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from _mcp import free_port
from conftest import ROOT, pid_gone, run_cli
from m2_mcp.serving.engine import EngineSpec, engine_args
from m2_mcp.serving.plan import WINDOW, make_plan

FAKE_VLLM = f"{shlex.quote(sys.executable)} {shlex.quote(str(ROOT / 'tests' / 'fake_engine.py'))}"
# The deployment guides' commands (MiniMax vLLM/SGLang guides), then what serve adds.
GUIDE = {
    ("vllm", 4): "vllm serve MiniMaxAI/MiniMax-M2 --trust-remote-code --tensor-parallel-size 4 "
                 "--enable-auto-tool-choice --tool-call-parser minimax_m2 --reasoning-parser minimax_m2_append_think",
    ("vllm", 8): "vllm serve MiniMaxAI/MiniMax-M2 --trust-remote-code --tensor-parallel-size 8 --enable-expert-parallel "
                 "--enable-auto-tool-choice --tool-call-parser minimax_m2 --reasoning-parser minimax_m2_append_think",
    ("sglang", 4): "-m sglang.launch_server --model-path MiniMaxAI/MiniMax-M2 --trust-remote-code --tp-size 4 "
                   "--tool-call-parser minimax-m2 --reasoning-parser minimax-append-think --enable-metrics",
    ("sglang", 8): "-m sglang.launch_server --model-path MiniMaxAI/MiniMax-M2 --trust-remote-code --tp-size 8 "
                   "--ep-size 8 --tool-call-parser minimax-m2 --reasoning-parser minimax-append-think --enable-metrics",
}


NO_OVERRIDES = {"M2_MCP_VLLM": "", "M2_MCP_SGLANG": ""}  # the real engine names, whatever the caller's env


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env={**NO_OVERRIDES, **(env or {})}, timeout=60)


# ---- serve --dry-run ------------------------------------------------------------------------


def fake_vllm_install(tmp_path, version: str) -> dict[str, str]:
    """A `vllm` executable on PATH whose Python reports vLLM `version` in its package metadata."""
    site, bin_dir = tmp_path / "site", tmp_path / "bin"
    (site / f"vllm-{version}.dist-info").mkdir(parents=True)
    (site / f"vllm-{version}.dist-info" / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n")
    bin_dir.mkdir()
    exe = bin_dir / "vllm"
    exe.write_text(f"#!{sys.executable}\nraise SystemExit('not a real vllm')\n")
    exe.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": f"{ROOT}:{site}"}


@pytest.mark.parametrize("version,parser", [("0.11.2", "minimax_m2_append_think"), ("0.33.0", "minimax_m2")])
def test_serve_picks_the_reasoning_parser_that_keeps_think_end_on_the_installed_vllm(tmp_path, version, parser):
    out = _cli("model", "serve", "--dry-run", env=fake_vllm_install(tmp_path, version))
    assert out.returncode == 0, out.stderr
    assert f"--reasoning-parser {parser} " in out.stdout


def test_k8s_picks_the_reasoning_parser_from_the_image_tag_or_the_flag():
    def parser_of(*args):
        out = _cli("model", "k8s", *args)
        assert out.returncode == 0, out.stderr
        container = next(d for d in yaml.safe_load_all(out.stdout) if d["kind"] == "Deployment")[
            "spec"]["template"]["spec"]["containers"][0]
        return container["args"][container["args"].index("--reasoning-parser") + 1]
    assert parser_of() == "minimax_m2_append_think"  # the default image is vLLM 0.11.2
    assert parser_of("--image", "vllm/vllm-openai:v0.33.0") == "minimax_m2"
    assert parser_of("--image", "vllm/vllm-openai:latest", "--vllm-version", "0.11.2") == "minimax_m2_append_think"


def test_the_serve_extra_is_pinned_to_the_tested_vllm_range():
    import tomllib

    from m2_mcp.serving.parsers import SERVE_REQUIREMENT
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["serve"] == [SERVE_REQUIREMENT]
    assert f"NEWEST_TESTED_VLLM" in (ROOT / ".ci" / "run").read_text()  # CI installs the same pin


@pytest.mark.parametrize("engine,gpus", list(GUIDE))
def test_dry_run_prints_the_guides_command(engine, gpus):
    # the guides were written for vLLM 0.11.x, where append_think is the parser that keeps </think>
    out = _cli("model", "serve", "--dry-run", "--engine", engine, "--gpus", str(gpus), "--vllm-version", "0.11.2")
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    assert line.startswith("SAFETENSORS_FAST_GPU=1 ")
    expected = GUIDE[(engine, gpus)] + " --host 127.0.0.1 --port 8000"
    if engine == "vllm":
        assert line == f"SAFETENSORS_FAST_GPU=1 {expected}"
    else:  # run with the interpreter m2-mcp runs on
        assert line == f"SAFETENSORS_FAST_GPU=1 {shlex.quote(sys.executable)} {expected}"


def test_dry_run_options_and_pass_through_are_shell_quoted():
    out = _cli("model", "serve", "--dry-run", "--gpus", "8", "--host", "0.0.0.0", "--port", "9000",
               "--served-model-name", "m2", "--max-model-len", "131072", "--model", "/models/M2 copy",
               "--", "--compilation-config", '{"cudagraph_mode": "PIECEWISE"}')
    assert out.returncode == 0, out.stderr
    argv = shlex.split(out.stdout)
    assert argv[:4] == ["SAFETENSORS_FAST_GPU=1", "vllm", "serve", "/models/M2 copy"]
    joined = " ".join(argv)
    for part in ("--host 0.0.0.0 --port 9000", "--served-model-name m2", "--max-model-len 131072",
                 "--tensor-parallel-size 8 --enable-expert-parallel"):
        assert part in joined
    assert argv[-2:] == ["--compilation-config", '{"cudagraph_mode": "PIECEWISE"}']


def test_serve_without_engine_installed_names_the_extra(tmp_path):
    out = _cli("model", "serve", env={"PATH": str(tmp_path)})  # no `vllm` anywhere on PATH
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "m2-mcp: error: vLLM is not installed (no `vllm` on PATH): pip install 'm2-mcp[serve]'"]


def test_bad_gpu_count_is_a_usage_error():
    out = _cli("model", "serve", "--dry-run", "--gpus", "2")
    assert out.returncode == 2 and "invalid choice" in out.stderr and "Traceback" not in out.stderr


# ---- plan -----------------------------------------------------------------------------------


def test_plan_reproduces_the_documented_configurations():
    four = make_plan(4, 96)
    assert four.fits and abs(four.kv_tokens - 400_000) / 400_000 < 0.05
    eight = make_plan(8, 144)
    assert eight.fits and abs(eight.kv_tokens - 3_000_000) / 3_000_000 < 0.05
    assert four.max_model_len == eight.max_model_len == WINDOW  # capped at M2's window
    assert "--enable-expert-parallel" in eight.engine_args and "--enable-expert-parallel" not in four.engine_args


def test_plan_cli_json_concurrency_and_flags():
    out = _cli("model", "plan", "--gpus", "8", "--gpu-mem", "144", "--concurrency", "32", "--json")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["fits"] and plan["concurrency"] == 32
    assert plan["per_request_tokens"] == plan["kv_tokens"] // 32 < WINDOW
    args = plan["engine_args"]
    assert args[args.index("--max-num-seqs") + 1] == "32"
    assert int(args[args.index("--max-model-len") + 1]) <= plan["per_request_tokens"]
    assert "--enable-chunked-prefill" in args and "--gpu-memory-utilization" in args
    assert plan["command"].startswith("SAFETENSORS_FAST_GPU=1 vllm serve MiniMaxAI/MiniMax-M2 ")
    assert plan["serve_command"][:3] == ["m2-mcp", "model", "serve"]


def test_plan_text_says_what_it_reserves():
    out = _cli("model", "plan", "--gpus", "4", "--gpu-mem", "96")
    assert out.returncode == 0, out.stderr
    assert "reserved" in out.stdout and "390,000 tokens" in out.stdout and "fits: yes" in out.stdout


def test_plan_that_does_not_fit_exits_1_with_the_reason():
    small = _cli("model", "plan", "--gpus", "4", "--gpu-mem", "48")
    assert small.returncode == 1 and "weights (220 GB) do not fit" in small.stdout
    busy = make_plan(4, 96, context=196_608, concurrency=4)
    assert not busy.fits and "lower --concurrency to 1" in busy.reasons[0] and busy.engine_args == []
    too_long = make_plan(8, 144, context=300_000)
    assert not too_long.fits and "window" in too_long.reasons[0]


# ---- k8s ------------------------------------------------------------------------------------


def _kinds(text: str) -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(text) if doc}


def test_k8s_manifest_runs_the_same_engine_args_as_serve():
    out = _cli("model", "k8s", "--gpus", "8", "--namespace", "ml", "--hpa", "--min-replicas", "1",
               "--max-replicas", "3", "--router", "none", "--served-model-name", "m2", "--", "--max-num-seqs", "16")
    assert out.returncode == 0, out.stderr
    docs = _kinds(out.stdout)
    assert set(docs) == {"PersistentVolumeClaim", "Deployment", "Service", "HorizontalPodAutoscaler"}
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"].startswith("vllm/vllm-openai:")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 8
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 8
    image_vllm = container["image"].rsplit(":v", 1)[1]  # same engine args for the same vLLM version
    dry = _cli("model", "serve", "--dry-run", "--gpus", "8", "--host", "0.0.0.0", "--served-model-name", "m2",
               "--vllm-version", image_vllm, "--", "--max-num-seqs", "16")
    assert ["SAFETENSORS_FAST_GPU=1"] + container["command"] + container["args"] == shlex.split(dry.stdout)
    assert {"name": "SAFETENSORS_FAST_GPU", "value": "1"} in container["env"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    assert volumes["model-cache"]["persistentVolumeClaim"]["claimName"] == docs["PersistentVolumeClaim"]["metadata"]["name"]
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/dev/shm"}
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    assert container["startupProbe"]["periodSeconds"] * container["startupProbe"]["failureThreshold"] >= 1800
    assert docs["Service"]["spec"]["ports"][0]["port"] == 8000
    assert all(d["metadata"]["namespace"] == "ml" for d in docs.values())
    hpa = docs["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 3)
    assert hpa["scaleTargetRef"]["name"] == docs["Deployment"]["metadata"]["name"]


def test_k8s_host_path_cache_and_sglang_image():
    out = _cli("model", "k8s", "--engine", "sglang", "--cache-host-path", "/data/hf", "--replicas", "2",
               "--router", "none")
    assert out.returncode == 0, out.stderr
    docs = _kinds(out.stdout)
    assert "PersistentVolumeClaim" not in docs and "HorizontalPodAutoscaler" not in docs
    deployment = docs["Deployment"]
    assert deployment["spec"]["replicas"] == 2
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith("lmsysorg/sglang:")
    assert container["command"] == ["python3", "-m", "sglang.launch_server"]
    assert container["args"] == engine_args(EngineSpec(engine="sglang", host="0.0.0.0"))
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["model-cache"]["hostPath"]["path"] == "/data/hf"


@pytest.mark.parametrize("example", sorted(p.name for p in (ROOT / "examples" / "k8s").glob("*.yaml")))
def test_k8s_examples_are_what_their_command_prints(example):
    text = (ROOT / "examples" / "k8s" / example).read_text()
    command = shlex.split(text.splitlines()[0].removeprefix("# Generated by: "))
    assert command[:3] == ["m2-mcp", "model", "k8s"]
    out = _cli(*command[1:])
    assert list(yaml.safe_load_all(text)) == list(yaml.safe_load_all(out.stdout))


# ---- serve against a fake engine ------------------------------------------------------------


def _start_serve(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / "serve.err"
    env = {**os.environ, "M2_MCP_VLLM": FAKE_VLLM, "M2_API_KEY": "sk-secret-do-not-print"}
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "m2_mcp", "model", "serve", "--port", str(free_port()), "--timeout", "60", *extra],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, text=True)
    return proc, log


def _readline(stream, timeout: float) -> str:
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return got[0] if got else ""


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_serve_starts_waits_checks_a_tool_call_and_stops_cleanly(tmp_path, stop):
    proc, log = _start_serve(tmp_path, "--served-model-name", "m2-test")
    try:
        ready = _readline(proc.stdout, 90)
        assert ready.startswith("ready: export M2_BASE_URL=http://127.0.0.1:"), (ready, log.read_text())
        assert ready.rstrip().endswith("/v1 M2_MODEL=m2-test")
        text = log.read_text()
        assert "INFO loading weights (pretend)" in text  # the engine's log is streamed to stderr
        assert "✓ tool call" in text and "✓ tool parser" in text and "✓ thinking" in text
        engine_pid = int(re.search(r"fake vllm pid (\d+)", text).group(1))
        worker_pid = int(re.search(r"fake vllm worker pid (\d+)", text).group(1))
        assert not pid_gone(engine_pid) and not pid_gone(worker_pid)
        proc.send_signal(stop)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "stopping the engine" in text and "sk-secret-do-not-print" not in text
    assert pid_gone(engine_pid) and pid_gone(worker_pid)  # the whole process group went


def test_serve_reports_an_engine_that_exits_early(tmp_path):
    proc, log = _start_serve(tmp_path, "--", "--fake-exit-early")
    assert proc.wait(timeout=60) == 1
    assert proc.stdout.read() == ""
    text = log.read_text()
    assert "m2-mcp: error: the engine exited with code 1 before it was ready; last log lines:" in text
    assert "  | ERROR fake vllm: bad start: asked to fail" in text
    assert "Traceback" not in text
