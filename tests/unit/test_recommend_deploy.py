"""A recommender version rolls out like any model: an InferenceService on the skiff-recommender runtime,
on the CPU, with a canary split."""

from serving.deploy.gitops import Canary, EnvironmentConfig, ModelDeployment
from serving.deploy.isvc import RuntimeImages, build_inference_service, build_serving_runtime, to_dict
from skiff.registry import ModelRegistry
from skiff.storage import Store

IMAGES = RuntimeImages(predictor="ghcr.io/skiff-ml/skiff:1.2.3", gpu_predictor="ghcr.io/skiff-ml/skiff-gpu:1.2.3",
                       transformer="ghcr.io/skiff-ml/skiff:1.2.3")
ENV = EnvironmentConfig(name="prod", namespace="skiff", registry="s3://bucket/skiff/models",
                        ingress_domain="models.example.com")


def test_recommender_canary_inference_service_and_runtime(tmp_path):
    reg = ModelRegistry(Store(str(tmp_path / "models")))
    for _ in range(2):
        reg.register("shop_recs", {"flavor": "recommender"}, {"flavor": "recommender",
                                                              "problem_type": "recommendation"})
    meta = reg.get("shop_recs", 2).metadata
    dep = ModelDeployment(name="shop_recs", version=1, canary=Canary(version=2, percent=10))
    isvc = to_dict(build_inference_service(ENV, dep, meta, registry_uri=ENV.registry, images=IMAGES))
    p = isvc["spec"]["predictor"]
    assert p["model"]["runtime"] == "skiff-recommender" and p["model"]["modelFormat"]["name"] == "recommender"
    assert p["canaryTrafficPercent"] == 10 and p["model"]["storageUri"].endswith("/shop_recs/2")
    assert "nvidia.com/gpu" not in p["model"]["resources"].get("limits", {})
    runtime = to_dict(build_serving_runtime(ENV, "recommender", IMAGES))
    assert runtime["metadata"]["name"] == "skiff-recommender"
    assert runtime["spec"]["containers"][0]["image"] == IMAGES.predictor
    assert runtime["spec"]["supportedModelFormats"][0]["name"] == "recommender"


def test_a_recommender_gets_its_transformer_split_like_its_predictor(tmp_path):
    """The transformer reads the users' recent items; during a canary KServe splits each component by its
    own percent, so the transformer carries the predictor's."""
    reg = ModelRegistry(Store(str(tmp_path / "models")))
    for _ in range(2):
        reg.register("shop_recs", {"flavor": "recommender"}, {"flavor": "recommender"})
    dep = ModelDeployment(name="shop_recs", version=1, canary=Canary(version=2, percent=10))
    isvc = to_dict(build_inference_service(ENV, dep, reg.get("shop_recs", 2).metadata, registry_uri=ENV.registry,
                                           images=IMAGES))
    t = isvc["spec"]["transformer"]
    (container,) = t["containers"]
    assert container["args"] == ["--model", "shop_recs", "--version", "2"]
    assert container["command"] == ["python", "-m", "serving", "transformer"]
    assert t["canaryTrafficPercent"] == 10 == isvc["spec"]["predictor"]["canaryTrafficPercent"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SKIFF_REGISTRY"] == ENV.registry and env["SKIFF_FEATURE_STORE_YAML"] == "feature_store.cluster.yaml"
    # a tabular version without a feature service gets none
    reg.register("churn", {"w": 1}, {})
    plain = to_dict(build_inference_service(ENV, ModelDeployment(name="churn", version=1),
                                            reg.get("churn", 1).metadata, registry_uri=ENV.registry, images=IMAGES))
    assert "transformer" not in plain["spec"]
