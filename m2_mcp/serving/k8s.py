"""Kubernetes manifests for MiniMax-M2: the engine (a Deployment, or a LeaderWorkerSet when one
instance spans several nodes), a model-cache PVC, a Service, an optional HPA, and, with several
replicas, vllm-router in front so each agent run stays on one replica (its prefix cache).

The engine container runs exactly the engine arguments `m2-mcp model serve` would (engine.engine_args);
multi-node adds only the flags that spread one instance over the nodes.
"""

from __future__ import annotations

from dataclasses import replace

import yaml

from m2_mcp.serving.engine import ENV, EngineSpec, engine_args, plain_command
from m2_mcp.serving.launch import with_vllm_version

DEFAULT_IMAGES = {"vllm": "vllm/vllm-openai:v0.11.2", "sglang": "lmsysorg/sglang:v0.5.4.post3"}
CACHE_DIR = "/root/.cache/huggingface"
# Queue length per pod that the HPA aims for (needs a Prometheus adapter exposing the engine metric).
QUEUE_METRIC = {"vllm": "vllm:num_requests_waiting", "sglang": "sglang:num_queue_reqs"}

# vllm-router (PyPI, the vLLM project's router). No official image is published, so the pod installs
# the pinned wheel at start; an image that already has it skips the install (pip finds it satisfied).
ROUTERS = ("vllm-router", "none")
ROUTER_PACKAGE = "vllm-router==0.1.17"
ROUTER_IMAGE = "python:3.11-slim"
# consistent_hash: the same X-Session-Id (one per agent run) always goes to the same replica.
ROUTER_POLICIES = ("consistent_hash", "sticky_least_loaded", "cache_aware", "power_of_two", "round_robin")
ROUTER_METRICS_PORT = 29000
ROUTER_START = f'pip install --no-cache-dir --disable-pip-version-check -q "{ROUTER_PACKAGE}" && exec vllm-router "$@"'

LWS_API = "leaderworkerset.x-k8s.io/v1"
SGLANG_DIST_PORT = 20000  # SGLang's rendezvous port on the leader (--dist-init-addr)


def multinode_args(spec: EngineSpec, nodes: int, leader: bool) -> list[str]:
    """Engine arguments for one pod of an instance spanning `nodes` nodes of `spec.gpus` GPUs (LeaderWorkerSet).

    vLLM (multiprocessing, no Ray; vLLM's multi-node docs): tensor parallel inside a node, pipeline
    parallel across nodes, so only activations cross the network; workers run `--headless`.
    SGLang (its multi-node docs): one tensor-parallel group over all GPUs, `--dist-init-addr` on the leader.
    LWS sets LWS_LEADER_ADDRESS and LWS_WORKER_INDEX in every pod; Kubernetes expands $(VAR) in args.
    """
    rank = ["--node-rank", "$(LWS_WORKER_INDEX)"]
    if spec.engine == "vllm":
        flags = ["--pipeline-parallel-size", str(nodes), "--nnodes", str(nodes), *rank,
                 "--master-addr", "$(LWS_LEADER_ADDRESS)"] + ([] if leader else ["--headless"])
        return engine_args(replace(spec, extra=(*flags, *spec.extra)))
    flags = ["--nnodes", str(nodes), *rank, "--dist-init-addr", f"$(LWS_LEADER_ADDRESS):{SGLANG_DIST_PORT}"]
    args = engine_args(replace(spec, extra=(*flags, *spec.extra)))
    for flag in ("--tp-size", "--ep-size"):  # one TP (and EP) group over every GPU of the instance
        if flag in args:
            args[args.index(flag) + 1] = str(spec.gpus * nodes)
    return args


def _container(spec: EngineSpec, image: str | None, args: list[str], serves_http: bool) -> dict:
    container = {
        "name": "engine",
        "image": image or DEFAULT_IMAGES[spec.engine],
        "command": plain_command(spec.engine),
        "args": args,
        "env": [{"name": k, "value": v} for k, v in ENV.items()] + [
            {"name": "HF_HOME", "value": CACHE_DIR},
            {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token", "optional": True}}},
        ],
        "ports": [{"name": "http", "containerPort": spec.port}],
        "resources": {"requests": {"nvidia.com/gpu": spec.gpus}, "limits": {"nvidia.com/gpu": spec.gpus}},
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}, {"name": "model-cache", "mountPath": CACHE_DIR}],
    }
    if serves_http:
        probe = {"httpGet": {"path": "/health", "port": "http"}}
        # Loading ~220 GB of weights takes a while: allow up to an hour before liveness applies.
        container["startupProbe"] = {**probe, "periodSeconds": 30, "failureThreshold": 120}
        container["readinessProbe"] = {**probe, "periodSeconds": 10, "failureThreshold": 3}
        container["livenessProbe"] = {**probe, "periodSeconds": 30, "failureThreshold": 5}
    else:  # a headless worker of a multi-node instance: no HTTP server
        del container["ports"]
    return container


def _pod_template(spec: EngineSpec, labels: dict, container: dict, cache_volume: dict, shm_size: str) -> dict:
    metadata: dict = {"labels": labels}
    if "ports" in container:
        metadata["annotations"] = {"prometheus.io/scrape": "true", "prometheus.io/port": str(spec.port),
                                   "prometheus.io/path": "/metrics"}
    return {"metadata": metadata, "spec": {
        "containers": [container],
        "volumes": [
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size}},
            {"name": "model-cache", **cache_volume},
        ],
    }}


def _engine(spec: EngineSpec, meta: dict, labels: dict, image: str | None, replicas: int, nodes: int,
            cache_volume: dict, shm_size: str) -> dict:
    """The Deployment (one node per instance) or the LeaderWorkerSet (several)."""
    spec = with_vllm_version(spec, image=image or DEFAULT_IMAGES[spec.engine])  # the parser follows the image
    if nodes == 1:
        container = _container(spec, image, engine_args(spec), serves_http=True)
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                # GPUs are scarce: replace pods one at a time instead of surging extra ones.
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
                "template": _pod_template(spec, labels, container, cache_volume, shm_size),
            },
        }
    leader = _container(spec, image, multinode_args(spec, nodes, leader=True), serves_http=True)
    worker = _container(spec, image, multinode_args(spec, nodes, leader=False), serves_http=False)
    return {
        "apiVersion": LWS_API,
        "kind": "LeaderWorkerSet",
        "metadata": meta,
        "spec": {
            "replicas": replicas,
            "leaderWorkerTemplate": {
                "size": nodes,
                # A lost pod breaks the whole instance (its NCCL group): restart the group together.
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": _pod_template(spec, {**labels, "role": "leader"}, leader, cache_volume, shm_size),
                "workerTemplate": _pod_template(spec, {**labels, "role": "worker"}, worker, cache_volume, shm_size),
            },
            "rolloutStrategy": {"type": "RollingUpdate",
                                "rollingUpdateConfiguration": {"maxSurge": 0, "maxUnavailable": 1}},
        },
    }


def _router(spec: EngineSpec, name: str, namespace: str, serving: dict, policy: str, image: str) -> list[dict]:
    """vllm-router: it finds the serving pods through the Kubernetes API (so it follows the HPA), hence
    a ServiceAccount allowed to watch pods in this namespace."""
    rname = f"{name}-router"
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/component": "router"}
    meta = {"name": rname, "namespace": namespace, "labels": labels}
    args = ["--host", "0.0.0.0", "--port", str(spec.port), "--policy", policy,
            "--service-discovery", "--selector", *[f"{k}={v}" for k, v in serving.items()],
            "--service-discovery-port", str(spec.port), "--service-discovery-namespace", namespace,
            "--prometheus-host", "0.0.0.0", "--prometheus-port", str(ROUTER_METRICS_PORT)]
    container = {
        "name": "router",
        "image": image,
        "command": ["sh", "-c", ROUTER_START, "vllm-router"],
        "args": args,
        "ports": [{"name": "http", "containerPort": spec.port},
                  {"name": "metrics", "containerPort": ROUTER_METRICS_PORT}],
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "4Gi"}},
        "readinessProbe": {"httpGet": {"path": "/readiness", "port": "http"}, "periodSeconds": 10},
        "livenessProbe": {"httpGet": {"path": "/liveness", "port": "http"}, "periodSeconds": 30,
                          "initialDelaySeconds": 120},  # the first start installs the router
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
         "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": rname},
         "subjects": [{"kind": "ServiceAccount", "name": rname, "namespace": namespace}]},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": {
                    "prometheus.io/scrape": "true", "prometheus.io/port": str(ROUTER_METRICS_PORT),
                    "prometheus.io/path": "/metrics"}},
                "spec": {"serviceAccountName": rname, "containers": [container]},
            },
        }},
        {"apiVersion": "v1", "kind": "Service", "metadata": {**meta, "name": name}, "spec": {
            "selector": labels,
            "ports": [{"name": "http", "port": spec.port, "targetPort": "http"},
                      {"name": "metrics", "port": ROUTER_METRICS_PORT, "targetPort": "metrics"}]}},
    ]


def manifest(spec: EngineSpec, *, name: str = "minimax-m2", namespace: str = "default", image: str | None = None,
             replicas: int = 1, nodes: int = 1, hpa: bool = False, min_replicas: int = 1, max_replicas: int = 4,
             queue_target: int = 5, cache_pvc: str = "minimax-m2-cache", cache_size: str = "300Gi",
             cache_host_path: str | None = None, shm_size: str = "64Gi", router: str | None = None,
             router_policy: str = "consistent_hash", router_image: str = ROUTER_IMAGE) -> list[dict]:
    """The manifest as a list of Kubernetes objects. `router` None: vllm-router when there can be more
    than one replica (`replicas` > 1 or `hpa`), else none. The Service is always `name` on `spec.port`,
    so M2_BASE_URL is the same with or without the router."""
    if router is None:
        router = "vllm-router" if replicas > 1 or hpa else "none"
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/component": spec.engine}
    serving = labels if nodes == 1 else {**labels, "role": "leader"}  # the pods that answer HTTP
    meta = {"name": name, "namespace": namespace, "labels": labels}
    cache_volume = ({"hostPath": {"path": cache_host_path, "type": "DirectoryOrCreate"}} if cache_host_path
                    else {"persistentVolumeClaim": {"claimName": cache_pvc}})
    docs: list[dict] = []
    if not cache_host_path:
        shared = hpa or replicas > 1 or nodes > 1
        docs.append({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {**meta, "name": cache_pvc},
            "spec": {"accessModes": ["ReadWriteMany" if shared else "ReadWriteOnce"],
                     "resources": {"requests": {"storage": cache_size}}},
        })
    engine = _engine(spec, meta, labels, image, replicas, nodes, cache_volume, shm_size)
    docs.append(engine)
    if router == "vllm-router":
        docs += _router(spec, name, namespace, serving, router_policy, router_image)
    else:
        docs.append({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {"selector": serving, "ports": [{"name": "http", "port": spec.port, "targetPort": "http"}]},
        })
    if hpa:  # scales the engine (Deployment or LeaderWorkerSet), never the router
        docs.append({
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": meta,
            "spec": {
                "scaleTargetRef": {"apiVersion": engine["apiVersion"], "kind": engine["kind"], "name": name},
                "minReplicas": min_replicas,
                "maxReplicas": max_replicas,
                "metrics": [{"type": "Pods", "pods": {
                    "metric": {"name": QUEUE_METRIC[spec.engine]},
                    "target": {"type": "AverageValue", "averageValue": str(queue_target)}}}],
                # A new replica needs many minutes to load: scale down slowly.
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 1800}},
            },
        })
    return docs


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data) -> bool:  # write shared dicts out in full, no &anchors
        return True


def to_yaml(docs: list[dict]) -> str:
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
