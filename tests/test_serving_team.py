"""Serving M2 for a team: every manifest `model k8s` prints validates against Kubernetes' own schemas
(kubernetes-validate bundles them), the router and multi-node objects hang together, and the team
plan's arithmetic matches hand-computed values."""

from __future__ import annotations

import copy
import json
import shlex

import jsonschema
import kubernetes_validate
import pytest
import yaml

from conftest import run_cli
from m2_mcp.serving.engine import EngineSpec
from m2_mcp.serving.k8s import multinode_args
from m2_mcp.serving.plan import WINDOW, make_team_plan

# The oldest Kubernetes still commonly run, and the newest kubernetes-validate knows.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())

# LeaderWorkerSet (leaderworkerset.x-k8s.io/v1) is a CRD, so Kubernetes' schemas don't have it. This schema
# is written from the LWS v1 API (kubernetes-sigs/lws v0.9.0: api/leaderworkerset/v1/leaderworkerset_types.go
# and the CRD it generates; field names, required fields and enums as published there), for the fields
# the manifest uses; unknown fields are refused. The pod templates inside are then checked against
# Kubernetes' own PodTemplateSpec schema (validate_lws below).
_POD_TEMPLATE = {"type": "object", "required": ["spec"], "additionalProperties": False,
                 "properties": {"metadata": {"type": "object"}, "spec": {"type": "object"}}}
_INT_OR_STRING = {"anyOf": [{"type": "integer"}, {"type": "string"}]}
LWS_SCHEMA = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "leaderworkerset.x-k8s.io/v1"},
        "kind": {"const": "LeaderWorkerSet"},
        "metadata": {"type": "object"},
        "spec": {"type": "object", "required": ["leaderWorkerTemplate"], "additionalProperties": False, "properties": {
            "replicas": {"type": "integer", "minimum": 0},
            "startupPolicy": {"enum": ["LeaderCreated", "LeaderReady"]},
            "networkConfig": {"type": "object", "required": ["subdomainPolicy"],
                              "properties": {"subdomainPolicy": {"enum": ["Shared", "UniquePerReplica"]}}},
            "rolloutStrategy": {"type": "object", "required": ["type"], "additionalProperties": False, "properties": {
                "type": {"enum": ["RollingUpdate"]},
                "rollingUpdateConfiguration": {"type": "object", "additionalProperties": False, "properties": {
                    "maxSurge": _INT_OR_STRING, "maxUnavailable": _INT_OR_STRING, "partition": {"type": "integer"}}},
            }},
            "leaderWorkerTemplate": {
                "type": "object", "required": ["workerTemplate"], "additionalProperties": False, "properties": {
                    "size": {"type": "integer", "minimum": 1},
                    "restartPolicy": {"enum": ["Default", "RecreateGroupOnPodRestart", "RecreateGroupAfterStart",
                                               "None"]},
                    "leaderTemplate": _POD_TEMPLATE,
                    "workerTemplate": _POD_TEMPLATE,
                    "subGroupPolicy": {"type": "object"},
                    "volumeClaimTemplates": {"type": "array"},
                    "persistentVolumeClaimRetentionPolicy": {"type": "object"},
                }},
        }},
    },
}

# Every kind of manifest `model k8s` prints.
CONFIGS = {
    "one-replica-vllm": [],
    "one-replica-sglang": ["--engine", "sglang", "--gpus", "8"],
    "replicas-router-vllm": ["--replicas", "3"],
    "replicas-router-sglang": ["--engine", "sglang", "--replicas", "2", "--router-policy", "cache_aware"],
    "replicas-plain-service": ["--replicas", "2", "--router", "none"],
    "hpa-router-vllm": ["--gpus", "8", "--hpa", "--max-replicas", "6"],
    "hpa-router-sglang": ["--engine", "sglang", "--hpa"],
    "hpa-plain-service": ["--hpa", "--router", "none", "--cache-host-path", "/data/hf"],
    "multinode-vllm": ["--gpus", "8", "--nodes", "2"],
    "multinode-sglang": ["--engine", "sglang", "--gpus", "8", "--nodes", "2"],
    "multinode-replicas-hpa-router": ["--gpus", "8", "--nodes", "2", "--replicas", "2", "--hpa", "--max-replicas", "3"],
}


def k8s(*args: str) -> list[dict]:
    out = run_cli("model", "k8s", *args, timeout=60)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def validate_lws(doc: dict, version: str) -> None:
    jsonschema.validate(doc, LWS_SCHEMA)
    for key in ("leaderTemplate", "workerTemplate"):  # a PodTemplate is Kubernetes' wrapper of a PodTemplateSpec
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": doc["metadata"],
                                      "template": doc["spec"]["leaderWorkerTemplate"][key]}, version, strict=True)


def validate(doc: dict, version: str) -> None:
    if doc["kind"] == "LeaderWorkerSet":
        validate_lws(doc, version)
    else:
        kubernetes_validate.validate(doc, version, strict=True)


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[dict], kind: str, name: str) -> dict:
    return next(d for d in by_kind(docs, kind) if d["metadata"]["name"] == name)


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# ---- every manifest validates ----------------------------------------------------------------


@pytest.mark.parametrize("config", list(CONFIGS))
def test_every_manifest_validates_against_the_kubernetes_schemas(config):
    docs = k8s(*CONFIGS[config])
    for version in K8S_VERSIONS:
        for doc in docs:
            validate(doc, version)


def test_the_validation_catches_a_broken_manifest():
    docs = k8s("--gpus", "8", "--nodes", "2", "--replicas", "2")
    router = named(docs, "Deployment", "minimax-m2-router")
    broken = copy.deepcopy(router)
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken, K8S_VERSIONS[-1])
    lws = by_kind(docs, "LeaderWorkerSet")[0]
    for mutate in (lambda d: d["spec"]["leaderWorkerTemplate"].update(restartPolicy="Always"),
                   lambda d: d["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0].update(gpus=8),
                   lambda d: d["spec"].update(size=2)):
        bad = copy.deepcopy(lws)
        mutate(bad)
        with pytest.raises((jsonschema.ValidationError, kubernetes_validate.ValidationError)):
            validate(bad, K8S_VERSIONS[-1])


# ---- the router ------------------------------------------------------------------------------


def test_replicas_get_vllm_router_in_front_and_the_url_stays_the_same():
    docs = k8s("--replicas", "3", "--namespace", "ml")
    plain = k8s("--namespace", "ml")
    engine = named(docs, "Deployment", "minimax-m2")
    assert engine["spec"]["replicas"] == 3
    engine_pod = engine["spec"]["template"]
    router = named(docs, "Deployment", "minimax-m2-router")
    router_pod = router["spec"]["template"]
    # M2_BASE_URL is http://minimax-m2.ml:8000/v1 with or without the router: the same Service name and port.
    service = named(docs, "Service", "minimax-m2")
    assert service["spec"]["ports"][0]["port"] == named(plain, "Service", "minimax-m2")["spec"]["ports"][0]["port"]
    assert selects(service["spec"]["selector"], router_pod["metadata"]["labels"])
    assert not selects(service["spec"]["selector"], engine_pod["metadata"]["labels"])
    assert len(by_kind(docs, "Service")) == 1
    # The router's own argument parser accepts the arguments, and they find the engine pods, not itself.
    from vllm_router.launch_router import parse_router_args

    container = router_pod["spec"]["containers"][0]
    parsed = parse_router_args(container["args"])
    assert parsed.policy == "consistent_hash" and parsed.service_discovery
    assert parsed.service_discovery_namespace == "ml"
    assert parsed.service_discovery_port == engine_pod["spec"]["containers"][0]["ports"][0]["containerPort"]
    assert selects(parsed.selector, engine_pod["metadata"]["labels"])
    assert not selects(parsed.selector, router_pod["metadata"]["labels"])
    assert container["command"][:2] == ["sh", "-c"] and "vllm-router==" in container["command"][2]
    # RBAC: the router's ServiceAccount may watch pods in its namespace, nothing more.
    account = router_pod["spec"]["serviceAccountName"]
    binding = by_kind(docs, "RoleBinding")[0]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": "ml"}]
    role = named(docs, "Role", binding["roleRef"]["name"])
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]


def test_the_hpa_scales_the_engine_not_the_router():
    docs = k8s("--hpa", "--min-replicas", "2", "--max-replicas", "5")
    hpa = by_kind(docs, "HorizontalPodAutoscaler")[0]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "minimax-m2"}
    assert named(docs, "Deployment", "minimax-m2")["spec"]["replicas"] == 2
    assert named(docs, "Deployment", "minimax-m2-router")["spec"]["replicas"] == 1
    plain = k8s("--hpa", "--router", "none")
    assert not any(d["metadata"]["name"].endswith("-router") for d in plain)


def test_router_none_keeps_the_plain_service():
    docs = k8s("--replicas", "2", "--router", "none")
    assert [d["kind"] for d in docs] == ["PersistentVolumeClaim", "Deployment", "Service"]
    service, engine = docs[2], docs[1]
    assert selects(service["spec"]["selector"], engine["spec"]["template"]["metadata"]["labels"])
    assert docs[0]["spec"]["accessModes"] == ["ReadWriteMany"]  # two replicas share the model cache


# ---- multi-node ------------------------------------------------------------------------------


def test_one_instance_across_two_nodes_is_a_leader_worker_set():
    docs = k8s("--gpus", "8", "--nodes", "2", "--hpa", "--min-replicas", "2", "--max-replicas", "3",
               "--", "--max-num-seqs", "16")
    lws = by_kind(docs, "LeaderWorkerSet")[0]
    template = lws["spec"]["leaderWorkerTemplate"]
    assert template["size"] == 2 and lws["spec"]["replicas"] == 2
    assert template["restartPolicy"] == "RecreateGroupOnPodRestart"
    leader = template["leaderTemplate"]["spec"]["containers"][0]
    worker = template["workerTemplate"]["spec"]["containers"][0]
    # the default image is vLLM 0.11.2: its reasoning parser follows the tag
    spec = EngineSpec(gpus=8, host="0.0.0.0", extra=("--max-num-seqs", "16"), vllm_version="0.11.2")
    assert leader["args"] == multinode_args(spec, 2, leader=True)
    assert worker["args"] == multinode_args(spec, 2, leader=False)
    # TP8 (+ expert parallel) inside each node, PP2 across them; the worker serves no HTTP.
    joined = " ".join(leader["args"])
    assert "--tensor-parallel-size 8 --enable-expert-parallel" in joined
    assert "--pipeline-parallel-size 2 --nnodes 2 --node-rank $(LWS_WORKER_INDEX) --master-addr $(LWS_LEADER_ADDRESS)" in joined
    assert leader["args"][-2:] == ["--max-num-seqs", "16"]  # the user's flags still come last
    assert worker["args"][-3:] == ["--headless", "--max-num-seqs", "16"]
    assert "readinessProbe" in leader and "readinessProbe" not in worker and "ports" not in worker
    assert leader["resources"]["limits"]["nvidia.com/gpu"] == worker["resources"]["limits"]["nvidia.com/gpu"] == 8
    # Traffic and autoscaling go to the leaders (the HPA sees the leaders' metrics).
    hpa = by_kind(docs, "HorizontalPodAutoscaler")[0]["spec"]["scaleTargetRef"]
    assert hpa == {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet", "name": "minimax-m2"}
    from vllm_router.launch_router import parse_router_args

    router = named(docs, "Deployment", "minimax-m2-router")["spec"]["template"]["spec"]["containers"][0]
    selector = parse_router_args(router["args"]).selector
    assert selects(selector, template["leaderTemplate"]["metadata"]["labels"])
    assert not selects(selector, template["workerTemplate"]["metadata"]["labels"])
    assert by_kind(docs, "PersistentVolumeClaim")[0]["spec"]["accessModes"] == ["ReadWriteMany"]


def test_sglang_across_two_nodes_is_one_tensor_parallel_group():
    docs = k8s("--engine", "sglang", "--gpus", "8", "--nodes", "2")
    template = by_kind(docs, "LeaderWorkerSet")[0]["spec"]["leaderWorkerTemplate"]
    args = template["leaderTemplate"]["spec"]["containers"][0]["args"]
    assert args[args.index("--tp-size") + 1] == "16" and args[args.index("--ep-size") + 1] == "16"
    assert " ".join(args).count("--dist-init-addr $(LWS_LEADER_ADDRESS):") == 1
    service = by_kind(docs, "Service")[0]
    assert selects(service["spec"]["selector"], template["leaderTemplate"]["metadata"]["labels"])
    assert not selects(service["spec"]["selector"], template["workerTemplate"]["metadata"]["labels"])


@pytest.mark.parametrize("args, message", [
    (["--nodes", "0"], "--nodes"), (["--replicas", "0"], "--replicas"), (["--port", "70000"], "--port"),
    (["--port", "0"], "--port"), (["--max-model-len", "-5"], "--max-model-len"), (["--name", "Bad_Name!"], "--name"),
    (["--name", "m" * 41], "--name"), (["--namespace", "x y"], "--namespace"), (["--cache-size", "abc"], "--cache-size"),
    (["--vllm-version", "abc"], "--vllm-version"),
])
def test_bad_k8s_values_are_one_line_errors(args: list[str], message: str):
    out = run_cli("model", "k8s", *args, timeout=60)
    assert out.returncode == 2 and out.stdout == "", out.stdout
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("m2-mcp: error: ") and message in line


def test_a_vllm_version_outside_the_tested_range_is_said():
    out = run_cli("model", "serve", "--dry-run", "--vllm-version", "0.5.0", timeout=60)
    assert out.returncode == 0 and "--reasoning-parser minimax_m2_append_think" in out.stdout
    assert "outside the tested range (0.11.2 to 0.33.0)" in out.stderr


# ---- the team plan ---------------------------------------------------------------------------
# Per instance: usable = GPUs x (GB x 0.9 - 8 reserved); KV GB = usable - 220 (weights);
# KV tokens = KV GB / 240 GB x 1M; runs per instance = KV tokens // context; replicas = ceil(runs / that).


def test_team_plan_4_x_96_gb():
    # usable 4 x (86.4 - 8) = 313.6 GB; KV 93.6 GB = 390,000 tokens; 390,000 // 131,072 = 2 runs per instance;
    # 8 runs -> ceil(8 / 2) = 4 replicas = 16 GPUs. Two nodes of 4 GPUs are not weighed (use --gpus 8 nodes).
    p = make_team_plan(8, 131_072, 4, 96)
    assert (p.usable_gb, p.kv_gb, p.kv_tokens) == (313.6, 93.6, 390_000)
    assert (p.nodes, p.runs_per_instance, p.replicas, p.total_gpus) == (1, 2, 4, 16)
    assert p.fits and p.multinode == ""
    assert p.k8s_command == ["m2-mcp", "model", "k8s", "--engine", "vllm", "--gpus", "4", "--replicas", "4",
                             "--max-model-len", "131072", "--", "--max-num-seqs", "2", "--gpu-memory-utilization",
                             "0.9", "--enable-chunked-prefill"]


def test_team_plan_8_x_141_gb():
    # usable 8 x (126.9 - 8) = 951.2 GB; KV 731.2 GB = 3,046,666 tokens; 3,046,666 // 196,608 = 15 per instance;
    # 32 runs -> ceil(32 / 15) = 3 replicas = 24 GPUs. On 2 nodes: 16 x 118.9 = 1,902.4 GB; KV 1,682.4 GB =
    # 7,010,000 tokens -> 35 runs per instance -> 1 replica = 16 GPUs: fewer, so the plan says multi-node pays.
    p = make_team_plan(32, WINDOW, 8, 141)
    assert (p.usable_gb, p.kv_gb, p.kv_tokens) == (951.2, 731.2, 3_046_666)
    assert (p.nodes, p.runs_per_instance, p.replicas, p.total_gpus) == (1, 15, 3, 24)
    assert p.multinode.startswith("worth it") and "16 GPUs in all instead of 24" in p.multinode
    two = make_team_plan(32, WINDOW, 8, 141, nodes=2)
    assert (two.usable_gb, two.kv_gb, two.kv_tokens) == (1902.4, 1682.4, 7_010_000)
    assert (two.runs_per_instance, two.replicas, two.total_gpus) == (35, 1, 16)


def test_team_plan_2_x_8_x_80_gb():
    # usable 16 x (72 - 8) = 1,024 GB; KV 804 GB = 3,350,000 tokens; 3,350,000 // 196,608 = 17 per instance;
    # 32 runs -> ceil(32 / 17) = 2 instances of 2 nodes = 32 GPUs. One node: 8 x 64 = 512 GB; KV 292 GB =
    # 1,216,666 tokens -> 6 per instance -> 6 replicas = 48 GPUs.
    p = make_team_plan(32, WINDOW, 8, 80, nodes=2)
    assert (p.usable_gb, p.kv_gb, p.kv_tokens) == (1024.0, 804.0, 3_350_000)
    assert (p.nodes, p.runs_per_instance, p.replicas, p.total_gpus) == (2, 17, 2, 32)
    assert "32 GPUs in all instead of 48" in p.multinode
    assert p.k8s_command[:10] == ["m2-mcp", "model", "k8s", "--engine", "vllm", "--gpus", "8", "--nodes", "2",
                                  "--replicas"]
    one = make_team_plan(32, WINDOW, 8, 80, nodes=1)
    assert (one.kv_tokens, one.runs_per_instance, one.replicas, one.total_gpus) == (1_216_666, 6, 6, 48)


def test_team_plan_says_when_two_nodes_are_needed():
    # 8 x 40 GB: 8 x (36 - 8) = 224 GB; KV 4 GB = 16,666 tokens < one run of 131,072 -> 2 nodes:
    # 448 GB; KV 228 GB = 950,000 tokens -> 7 runs per instance.
    p = make_team_plan(4, 131_072, 8, 40)
    assert p.fits and (p.nodes, p.kv_tokens, p.runs_per_instance, p.replicas) == (2, 950_000, 7, 1)
    assert p.multinode.startswith("needed") and "16,666 tokens" in p.multinode
    assert not make_team_plan(4, 131_072, 8, 40, nodes=1).fits
    assert not make_team_plan(1, 300_000, 8, 141).fits


def test_team_plan_cli_shows_the_arithmetic_and_its_command_deploys():
    out = run_cli("model", "plan", "--gpus", "8", "--gpu-mem", "80", "--nodes", "2", "--runs", "32", timeout=60)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "MiniMax's vLLM deployment guide" in text
    assert "16 x (80 GB x 0.9 - 8 GB reserved) = 1,024.0 GB" in text
    assert "804.0 / 240 x 1M = 3,350,000 tokens" in text
    assert "3,350,000 // 196,608 = 17" in text and "ceil(32 / 17) = 2 -> 2 x 16 = 32 GPUs" in text
    command = shlex.split(text.strip().splitlines()[-1])
    assert command[:3] == ["m2-mcp", "model", "k8s"]
    docs = k8s(*command[3:])
    lws = by_kind(docs, "LeaderWorkerSet")[0]
    assert lws["spec"]["replicas"] == 2 and lws["spec"]["leaderWorkerTemplate"]["size"] == 2
    args = lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"][0]["args"]
    assert args[args.index("--max-num-seqs") + 1] == "17" and args[args.index("--max-model-len") + 1] == str(WINDOW)
    assert by_kind(docs, "Role")  # two replicas: the router is in front
    for doc in docs:
        validate(doc, K8S_VERSIONS[-1])
    as_json = json.loads(run_cli("model", "plan", "--gpus", "8", "--gpu-mem", "80", "--runs", "32", "--json",
                                 timeout=60).stdout)
    assert as_json["nodes"] == 1 and as_json["total_gpus"] == 48 and as_json["multinode"].startswith("worth it")


def test_team_plan_bad_input_is_one_line():
    for args in (["--runs", "0"], ["--runs", "4", "--concurrency", "2"], ["--nodes", "-1"]):
        out = run_cli("model", "plan", "--gpus", "8", "--gpu-mem", "80", *args, timeout=60)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    small = run_cli("model", "plan", "--gpus", "4", "--gpu-mem", "24", "--runs", "2", timeout=60)
    assert small.returncode == 1 and "fits: no:" in small.stdout


def test_nodes_asked_for_but_not_needed_are_said_so():
    p = make_team_plan(1, 196_608, 8, 80, nodes=2)
    assert p.fits and p.nodes == 2 and p.multinode.startswith("as asked (--nodes 2); not needed")
