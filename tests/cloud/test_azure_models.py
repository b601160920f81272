"""skiff versions as Azure ML models: the entity and its YAML (the SDK's own schema), the calls MLClient makes
against a local Resource Manager (bodies read back with the SDK's REST models), registration and promotion
hooks, pending syncs and the back-fill."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.ai.ml", reason="the azure extra (azure-ai-ml) is not installed")

from azure.ai.ml import load_model  # noqa: E402
from azure.ai.ml._restclient.arm_ml_service.models import ModelVersion as RestModelVersion  # noqa: E402
from sklearn.dummy import DummyClassifier  # noqa: E402

from skiff.cloud.azure import models as azml  # noqa: E402
from skiff.cloud.azure import workspace  # noqa: E402
from skiff.errors import ConfigError, SourceError, UsageError  # noqa: E402
from skiff.registry import ModelRegistry  # noqa: E402
from skiff.storage import Store  # noqa: E402
from tests.cloud.azure_fixtures import (  # noqa: E402
    ACCOUNT,
    CONTAINER,
    MFE,
    REGISTRY,
    RESOURCE_GROUP,
    SUBSCRIPTION,
    WORKSPACE,
    FakeAzure,
    FakeCredential,
    rest_unknown_fields,
)

pytest_plugins = ["tests.cloud.azure_fixtures"]

BLOB_REGISTRY = f"https://{ACCOUNT}.blob.core.windows.net/{CONTAINER}/models"
ABFSS_REGISTRY = f"abfss://{CONTAINER}@{ACCOUNT}.dfs.core.windows.net/models"
META = {"metrics": {"roc_auc": 0.8123456789, "f1": 0.5}, "data_fingerprint": "sha256:abc123",
        "gate": {"metric": "roc_auc", "promote": True, "reason": "first champion", "margin": 0.0},
        "estimator": "logistic_regression", "problem_type": "binary_classification"}


def _envs(root: Path, *, opted: dict[str, dict[str, Any]]) -> Path:
    for env in ("dev", "staging", "prod"):
        d = root / "environments" / env
        d.mkdir(parents=True)
        (d / "environment.yaml").write_text(f"name: {env}\nnamespace: skiff\nregistry: {BLOB_REGISTRY}\n"
                                            f"ingress_domain: {env}.example.com\n")
        if env in opted:
            where = ({} if "registry_name" in opted[env] else
                     {"subscription_id": SUBSCRIPTION, "resource_group": RESOURCE_GROUP, "workspace": WORKSPACE})
            body = {**where, **opted[env]}
            (d / "azureml.yaml").write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in body.items()))
    return root / "environments"


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    reg = ModelRegistry(Store(str(tmp_path / "models")))
    model = DummyClassifier().fit([[0], [1]], [0, 1])
    reg.register("churn", model, META)
    mlmodel = tmp_path / "MLmodel"
    mlmodel.write_text("flavors:\n  sklearn: {}\n")
    reg.register("churn", model, {**META, "metrics": {"roc_auc": 0.85}}, files={"MLmodel": mlmodel})
    return reg


@pytest.fixture
def factory(fake_azure: FakeAzure, azure_cloud: dict[str, Any]) -> Any:
    cred = FakeCredential()

    def make(t: workspace.AzureMLTarget) -> Any:
        return workspace.ml_client(t, cred, retry_total=0, **azure_cloud)

    make.credential = cred  # type: ignore[attr-defined]
    return make


# -- the entity ------------------------------------------------------------------------------------------
def test_abfss_path_forms() -> None:
    assert azml.abfss_path(f"abfs://{CONTAINER}@{ACCOUNT}.dfs.core.windows.net/models/churn/3") == \
        f"{ABFSS_REGISTRY}/churn/3"
    assert azml.abfss_path("az://skiff/models/churn/3", {"account_name": ACCOUNT}) == f"{ABFSS_REGISTRY}/churn/3"
    assert azml.abfss_path(BLOB_REGISTRY + "/") == ABFSS_REGISTRY
    assert azml.abfss_path("https://acct.blob.core.chinacloudapi.cn/c/p") == "abfss://c@acct.dfs.core.chinacloudapi.cn/p"
    with pytest.raises(UsageError, match="ADLS"):
        azml.abfss_path("s3://bucket/models")
    with pytest.raises(UsageError, match="no storage account"):
        azml.abfss_path("abfs://skiff/models")


def test_entity_custom_and_mlflow_types_tags_and_yaml_round_trip(registry: ModelRegistry, tmp_path: Path) -> None:
    v1, v2 = registry.get("churn", 1), registry.get("churn", 2)
    m1 = azml.model_entity(v1, registry=BLOB_REGISTRY, environments={"dev": "2026-12-01T00:00:00+00:00"},
                           stage="dev")
    assert (m1.type, m1.path) == ("custom_model", f"{ABFSS_REGISTRY}/churn/1")
    assert m1.name == "churn" and m1.version == "1" and m1.stage == "dev"
    assert m1.tags == {
        "skiff.version_id": "churn/1", "skiff.uri": v1.uri, "metric.f1": "0.5", "metric.roc_auc": "0.8123456789",
        "data_fingerprint": "sha256:abc123", "gate.promote": "true", "gate.metric": "roc_auc",
        "gate.reason": "first champion", "skiff.env.dev": "2026-12-01T00:00:00+00:00"}
    assert m1.properties["skiff.estimator"] == "logistic_regression"
    m2 = azml.model_entity(v2, registry=BLOB_REGISTRY)
    # the version holds an MLflow export (its MLmodel file): Azure ML's mlflow_model, at that folder
    assert (m2.type, m2.path) == ("mlflow_model", f"{ABFSS_REGISTRY}/churn/2")
    for i, m in enumerate((m1, m2)):
        path = tmp_path / f"model{i}.yaml"
        m.dump(path)  # written with the SDK's ModelSchema
        loaded = load_model(path)  # read back and validated with the same schema
        assert loaded._to_dict() == m._to_dict()
        assert loaded._to_rest_object().as_dict() == m._to_rest_object().as_dict()


def test_entity_without_a_registry_location_uses_the_version_uri(registry: ModelRegistry) -> None:
    mv = registry.get("churn", 1).model_copy(update={"uri": f"abfs://{CONTAINER}@{ACCOUNT}.dfs.core.windows.net/"
                                                            "models/churn/1"})
    assert azml.model_path(mv) == ("custom_model", f"{ABFSS_REGISTRY}/churn/1")
    with pytest.raises(UsageError):
        azml.model_path(registry.get("churn", 1))  # a local registry: Azure ML cannot read it


def test_mlflow_export_in_a_subfolder_points_at_that_folder(registry: ModelRegistry) -> None:
    mv = registry.get("churn", 1)
    mv = mv.model_copy(update={"metadata": mv.metadata.model_copy(update={"files": ["report.html",
                                                                                     "mlflow/MLmodel"]})})
    assert azml.model_path(mv, BLOB_REGISTRY) == ("mlflow_model", f"{ABFSS_REGISTRY}/churn/1/mlflow")


# -- the workspace config --------------------------------------------------------------------------------
def test_opt_in_files(tmp_path: Path) -> None:
    root = _envs(tmp_path, opted={"dev": {}, "prod": {"on_register": False}})
    ts = workspace.targets(root)
    assert [(t.env, t.on_register, t.registry) for t in ts] == [("dev", True, BLOB_REGISTRY),
                                                                ("prod", False, BLOB_REGISTRY)]
    assert workspace.target(root, "staging") is None
    (root / "dev" / "azureml.yaml").write_text("workspace: w\nextra_key: 1\n")
    with pytest.raises(ConfigError, match="azureml.yaml.*(subscription_id|extra_key)"):
        workspace.target(root, "dev")
    with pytest.raises(ConfigError, match="not found"):
        workspace.target(root, "qa")


# -- MLClient against the local Resource Manager ---------------------------------------------------------
def test_sync_models_back_fills_every_version_with_the_sdk_rest_bodies(
        registry: ModelRegistry, tmp_path: Path, fake_azure: FakeAzure, factory: Any) -> None:
    root = _envs(tmp_path, opted={"dev": {}})
    results = azml.sync_models(registry, "churn", environments=root, client_factory=factory)
    assert [(r.env, r.version, r.status, r.type, r.path) for r in results] == [
        ("dev", 1, "synced", "custom_model", f"{ABFSS_REGISTRY}/churn/1"),
        ("dev", 2, "synced", "mlflow_model", f"{ABFSS_REGISTRY}/churn/2")]
    puts = fake_azure.calls("PUT", r"/models/churn/versions/\d+$")
    assert [p.path.rsplit("/", 1)[1] for p in puts] == ["1", "2"]
    assert all(p.query["api-version"] for p in puts)
    assert all(p.authorization and p.authorization.startswith("Bearer fake-aad-token-") for p in puts)
    for put, version in zip(puts, (1, 2), strict=True):
        rest = RestModelVersion(put.body)  # the SDK's own REST model of a model version
        assert rest_unknown_fields(rest) == []
        assert rest.properties.model_uri == f"{ABFSS_REGISTRY}/churn/{version}"
        assert rest.properties.tags["skiff.version_id"] == f"churn/{version}"
        assert rest.properties.tags["data_fingerprint"] == "sha256:abc123"
    assert RestModelVersion(puts[1].body).properties.model_type == "mlflow_model"
    assert factory.credential.scopes and all(s.endswith("/.default") for s in factory.credential.scopes)
    # again: the same two versions, updated in place (idempotent)
    azml.sync_models(registry, "churn", environments=root, client_factory=factory)
    assert sorted(fake_azure.models) == [("churn", "1"), ("churn", "2")]


def test_registration_when_azure_ml_is_down_is_pending_then_sync_models_completes_it(
        registry: ModelRegistry, tmp_path: Path, fake_azure: FakeAzure, factory: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    root = _envs(tmp_path, opted={"dev": {}, "prod": {"on_register": False}})
    fake_azure.down = True
    out = azml.on_register(registry, registry.get("churn", 2), environments=root, client_factory=factory)
    assert [(r.env, r.status) for r in out] == [("dev", "pending")]  # prod syncs on promotion only
    assert "pending" in caplog.text and "sync-models churn" in caplog.text
    assert "fake-aad-token" not in caplog.text
    waiting = azml.pending(registry, "churn")
    assert [(p["env"], p["version"]) for p in waiting] == [("dev", 2)]
    assert "HttpResponseError" in waiting[0]["reason"] or "503" in waiting[0]["reason"]
    fake_azure.down = False
    with pytest.raises(UsageError, match="has not opted in"):
        azml.sync_models(registry, "churn", environments=root, env="staging", client_factory=factory)
    azml.sync_models(registry, "churn", environments=root, env="dev", client_factory=factory)
    assert azml.pending(registry, "churn") == []
    assert ("churn", "2") in fake_azure.models


def test_sync_models_fails_clearly_when_the_workspace_is_down(
        registry: ModelRegistry, tmp_path: Path, fake_azure: FakeAzure, factory: Any) -> None:
    root = _envs(tmp_path, opted={"dev": {}})
    fake_azure.down = True
    with pytest.raises(SourceError, match=f"{WORKSPACE}.*dev.*churn version 1"):
        azml.sync_models(registry, "churn", environments=root, client_factory=factory)


def test_promotion_adds_the_environment_tag_and_stage_keeping_earlier_ones(
        registry: ModelRegistry, tmp_path: Path, fake_azure: FakeAzure, factory: Any) -> None:
    root = _envs(tmp_path, opted={"dev": {}, "prod": {"on_register": False}})
    first = azml.on_register(registry, registry.get("churn", 1), environments=root, client_factory=factory)
    assert [(r.env, r.status, r.stage) for r in first] == [("dev", "synced", None)]
    dev = azml.on_promote(registry, "dev", "churn", 1, environments=root, client_factory=factory)
    prod = azml.on_promote(registry, "prod", "churn", 1, environments=root, client_factory=factory)
    assert dev is not None and prod is not None and prod.stage == "prod"
    assert azml.on_promote(registry, "staging", "churn", 1, environments=root, client_factory=factory) is None
    last = RestModelVersion(fake_azure.calls("PUT", r"/models/churn/versions/1$")[-1].body)
    assert rest_unknown_fields(last) == []
    assert last.properties.stage == "prod"
    assert {"skiff.env.dev", "skiff.env.prod"} <= set(last.properties.tags)
    # a promotion Azure ML missed is recorded, and the back-fill applies it
    fake_azure.down = True
    pend = azml.on_promote(registry, "dev", "churn", 2, environments=root, client_factory=factory)
    assert pend is not None and pend.status == "pending"
    fake_azure.down = False
    azml.sync_models(registry, "churn", environments=root, env="dev", client_factory=factory)
    v2 = RestModelVersion(fake_azure.calls("PUT", r"/models/churn/versions/2$")[-1].body)
    assert v2.properties.stage == "dev" and "skiff.env.dev" in v2.properties.tags
    assert azml.pending(registry, "churn") == []


def test_register_step_calls_the_hook_with_the_default_client(
        tmp_path: Path, fake_azure: FakeAzure, azure_cloud: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The register step's own code path: opted-in environment found through SKIFF_ENVIRONMENTS, the
    workspace's cloud by name (as an azureml.yaml names a sovereign cloud), the identity from azure-identity."""
    from components.register.logic import register_version

    workspace.ml_client(workspace.AzureMLTarget(subscription_id="s", resource_group="r", workspace="w"),
                        FakeCredential(), **azure_cloud)  # makes the local cloud known to the SDK by name
    root = _envs(tmp_path, opted={"dev": {"cloud": azure_cloud["cloud"]}})
    monkeypatch.setenv("SKIFF_ENVIRONMENTS", str(root))
    monkeypatch.setattr(workspace, "credential", FakeCredential)
    reg = ModelRegistry(Store(str(tmp_path / "models")))
    result = register_version(reg, "churn", DummyClassifier().fit([[0], [1]], [0, 1]), META, promote=True,
                              reason="first")
    assert result.version == 1
    put = fake_azure.calls("PUT", r"/models/churn/versions/1$")
    assert len(put) == 1 and RestModelVersion(put[0].body).properties.tags["gate.promote"] == "true"


def test_register_step_registers_even_when_azure_is_unreachable(
        tmp_path: Path, fake_azure: FakeAzure, azure_cloud: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from components.register.logic import register_version

    workspace.ml_client(workspace.AzureMLTarget(subscription_id="s", resource_group="r", workspace="w"),
                        FakeCredential(), **azure_cloud)
    root = _envs(tmp_path, opted={"dev": {"cloud": azure_cloud["cloud"]}})
    monkeypatch.setenv("SKIFF_ENVIRONMENTS", str(root))
    monkeypatch.setattr(workspace, "credential", FakeCredential)
    fake_azure.down = True
    reg = ModelRegistry(Store(str(tmp_path / "models")))
    result = register_version(reg, "churn", DummyClassifier().fit([[0], [1]], [0, 1]), META, promote=False,
                              reason="candidate")
    assert result.version == 1 and reg.get("churn", 1).version == 1
    assert [(p["env"], p["version"]) for p in azml.pending(reg, "churn")] == [("dev", 1)]


def test_skiff_promote_tags_the_version_in_the_workspace(
        tmp_path: Path, fake_azure: FakeAzure, azure_cloud: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The promote command's own path (skiff/cli/rollout.py): the Git record changes, then the hook tags."""
    from skiff.cli import main

    workspace.ml_client(workspace.AzureMLTarget(subscription_id="s", resource_group="r", workspace="w"),
                        FakeCredential(), **azure_cloud)  # the local cloud, known to the SDK by name
    monkeypatch.setattr(workspace, "credential", FakeCredential)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SKIFF_ROOT", str(tmp_path / ".skiff"))
    monkeypatch.delenv("SKIFF_CONFIG", raising=False)
    root = _envs(tmp_path, opted={"prod": {"on_register": False, "cloud": azure_cloud["cloud"]}})
    reg = ModelRegistry(Store(str(tmp_path / ".skiff" / "models")))
    reg.register("churn", DummyClassifier().fit([[0], [1]], [0, 1]), META)
    code = main(["promote", "churn", "--version", "1", "--env", "prod", "--environments", str(root), "--json"])
    assert code == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["version"] == 1
    put = RestModelVersion(fake_azure.calls("PUT", r"/models/churn/versions/1$")[-1].body)
    assert put.properties.stage == "prod" and "skiff.env.prod" in put.properties.tags


# -- an Azure ML registry as the target ------------------------------------------------------------------
_REGISTRY_VERSIONS = rf"^{MFE}/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/" \
    rf"Microsoft.MachineLearningServices/registries/{REGISTRY}/models/churn/versions/(\d+)$"


def _registry_puts(fake: FakeAzure, version: int | None = None) -> list[Any]:
    return [r for r in fake.calls("PUT", _REGISTRY_VERSIONS)
            if version is None or r.path.endswith(f"/versions/{version}")]


def _sdk_body(put: Any) -> Any:
    """The PUT's body read back with the SDK's REST model of a model version: it holds nothing the model
    does not define, except the SDK's own ``system_metadata`` placeholder (null, sent on every registry PUT)."""
    rest = RestModelVersion(put.body)
    assert set(rest_unknown_fields(rest)) <= {"properties.system_metadata"}
    assert put.body["properties"].get("system_metadata") is None
    return rest


def test_registry_targets_in_azureml_yaml(tmp_path: Path) -> None:
    root = _envs(tmp_path, opted={"dev": {}, "prod": {"registry_name": REGISTRY, "on_register": False}})
    dev, prod = workspace.targets(root)
    assert (dev.is_registry, dev.label) == (False, f"workspace {WORKSPACE}")
    assert (prod.is_registry, prod.label, prod.subscription_id, prod.registry) == (
        True, f"registry {REGISTRY}", None, BLOB_REGISTRY)
    assert prod.workspace_key != dev.workspace_key
    both = {"subscription_id": SUBSCRIPTION, "resource_group": RESOURCE_GROUP, "workspace": WORKSPACE,
            "registry_name": REGISTRY}
    for body, problem in ((both, "either a workspace"), ({"on_register": True}, "either a workspace"),
                          ({"workspace": WORKSPACE}, "subscription_id and resource_group"),
                          ({"registry_name": "a b"}, "registry_name")):
        (root / "dev" / "azureml.yaml").write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in body.items()))
        with pytest.raises(ConfigError, match=problem):
            workspace.target(root, "dev")


def test_sync_models_into_a_registry_with_the_sdk_rest_bodies(
        registry: ModelRegistry, tmp_path: Path, fake_azure: FakeAzure, factory: Any) -> None:
    root = _envs(tmp_path, opted={"prod": {"registry_name": REGISTRY}})
    results = azml.sync_models(registry, "churn", environments=root, client_factory=factory)
    assert [(r.env, r.registry_name, r.workspace, r.version, r.status, r.type, r.path) for r in results] == [
        ("prod", REGISTRY, None, 1, "synced", "custom_model", f"{ABFSS_REGISTRY}/churn/1"),
        ("prod", REGISTRY, None, 2, "synced", "mlflow_model", f"{ABFSS_REGISTRY}/churn/2")]
    # the registry was found through registry discovery, then reached on its management front end
    discovery = fake_azure.calls("GET", f"^/registrymanagement/v1.0/registries/{REGISTRY}/discovery$")
    assert len(discovery) == 1
    puts = _registry_puts(fake_azure)
    assert [p.path.rsplit("/", 1)[1] for p in puts] == ["1", "2"]
    assert all(p.query["api-version"] == ["2021-10-01-dataplanepreview"] for p in puts)
    assert all(p.authorization and p.authorization.startswith("Bearer fake-aad-token-") for p in puts)
    for put, version in zip(puts, (1, 2), strict=True):
        rest = _sdk_body(put)
        assert rest.properties.model_uri == f"{ABFSS_REGISTRY}/churn/{version}"
        assert rest.properties.tags["skiff.version_id"] == f"churn/{version}"
        assert rest.properties.tags["metric.roc_auc"] in ("0.8123456789", "0.85")
        assert rest.properties.tags["gate.promote"] == "true"
    assert _sdk_body(puts[1]).properties.model_type == "mlflow_model"
    assert fake_azure.models == {}  # no workspace was written
    # the SDK's own read of what the registry holds: the same model as the entity skiff builds
    client = factory(workspace.target(root, "prod"))
    got = client.models.get("churn", "2")
    assert got.id == f"azureml://registries/{REGISTRY}/models/churn/versions/2"
    want = azml.model_entity(registry.get("churn", 2), registry=BLOB_REGISTRY)
    assert (got.type, got.path, got.tags) == (want.type, want.path, want.tags)
    # again: updated in place
    azml.sync_models(registry, "churn", environments=root, client_factory=factory)
    assert sorted(fake_azure.registry_models) == [("churn", "1"), ("churn", "2")]


def test_registration_and_promotion_in_a_registry_with_pending_syncs(
        registry: ModelRegistry, tmp_path: Path, fake_azure: FakeAzure, factory: Any) -> None:
    root = _envs(tmp_path, opted={"dev": {}, "prod": {"registry_name": REGISTRY, "on_register": False},
                                  "staging": {"registry_name": REGISTRY}})
    first = azml.on_register(registry, registry.get("churn", 1), environments=root, client_factory=factory)
    # dev's workspace and staging's registry (prod, the same registry, syncs on promotion only)
    assert sorted((r.env, r.status, r.workspace, r.registry_name) for r in first) == [
        ("dev", "synced", WORKSPACE, None), ("staging", "synced", None, REGISTRY)]
    assert ("churn", "1") in fake_azure.models and ("churn", "1") in fake_azure.registry_models
    prod = azml.on_promote(registry, "prod", "churn", 1, environments=root, client_factory=factory)
    assert prod is not None and (prod.status, prod.stage, prod.registry_name) == ("synced", "prod", REGISTRY)
    last = _sdk_body(_registry_puts(fake_azure, 1)[-1])
    assert last.properties.stage == "prod" and "skiff.env.prod" in last.properties.tags
    # the registry unreachable (discovery included): a pending record naming it, completed by the back-fill
    fake_azure.down = True
    pend = azml.on_promote(registry, "prod", "churn", 2, environments=root, client_factory=factory)
    assert pend is not None and pend.status == "pending"
    waiting = azml.pending(registry, "churn")
    assert [(p["env"], p["version"], p["registry_name"], p["workspace"]) for p in waiting] == [
        ("prod", 2, REGISTRY, None)]
    with pytest.raises(SourceError, match=f"registry {REGISTRY}.*prod"):
        azml.sync_models(registry, "churn", environments=root, env="prod", client_factory=factory)
    fake_azure.down = False
    azml.sync_models(registry, "churn", environments=root, env="prod", client_factory=factory)
    v2 = _sdk_body(_registry_puts(fake_azure, 2)[-1])
    assert v2.properties.stage == "prod" and "skiff.env.prod" in v2.properties.tags
    assert azml.pending(registry, "churn") == []


def test_sync_models_cli_into_a_registry(registry: ModelRegistry, tmp_path: Path, fake_azure: FakeAzure,
                                         azure_cloud: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The command's own path: the registry's client from the default factory, the cloud named in azureml.yaml."""
    from skiff.cli import main

    workspace.ml_client(workspace.AzureMLTarget(subscription_id="s", resource_group="r", workspace="w"),
                        FakeCredential(), **azure_cloud)  # the local cloud, known to the SDK by name
    monkeypatch.setattr(workspace, "credential", FakeCredential)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SKIFF_ROOT", str(tmp_path))  # the registry fixture's models/ folder
    monkeypatch.delenv("SKIFF_CONFIG", raising=False)
    root = _envs(tmp_path, opted={"prod": {"registry_name": REGISTRY, "cloud": azure_cloud["cloud"]}})
    code = main(["cloud", "azure", "sync-models", "churn", "--environments", str(root)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert f"prod: registry {REGISTRY} churn:2 mlflow_model" in out.out
    assert len(_registry_puts(fake_azure)) == 2
    # a compute target belongs to a workspace: an environment that names a registry cannot take one
    from tests.cloud.test_azure_compute import TF_OUTPUTS

    (tmp_path / "aks.json").write_text(json.dumps(TF_OUTPUTS))
    code = main(["cloud", "azure", "attach-compute", "--env", "prod", "--tf-outputs", str(tmp_path / "aks.json"),
                 "--environments", str(root)])
    assert code == 2 and f"registry {REGISTRY}" in capsys.readouterr().err
    assert fake_azure.calls("PUT", "/computes/") == []


def test_without_an_identity_sync_models_is_a_config_error_and_registration_a_pending_sync(
        registry: ModelRegistry, tmp_path: Path, fake_azure: FakeAzure, azure_cloud: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """azure-identity's own chain with nothing to find (EnvironmentCredential without its variables)."""
    from azure.identity import ChainedTokenCredential, EnvironmentCredential

    from skiff.cli import main

    for key in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr("azure.identity.DefaultAzureCredential",
                        lambda **_: ChainedTokenCredential(EnvironmentCredential()))
    workspace.ml_client(workspace.AzureMLTarget(subscription_id="s", resource_group="r", workspace="w"),
                        FakeCredential(), **azure_cloud)  # the local cloud, known to the SDK by name
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SKIFF_ROOT", str(tmp_path))
    monkeypatch.delenv("SKIFF_CONFIG", raising=False)
    root = _envs(tmp_path, opted={"dev": {"cloud": azure_cloud["cloud"]},
                                  "prod": {"registry_name": REGISTRY, "cloud": azure_cloud["cloud"]}})
    for env in ("dev", "prod"):
        code = main(["cloud", "azure", "sync-models", "churn", "--env", env, "--environments", str(root)])
        err = capsys.readouterr().err
        assert code == 2 and "no Azure identity found" in err and "unexpected" not in err, err
    out = azml.on_register(registry, registry.get("churn", 2), environments=root)
    assert sorted((r.env, r.status) for r in out) == [("dev", "pending"), ("prod", "pending")]
    assert all("no Azure identity found" in p["reason"] for p in azml.pending(registry, "churn"))
    assert fake_azure.requests == []
