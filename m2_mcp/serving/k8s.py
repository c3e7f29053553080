"""A Kubernetes manifest for MiniMax-M2: Deployment (+ PVC for the model cache), Service, optional HPA.

The container runs exactly the engine arguments `m2-mcp model serve` would (engine.engine_args).
"""

from __future__ import annotations

import yaml

from m2_mcp.serving.engine import ENV, EngineSpec, plain_command, engine_args
from m2_mcp.serving.launch import with_vllm_version

DEFAULT_IMAGES = {"vllm": "vllm/vllm-openai:v0.11.2", "sglang": "lmsysorg/sglang:v0.5.4.post3"}
CACHE_DIR = "/root/.cache/huggingface"
# Queue length per pod that the HPA aims for (needs a Prometheus adapter exposing the engine metric).
QUEUE_METRIC = {"vllm": "vllm:num_requests_waiting", "sglang": "sglang:num_queue_reqs"}


def manifest(spec: EngineSpec, *, name: str = "minimax-m2", namespace: str = "default", image: str | None = None,
             replicas: int = 1, hpa: bool = False, min_replicas: int = 1, max_replicas: int = 4,
             queue_target: int = 5, cache_pvc: str = "minimax-m2-cache", cache_size: str = "300Gi",
             cache_host_path: str | None = None, shm_size: str = "64Gi") -> list[dict]:
    """The manifest as a list of Kubernetes objects."""
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/component": spec.engine}
    meta = {"name": name, "namespace": namespace, "labels": labels}
    probe = {"httpGet": {"path": "/health", "port": "http"}}
    container = {
        "name": "engine",
        "image": image or DEFAULT_IMAGES[spec.engine],
        "command": plain_command(spec.engine),
        "args": engine_args(with_vllm_version(spec, image=image or DEFAULT_IMAGES[spec.engine])),
        "env": [{"name": k, "value": v} for k, v in ENV.items()] + [
            {"name": "HF_HOME", "value": CACHE_DIR},
            {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token", "optional": True}}},
        ],
        "ports": [{"name": "http", "containerPort": spec.port}],
        "resources": {"requests": {"nvidia.com/gpu": spec.gpus}, "limits": {"nvidia.com/gpu": spec.gpus}},
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}, {"name": "model-cache", "mountPath": CACHE_DIR}],
        # Loading ~220 GB of weights takes a while: allow up to an hour before liveness applies.
        "startupProbe": {**probe, "periodSeconds": 30, "failureThreshold": 120},
        "readinessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 3},
        "livenessProbe": {**probe, "periodSeconds": 30, "failureThreshold": 5},
    }
    cache_volume = ({"hostPath": {"path": cache_host_path, "type": "DirectoryOrCreate"}} if cache_host_path
                    else {"persistentVolumeClaim": {"claimName": cache_pvc}})
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            # GPUs are scarce: replace pods one at a time instead of surging extra ones.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": labels, "annotations": {
                    "prometheus.io/scrape": "true", "prometheus.io/port": str(spec.port), "prometheus.io/path": "/metrics"}},
                "spec": {
                    "containers": [container],
                    "volumes": [
                        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size}},
                        {"name": "model-cache", **cache_volume},
                    ],
                },
            },
        },
    }
    docs: list[dict] = []
    if not cache_host_path:
        shared = hpa or replicas > 1
        docs.append({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {**meta, "name": cache_pvc},
            "spec": {"accessModes": ["ReadWriteMany" if shared else "ReadWriteOnce"],
                     "resources": {"requests": {"storage": cache_size}}},
        })
    docs.append(deployment)
    docs.append({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {"selector": labels, "ports": [{"name": "http", "port": spec.port, "targetPort": "http"}]},
    })
    if hpa:
        docs.append({
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": meta,
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
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
