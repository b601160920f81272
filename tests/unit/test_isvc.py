"""InferenceService manifests: built with KServe's SDK classes, round-tripped through YAML, built by kustomize."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from serving.deploy.gitops import Canary, EnvironmentConfig, Environments, ModelDeployment, Resources
from serving.deploy.isvc import (
    GENERATED_HEADER,
    RuntimeImages,
    build_inference_service,
    isvc_name,
    load_inference_service,
    render_environment,
    to_dict,
    to_yaml,
)
from skiff.cli import main
from skiff.errors import ConfigError, InputError, UsageError
from skiff.registry import ModelRegistry
from skiff.storage import Store
from tests.conftest import REPO

KUBECTL = shutil.which("kubectl") or str(REPO / ".tools/bin/kubectl")
IMAGES = RuntimeImages(predictor="ghcr.io/skiff-ml/skiff:1.2.3", gpu_predictor="ghcr.io/skiff-ml/skiff-gpu:1.2.3",
                       transformer="ghcr.io/skiff-ml/skiff:1.2.3")
ENV = EnvironmentConfig(name="prod", namespace="skiff", registry="s3://bucket/skiff/models",
                        ingress_domain="models.example.com", feature_server_url="http://feast:6566")


@pytest.fixture
def registry(tmp_path):
    reg = ModelRegistry(Store(str(tmp_path / "models")))
    reg.register("churn", {"w": 1}, {"gate": {"promote": True}})                              # 1
    reg.register("churn", {"w": 2}, {"gate": {"promote": True}, "feature_service": "churn_fs"})  # 2
    reg.register("vision_tf", {"w": 3}, {"flavor": "tensorflow", "gate": {"promote": True}})   # 1
    return reg


def _isvc(registry, dep: ModelDeployment, env: EnvironmentConfig = ENV):
    meta = registry.get(dep.name, dep.served_version).metadata
    return build_inference_service(env, dep, meta, registry_uri=env.registry, images=IMAGES)


def test_round_trips_through_yaml_and_the_kserve_model_classes(registry):
    from kserve import V1beta1InferenceService, V1beta1ModelSpec

    isvc = _isvc(registry, ModelDeployment(name="churn", version=1, min_replicas=2))
    text = to_yaml(isvc)
    back = load_inference_service(text)
    assert isinstance(back, V1beta1InferenceService)
    assert isinstance(back.spec.predictor.model, V1beta1ModelSpec)
    assert back == isvc
    assert to_dict(back) == yaml.safe_load(text)
    d = yaml.safe_load(text)
    assert d["apiVersion"] == "serving.kserve.io/v1beta1" and d["kind"] == "InferenceService"
    assert d["metadata"]["labels"]["skiff.io/model"] == "churn"
    assert d["metadata"]["labels"]["skiff.io/version"] == "1"
    assert d["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"
    p = d["spec"]["predictor"]
    assert p["model"]["storageUri"] == "s3://bucket/skiff/models/churn/1"
    assert p["model"]["modelFormat"] == {"name": "sklearn"} and p["model"]["runtime"] == "skiff-sklearn"
    assert p["model"]["args"] == ["churn", "--version", "1"]
    assert {"name": "SKIFF_REGISTRY", "value": "s3://bucket/skiff/models"} in p["model"]["env"]
    assert (p["minReplicas"], p["maxReplicas"], p["scaleMetric"], p["scaleTarget"]) == (2, 3, "concurrency", 8)
    assert p["labels"] == {"skiff.io/model": "churn", "skiff.io/version": "1"}
    assert "transformer" not in d["spec"]
    with pytest.raises(InputError, match="apiVersion"):
        load_inference_service(text.replace("serving.kserve.io/v1beta1", "serving.kserve.io/v1alpha1"))


def test_security_context_and_service_account(registry):
    d = to_dict(_isvc(registry, ModelDeployment(name="churn", version=2)))
    for component in ("predictor", "transformer"):
        spec = d["spec"][component]
        assert spec["serviceAccountName"] == "skiff-serving"
        assert spec["securityContext"]["runAsNonRoot"] is True
        container = spec["model"] if component == "predictor" else spec["containers"][0]
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
        # a read-only root needs a writable /tmp
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
        assert any(v["name"] == "tmp" and "emptyDir" in v for v in spec["volumes"])


def test_canary_fields_only_with_a_canary(registry):
    plain = to_dict(_isvc(registry, ModelDeployment(name="churn", version=1)))
    assert "canaryTrafficPercent" not in plain["spec"]["predictor"]
    assert not any(k.startswith("skiff.io/stable") for k in plain["metadata"]["annotations"])
    canary = to_dict(_isvc(registry, ModelDeployment(name="churn", version=1, canary=Canary(version=2, percent=10))))
    p = canary["spec"]["predictor"]
    assert p["canaryTrafficPercent"] == 10
    # KServe gives the percent to the latest revision: the spec serves the canary version
    assert p["model"]["storageUri"].endswith("/churn/2") and canary["metadata"]["labels"]["skiff.io/version"] == "2"
    assert canary["metadata"]["annotations"]["skiff.io/stable-version"] == "1"
    zero = to_dict(_isvc(registry, ModelDeployment(name="churn", version=1, canary=Canary(version=2, percent=0))))
    assert zero["spec"]["predictor"]["canaryTrafficPercent"] == 0  # deployed dark, not absent
    raw = ENV.model_copy(update={"deployment_mode": "RawDeployment"})
    with pytest.raises(UsageError, match="needs the Serverless deployment mode"):
        _isvc(registry, ModelDeployment(name="churn", version=1, canary=Canary(version=2, percent=10)), raw)


def test_gpu_model_gets_gpus_node_selector_and_toleration(registry):
    gpu = to_dict(_isvc(registry, ModelDeployment(name="vision_tf", version=1)))
    assert gpu["metadata"]["name"] == "vision-tf"
    p = gpu["spec"]["predictor"]
    assert p["model"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert p["model"]["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert p["model"]["runtime"] == "skiff-tensorflow"
    assert p["nodeSelector"] == {"skiff.io/node-pool": "gpu"}
    assert p["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "present",
                                 "effect": "NoSchedule"}]
    cpu = to_dict(_isvc(registry, ModelDeployment(name="churn", version=1)))["spec"]["predictor"]
    assert "nvidia.com/gpu" not in cpu["model"]["resources"]["limits"]
    assert "nodeSelector" not in cpu and "tolerations" not in cpu
    # a resources setting decides both ways
    forced = to_dict(_isvc(registry, ModelDeployment(name="churn", version=1, resources=Resources(gpu=2))))
    assert forced["spec"]["predictor"]["model"]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert forced["spec"]["predictor"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    off = to_dict(_isvc(registry, ModelDeployment(name="vision_tf", version=1, resources=Resources(gpu=0))))
    assert "tolerations" not in off["spec"]["predictor"]


def test_transformer_for_a_feature_service(registry):
    d = to_dict(_isvc(registry, ModelDeployment(name="churn", version=2)))
    c = d["spec"]["transformer"]["containers"][0]
    assert c["image"] == IMAGES.transformer
    assert c["args"] == ["--model", "churn", "--version", "2", "--feature_service", "churn_fs",
                         "--feature_server_url", "http://feast:6566"]
    assert c["command"] == ["python", "-m", "serving", "transformer"]
    no_feast = ENV.model_copy(update={"feature_server_url": None})
    with pytest.raises(ConfigError, match="sets no feature_server_url"):
        _isvc(registry, ModelDeployment(name="churn", version=2), no_feast)


def test_the_transformer_is_canaried_with_the_predictor(registry):
    # KServe splits each component's traffic by its own canaryTrafficPercent: without it on the transformer,
    # every request would pass the new transformer revision while only a share reaches the new predictor
    for percent in (0, 10):
        dep = ModelDeployment(name="churn", version=1, canary=Canary(version=2, percent=percent))
        spec = to_dict(_isvc(registry, dep))["spec"]
        assert spec["transformer"]["canaryTrafficPercent"] == spec["predictor"]["canaryTrafficPercent"] == percent
        assert spec["transformer"]["containers"][0]["args"][:4] == ["--model", "churn", "--version", "2"]
    stable = to_dict(_isvc(registry, ModelDeployment(name="churn", version=2)))["spec"]
    assert "canaryTrafficPercent" not in stable["transformer"] and "canaryTrafficPercent" not in stable["predictor"]


def test_names_must_fit_kubernetes():
    assert isvc_name("Churn_v2") == "churn-v2"
    with pytest.raises(UsageError):
        isvc_name("x" * 60)


def _envs(tmp_path) -> Environments:
    root = tmp_path / "environments"
    (root / "prod/models").mkdir(parents=True)
    (root / "prod/environment.yaml").write_text(yaml.safe_dump(ENV.model_dump(exclude_defaults=True)))
    (root / "prod/models/churn.yaml").write_text("name: churn\nversion: 1\ncanary: {version: 2, percent: 5}\n")
    (root / "prod/models/vision_tf.yaml").write_text("name: vision_tf\nversion: 1\n")
    return Environments(root)


def test_render_env_builds_with_kubectl_kustomize(tmp_path, registry):
    envs = _envs(tmp_path)
    out = tmp_path / "rendered/prod"
    out.mkdir(parents=True)
    # what an older render left: the ServiceAccount and ServingRuntimes the platform chart owns now
    (out / "kustomization.yaml").write_text(GENERATED_HEADER + "resources: [serviceaccount.yaml]\n")
    for old in ("serviceaccount.yaml", "servingruntime-sklearn.yaml"):
        (out / old).write_text(GENERATED_HEADER + "kind: ServiceAccount\n")
    render_environment(envs, "prod", registry, out, images=IMAGES, registry_uri="unused")
    # Argo CD owns the InferenceServices only (one owner per object: the chart owns the rest)
    assert sorted(p.name for p in out.iterdir()) == ["isvc-churn.yaml", "isvc-vision-tf.yaml", "kustomization.yaml"]
    built = subprocess.run([KUBECTL, "kustomize", str(out)], capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(built.stdout)}
    churn = docs[("InferenceService", "churn")]
    assert churn["metadata"]["namespace"] == "skiff"
    assert churn["metadata"]["labels"]["skiff.io/environment"] == "prod"
    assert churn["spec"]["predictor"]["canaryTrafficPercent"] == 5
    assert load_inference_service(churn).spec.predictor.canary_traffic_percent == 5
    assert {kind for kind, _ in docs} == {"InferenceService"}
    # the runtime's image unless the environment pins one
    assert "image" not in docs[("InferenceService", "vision-tf")]["spec"]["predictor"]["model"]
    # a model leaves the environment: its manifest goes too
    (envs.root / "prod/models/vision_tf.yaml").unlink()
    render_environment(envs, "prod", registry, out, images=IMAGES, registry_uri="unused")
    assert not (out / "isvc-vision-tf.yaml").exists()


def test_an_environments_pinned_predictor_image_replaces_the_runtimes(tmp_path, registry):
    envs = _envs(tmp_path)
    env_file = envs.root / "prod/environment.yaml"
    env_file.write_text(env_file.read_text() + "images: {gpu_predictor: 'r.example.com/skiff-gpu@sha256:ab'}\n")
    out = tmp_path / "rendered"
    render_environment(envs, "prod", registry, out, images=IMAGES, registry_uri="unused")
    tf = yaml.safe_load((out / "isvc-vision-tf.yaml").read_text())
    assert tf["spec"]["predictor"]["model"]["image"] == "r.example.com/skiff-gpu@sha256:ab"
    assert "image" not in yaml.safe_load((out / "isvc-churn.yaml").read_text())["spec"]["predictor"]["model"]


def test_the_serving_service_account_is_the_charts_not_the_renders(tmp_path, registry):
    envs = _envs(tmp_path)
    env_file = envs.root / "prod/environment.yaml"
    env_file.write_text(env_file.read_text() + "service_account_annotations: {a: b}\n")
    with pytest.raises(ConfigError, match="belongs to the platform chart"):
        envs.environment("prod")


def test_committed_environments_and_rendered_folders_are_valid():
    envs = Environments(REPO / "infra/environments")
    assert envs.names() == ["dev", "prod", "staging"]
    for name in envs.names():
        cfg = envs.environment(name)
        assert cfg.deployment_mode == "Serverless" and cfg.rollout.steps[-1] == 100
        built = subprocess.run([KUBECTL, "kustomize", str(REPO / "infra/rendered" / name)], capture_output=True,
                               text=True, timeout=120)
        assert built.returncode == 0, built.stderr
    for folder in ("infra/argocd", "infra/monitoring"):
        built = subprocess.run([KUBECTL, "kustomize", str(REPO / folder)], capture_output=True, text=True,
                               timeout=120)
        assert built.returncode == 0, built.stderr
    appset = yaml.safe_load((REPO / "infra/argocd/applicationset.yaml").read_text())
    assert appset["spec"]["template"]["spec"]["source"]["path"] == "infra/rendered/{{ .env }}"
    assert {e["env"] for e in appset["spec"]["generators"][0]["list"]["elements"]} == set(envs.names())


def test_render_cli(skiff_env, registry, capsys, monkeypatch):
    envs = _envs(skiff_env)
    monkeypatch.setenv("SKIFF_REGISTRY", str(registry.store.root))
    monkeypatch.setenv("SKIFF_ENVIRONMENTS", str(envs.root))
    assert main(["render", "isvc", "churn", "--env", "prod"]) == 0
    d = yaml.safe_load(capsys.readouterr().out)
    assert d["spec"]["predictor"]["canaryTrafficPercent"] == 5
    assert main(["render", "isvc", "churn", "--env", "prod", "--version", "1"]) == 0
    d = yaml.safe_load(capsys.readouterr().out)
    assert "canaryTrafficPercent" not in d["spec"]["predictor"] and d["metadata"]["labels"]["skiff.io/version"] == "1"
    assert main(["render", "isvc", "churn", "--env", "prod", "--version", "9"]) == 2
    assert "no version 9" in capsys.readouterr().err
    assert main(["render", "isvc", "churn", "--env", "nope"]) == 2
    assert "environment 'nope' not found" in capsys.readouterr().err
    assert main(["render", "env", "prod", "-o", str(skiff_env / "out"), "--json"]) == 0
    assert (skiff_env / "out/kustomization.yaml").is_file()
