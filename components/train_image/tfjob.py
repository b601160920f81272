"""Training past one node: the train_image step's own code as a Kubeflow ``TFJob`` (``kubeflow.org/v1``).

When the image pipeline runs with ``workers > 1`` its launcher task
(:func:`components.train_image.component.train_image_tfjob_op`) renders a TFJob with :func:`render_tfjob`,
creates it with the Kubernetes client (:func:`create`) and waits for it to finish (:func:`wait_for`). The training operator
starts ``workers`` pods and gives each its ``TF_CONFIG`` (the cluster's worker addresses and the pod's
index); every pod runs :mod:`components.train_image.worker`, which trains with the step's code
(:func:`components.train_image.logic.train_image`) under ``MultiWorkerMirroredStrategy`` (chosen by
:func:`components.train_image.logic.device_setup` when ``TF_CONFIG`` names more than one worker).
Worker 0 is the chief: it writes the model folder to ``output_uri`` on the artifact store, which the
launcher copies into its KFP output artifact, so evaluation and registration read it as they read the
single-node step's.

The object is checked against the training operator's own CRD schema (``tests/cluster/upstream_extra``).
Each pod asks for ``gpus_per_worker`` ``nvidia.com/gpu`` and carries the GPU pool's toleration and node
selector; the container is named ``tensorflow`` (the operator's default container name, which it needs
to find the port and inject ``TF_CONFIG``). Nothing from data is pasted into the object: the data set, run
and config travel as separate command-line arguments.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from typing import Any

from skiff.errors import ConfigError, SkiffError, UsageError

__all__ = ["TFJOB_GROUP", "TFJOB_VERSION", "TFJOB_PLURAL", "CONTAINER", "render_tfjob", "job_name", "create",
           "wait_for", "job_state"]

log = logging.getLogger(__name__)

TFJOB_GROUP = "kubeflow.org"
TFJOB_VERSION = "v1"
TFJOB_PLURAL = "tfjobs"
#: the training operator finds the TensorFlow container (its port, TF_CONFIG) by this name
CONTAINER = "tensorflow"
#: the port the operator puts in TF_CONFIG for every worker
PORT = 2222
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}
GPU_NODE_SELECTOR = {"skiff.io/node-pool": "gpu"}


def job_name(run_id: str, prefix: str = "skiff-train-image") -> str:
    """A DNS-1123 name for the run's TFJob: the prefix, the run id's safe part and a hash of the whole."""
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:8]
    safe = re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-")[:63 - len(prefix) - 10].strip("-")
    return "-".join(p for p in (prefix, safe, digest) if p)


def render_tfjob(*, name: str, namespace: str, image: str, workers: int, dataset: str, lake_uri: str, run_id: str,
                 output_uri: str, config: dict[str, Any], gpus_per_worker: int = 1, service_account: str = "",
                 cpu: str = "4", memory: str = "16G", backoff_limit: int = 2,
                 labels: dict[str, str] | None = None) -> dict[str, Any]:
    """The TFJob that trains on lake run ``run_id`` of ``dataset`` with ``workers`` workers."""
    if workers < 2:
        raise UsageError(f"a TFJob is for more than one worker; workers={workers} trains in the step itself")
    if gpus_per_worker < 0:
        raise UsageError(f"gpus_per_worker must be >= 0, got {gpus_per_worker}")
    limits: dict[str, str] = {"cpu": cpu, "memory": memory}
    if gpus_per_worker:
        limits["nvidia.com/gpu"] = str(gpus_per_worker)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "command": ["python", "-m", "components.train_image.worker"],
        "args": ["--dataset", dataset, "--lake-uri", lake_uri, "--run-id", run_id, "--output-uri", output_uri,
                 "--config", json.dumps(config, sort_keys=True)],
        "env": [{"name": "TF_CPP_MIN_LOG_LEVEL", "value": "2"}],
        "ports": [{"name": "tfjob-port", "containerPort": PORT}],
        "resources": {"requests": dict(limits), "limits": limits},
    }
    pod: dict[str, Any] = {"containers": [container]}
    if service_account:
        pod["serviceAccountName"] = service_account
    if gpus_per_worker:
        pod["tolerations"] = [dict(GPU_TOLERATION)]
        pod["nodeSelector"] = dict(GPU_NODE_SELECTOR)
    meta_labels = {"app.kubernetes.io/part-of": "skiff", "app.kubernetes.io/component": "train-image",
                   **(labels or {})}
    return {
        "apiVersion": f"{TFJOB_GROUP}/{TFJOB_VERSION}",
        "kind": "TFJob",
        "metadata": {"name": name, "namespace": namespace, "labels": meta_labels},
        "spec": {
            "runPolicy": {"cleanPodPolicy": "Running", "backoffLimit": backoff_limit},
            "tfReplicaSpecs": {
                "Worker": {
                    "replicas": workers,
                    "restartPolicy": "OnFailure",
                    "template": {"metadata": {"labels": meta_labels}, "spec": pod},
                },
            },
        },
    }


def job_state(obj: dict[str, Any]) -> tuple[str, str]:
    """``("Succeeded" | "Failed" | "Running" | ..., message)`` from a TFJob's status conditions (the last true
    one), ``("Pending", "")`` before the operator has written any."""
    conditions = [c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("status") == "True"]
    for wanted in ("Failed", "Succeeded"):
        for c in conditions:
            if c.get("type") == wanted:
                return wanted, str(c.get("message") or c.get("reason") or "")
    if conditions:
        last = conditions[-1]
        return str(last.get("type")), str(last.get("message") or "")
    return "Pending", ""


def wait_for(api: Any, name: str, namespace: str, *, timeout_s: float = 24 * 3600, poll_s: float = 15.0) -> str:
    """Poll the TFJob until it succeeds (its message) or fails or times out (a :class:`SkiffError`)."""
    deadline = time.monotonic() + timeout_s
    state = "Pending"
    while time.monotonic() < deadline:
        obj = api.get_namespaced_custom_object(TFJOB_GROUP, TFJOB_VERSION, namespace, TFJOB_PLURAL, name)
        state, message = job_state(obj)
        if state == "Succeeded":
            return message
        if state == "Failed":
            raise SkiffError(f"TFJob {namespace}/{name} failed: {message}", job=name)
        time.sleep(poll_s)
    raise SkiffError(f"TFJob {namespace}/{name} did not finish within {timeout_s:.0f} s (last state {state})",
                     job=name)


def create(api: Any, obj: dict[str, Any]) -> None:
    """Create the TFJob (an existing one of that name, from a retried launcher, is kept and waited for)."""
    from kubernetes.client.exceptions import ApiException

    meta = obj["metadata"]
    try:
        api.create_namespaced_custom_object(TFJOB_GROUP, TFJOB_VERSION, meta["namespace"], TFJOB_PLURAL, obj)
    except ApiException as e:
        if e.status == 409:
            log.info("TFJob %s/%s exists (a retried launcher): waiting for it", meta["namespace"], meta["name"])
            return
        if e.status == 404:
            raise ConfigError("the cluster has no TFJob resource (kubeflow.org/v1): install the Kubeflow training "
                              "operator, or train with workers=1") from e
        raise SkiffError(f"cannot create TFJob {meta['namespace']}/{meta['name']}: {e.status} {e.reason}") from e
