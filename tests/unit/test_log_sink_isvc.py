"""KServe's logger in the InferenceService builder: an environment's ``inference_log`` block renders
``spec.predictor.logger`` (mode, the sink's URL, metadata header and annotation) that holds against the
pinned KServe CRD; without it no logger is rendered."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from serving.deploy.gitops import EnvironmentConfig, ModelDeployment
from serving.deploy.isvc import build_inference_service, load_inference_service, to_dict, to_yaml
from serving.deploy.logger import DEFAULT_SINK_URL, InferenceLoggerConfig
from serving.runtime.log_sink import VERSION_ANNOTATION
from skiff.registry import ModelRegistry
from skiff.storage import Store
from tests.unit.test_isvc import ENV, IMAGES


@pytest.fixture
def registry(tmp_path):
    reg = ModelRegistry(Store(str(tmp_path / "models")))
    reg.register("churn", {"w": 1}, {"gate": {"promote": True}})
    reg.register("churn", {"w": 2}, {"gate": {"promote": True}, "feature_service": "churn_fs"})
    return reg


def _isvc(registry, env, version=1):
    meta = registry.get("churn", version).metadata
    return build_inference_service(env, ModelDeployment(name="churn", version=version), meta,
                                   registry_uri=env.registry, images=IMAGES)


@pytest.mark.parametrize("mode", ["all", "request", "response"])
def test_the_logger_renders_and_holds_against_the_kserve_crd(registry, mode):
    from tests.cluster.test_gitops_contract import KSERVE, assert_valid, crd_schema

    env = ENV.model_copy(update={"inference_log": InferenceLoggerConfig(mode=mode)})
    doc = to_dict(_isvc(registry, env, version=2))  # with the Feast transformer: the logger is the predictor's
    logger = doc["spec"]["predictor"]["logger"]
    assert logger == {"mode": mode, "url": DEFAULT_SINK_URL, "metadataHeaders": ["X-Request-Id"],
                      "metadataAnnotations": [VERSION_ANNOTATION]}
    assert "logger" not in doc["spec"]["transformer"]
    assert doc["metadata"]["annotations"][VERSION_ANNOTATION] == "2"
    schema = crd_schema(f"{KSERVE}/serving.kserve.io_inferenceservices.yaml", "v1beta1")  # skips without it
    assert_valid(doc, schema)
    again = load_inference_service(to_yaml(_isvc(registry, env, version=2)))
    assert again.spec.predictor.logger.mode == mode


def test_no_inference_log_no_logger_and_the_environment_file_checks_the_block(registry):
    doc = to_dict(_isvc(registry, ENV))
    assert "logger" not in doc["spec"]["predictor"] and VERSION_ANNOTATION not in doc["metadata"]["annotations"]
    base = ENV.model_dump()
    env = EnvironmentConfig.model_validate({**base, "inference_log": {"mode": "all",
                                                                      "url": "http://sink.ops.svc:8080/"}})
    assert to_dict(_isvc(registry, env))["spec"]["predictor"]["logger"]["url"] == "http://sink.ops.svc:8080/"
    for bad in ({"mode": "everything"}, {"url": "ftp://sink"}, {"sample": 1}):
        with pytest.raises(ValidationError):
            EnvironmentConfig.model_validate({**base, "inference_log": bad})


def test_the_sink_maps_inference_service_names_as_the_builder_makes_them(tmp_path):
    from serving.deploy.isvc import isvc_name
    from serving.runtime.log_sink import LogSink
    from skiff.config import load_settings

    reg = ModelRegistry(Store(str(tmp_path / "models")))
    for name in ("Churn_Model", "housing"):
        reg.register(name, {"w": 1}, {"input_schema": {"x": "float"}, "features": ["x"]})
    sink = LogSink(load_settings(root=str(tmp_path), registry=str(tmp_path / "models"),
                                 inference_log_sample_rate=1.0), registry=reg)
    try:
        assert [sink.model_of(isvc_name(n)) for n in ("Churn_Model", "housing")] == ["Churn_Model", "housing"]
    finally:
        sink.writer.close()


def test_the_model_charts_logger_is_the_builders(registry):
    import subprocess

    import yaml

    from tests.conftest import REPO, require_tool

    helm = require_tool("helm")
    chart = REPO / "helm" / "skiff-model"
    r = subprocess.run([helm, "template", "m", str(chart), "-f", str(chart / "ci" / "minimal-values.yaml"),
                        "--set", "inferenceLog.enabled=true"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    isvc = next(d for d in yaml.safe_load_all(r.stdout) if d and d["kind"] == "InferenceService")
    env = ENV.model_copy(update={"inference_log": InferenceLoggerConfig()})
    built = to_dict(_isvc(registry, env))
    assert isvc["spec"]["predictor"]["logger"] == built["spec"]["predictor"]["logger"]
    assert VERSION_ANNOTATION in isvc["metadata"]["annotations"]
