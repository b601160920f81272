"""An image model's InferenceService: a version registered the way the train_image step registers it (flavor
tensorflow, model.keras its model file, nothing pickled) gets the GPU image, nvidia.com/gpu as asked (one by
default, more or none when the environment says so) and the GPU pool's placement; the object holds against
KServe's CRD when the pinned upstream files are there."""

from __future__ import annotations

import pytest

from serving.deploy.gitops import EnvironmentConfig, ModelDeployment, Resources
from serving.deploy.isvc import RuntimeImages, build_inference_service, to_dict
from skiff.registry import ModelRegistry, VersionMetadata
from skiff.storage import Store

IMAGES = RuntimeImages(predictor="ghcr.io/skiff-ml/skiff:1.2.3", gpu_predictor="ghcr.io/skiff-ml/skiff-gpu:1.2.3",
                       transformer="ghcr.io/skiff-ml/skiff:1.2.3")
ENV = EnvironmentConfig(name="prod", namespace="skiff", registry="s3://bucket/skiff/models",
                        ingress_domain="models.example.com")


@pytest.fixture
def image_version(tmp_path):
    registry = ModelRegistry(Store(str(tmp_path / "models")))
    keras_file = tmp_path / "model.keras"
    keras_file.write_bytes(b"PK keras archive")
    meta = VersionMetadata(name="shapes", flavor="tensorflow", problem_type="image_classification",
                           classes=["circle", "square"], gate={"promote": True},
                           extra={"preprocessing": {"height": 32, "width": 32}, "label_map": {"classes": ["a", "b"]},
                                  "model_files": {"keras": "model.keras"}})
    return registry.register("shapes", None, meta, {"model.keras": keras_file})


def _predictor(mv, resources: Resources | None = None) -> dict:
    dep = ModelDeployment(name="shapes", version=mv.version, **({"resources": resources} if resources else {}))
    return to_dict(build_inference_service(ENV, dep, mv.metadata, registry_uri=ENV.registry, images=IMAGES))


@pytest.mark.parametrize("asked, gpus", [(None, "1"), (2, "2")], ids=["default", "asked-2"])
def test_an_image_model_gets_the_gpus_it_asks_for_on_the_gpu_pool(image_version, asked, gpus):
    isvc = _predictor(image_version, Resources(gpu=asked) if asked else None)
    p = isvc["spec"]["predictor"]
    res = p["model"]["resources"]
    assert res["limits"]["nvidia.com/gpu"] == res["requests"]["nvidia.com/gpu"] == gpus
    assert p["model"]["runtime"] == "skiff-tensorflow" and p["model"]["modelFormat"]["name"] == "tensorflow"
    assert p["nodeSelector"] == {"skiff.io/node-pool": "gpu"}
    assert p["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "present",
                                 "effect": "NoSchedule"}]
    assert p["model"]["storageUri"] == f"s3://bucket/skiff/models/shapes/{image_version.version}"


def test_an_image_model_told_to_use_no_gpu_runs_on_the_cpu_pool(image_version):
    p = _predictor(image_version, Resources(gpu=0))["spec"]["predictor"]
    assert "nvidia.com/gpu" not in (p["model"]["resources"].get("limits") or {})
    assert "nodeSelector" not in p and "tolerations" not in p


def test_the_image_models_inference_service_holds_against_kserves_crd(image_version):
    from tests.cluster.test_gitops_contract import KSERVE, assert_valid, crd_schema

    schema = crd_schema(f"{KSERVE}/serving.kserve.io_inferenceservices.yaml", "v1beta1")  # skips without the file
    assert_valid(_predictor(image_version, Resources(gpu=2)), schema)
