"""The image pipeline past one node: the TFJob its launcher task creates (components.train_image.tfjob) holds
against the training operator's own CRD schema (kubeflow/training-operator v1.9.0, vendored under
upstream_extra/ with its sha256 in SOURCES.md), runs the step's worker entry point, asks for the GPUs on the
GPU pool, and the launcher reads the job's end from its status conditions."""

from __future__ import annotations

import hashlib
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.train_image.tfjob import CONTAINER, job_name, job_state, render_tfjob, wait_for
from pipelines.image import GPU_NODE_SELECTOR, GPU_TOLERATION
from skiff.errors import SkiffError, UsageError
from tests.cluster.test_gitops_contract import assert_valid

EXTRA = Path(__file__).parent / "upstream_extra"
CRD = "training-operator/manifests/base/crds/kubeflow.org_tfjobs.yaml"


@cache
def _sources() -> dict[str, str]:
    """local path -> sha256, from SOURCES.md's table."""
    out = {}
    for line in (EXTRA / "SOURCES.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 9 and re.fullmatch(r"[0-9a-f]{64}", cells[7]):
            out[f"{cells[0]}/{cells[4]}"] = cells[7]
    return out


def tfjob_schema() -> dict[str, Any]:
    path = EXTRA / CRD
    assert hashlib.sha256(path.read_bytes()).hexdigest() == _sources()[CRD], "the vendored CRD is not upstream's"
    crd = yaml.safe_load(path.read_text())
    assert crd["spec"]["group"] == "kubeflow.org" and crd["spec"]["names"]["kind"] == "TFJob"
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return v1["schema"]["openAPIV3Schema"]


def test_every_vendored_file_is_upstreams():
    assert set(_sources()) == {CRD, "training-operator/LICENSE"}
    for rel, sha in _sources().items():
        assert hashlib.sha256((EXTRA / rel).read_bytes()).hexdigest() == sha, rel


def _job(**kw: Any) -> dict[str, Any]:
    args = {"name": job_name("shapes-run-20261203T1200-abc123"), "namespace": "skiff", "image":
            "ghcr.io/skiff-ml/skiff-gpu:1.0.0", "workers": 3, "dataset": "shapes", "lake_uri": "s3://lake/lake",
            "run_id": "run-20261203T1200-abc123", "output_uri": "s3://lake/artifacts/tfjobs/j/model",
            "config": {"backbone": "MobileNetV3Small", "weights": "s3://lake/weights/mnv3.weights.h5"},
            "service_account": "skiff-pipeline"}
    return render_tfjob(**{**args, **kw})


@pytest.mark.parametrize("kw", [{}, {"gpus_per_worker": 0}, {"gpus_per_worker": 4, "workers": 8}],
                         ids=["gpu", "cpu", "8x4"])
def test_the_rendered_tfjob_is_valid_against_the_upstream_crd(kw):
    assert_valid(_job(**kw), tfjob_schema())


def test_the_tfjob_runs_the_steps_worker_with_the_gpu_pools_scheduling():
    job = _job(gpus_per_worker=2)
    worker = job["spec"]["tfReplicaSpecs"]["Worker"]
    assert set(job["spec"]["tfReplicaSpecs"]) == {"Worker"} and worker["replicas"] == 3  # worker 0 is the chief
    pod = worker["template"]["spec"]
    (container,) = pod["containers"]
    assert container["name"] == CONTAINER == "tensorflow"  # the operator injects TF_CONFIG into this one
    assert container["command"] == ["python", "-m", "components.train_image.worker"]
    args = container["args"]
    assert args[args.index("--dataset") + 1] == "shapes" and args[args.index("--run-id") + 1].startswith("run-")
    assert json.loads(args[args.index("--config") + 1])["weights"].startswith("s3://")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert pod["tolerations"] == [GPU_TOLERATION]
    assert pod["nodeSelector"] == {GPU_NODE_SELECTOR[0]: GPU_NODE_SELECTOR[1]}
    assert pod["serviceAccountName"] == "skiff-pipeline"
    cpu = _job(gpus_per_worker=0)["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]
    assert "tolerations" not in cpu and "nvidia.com/gpu" not in cpu["containers"][0]["resources"]["limits"]


def test_job_names_are_dns_labels_and_one_worker_is_not_a_tfjob():
    for run in ("run-1", "Shapes_ÄÖ run/with spaces" * 5, "-"):
        name = job_name(run)
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63, name
    assert job_name("run-1") != job_name("run-2")
    with pytest.raises(UsageError, match="more than one worker"):
        _job(workers=1)


class _Api:
    """The CustomObjectsApi calls wait_for makes, answering the TFJob statuses the operator writes in turn."""

    def __init__(self, statuses: list[dict[str, Any]]) -> None:
        self.statuses = statuses
        self.calls = 0

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        assert (group, version, plural) == ("kubeflow.org", "v1", "tfjobs")
        status = self.statuses[min(self.calls, len(self.statuses) - 1)]
        self.calls += 1
        return {"metadata": {"name": name, "namespace": namespace}, "status": status}


def _cond(kind: str, message: str = "") -> dict[str, Any]:
    return {"type": kind, "status": "True", "message": message}


def test_the_launcher_waits_for_the_operators_conditions():
    running = {"conditions": [_cond("Created"), _cond("Running")]}
    done = {"conditions": [_cond("Created"), {"type": "Running", "status": "False"},
                           _cond("Succeeded", "TFJob skiff/j successfully completed.")]}
    api = _Api([{}, running, done])
    assert wait_for(api, "j", "skiff", poll_s=0) == "TFJob skiff/j successfully completed." and api.calls == 3
    failed = {"conditions": [_cond("Running"), _cond("Failed", "TFJob skiff/j has failed because 1 Worker replica(s) "
                                                            "failed.")]}
    with pytest.raises(SkiffError, match="Worker replica"):
        wait_for(_Api([failed]), "j", "skiff", poll_s=0)
    with pytest.raises(SkiffError, match="did not finish within 0 s"):
        wait_for(_Api([running]), "j", "skiff", timeout_s=0, poll_s=0)
    assert job_state({}) == ("Pending", "")
