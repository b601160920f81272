"""What a cluster run's logging and Azure ML sync get from their namespace, in the compiled IR and the chart.

* The steps that log to MLflow read the credentials Secret (tests/golden/test_compile.py holds which); the
  chart never renders that Secret, it documents it.
* The register step mounts the GitOps environments read-only (one optional ConfigMap per environment) and
  reads SKIFF_ENVIRONMENTS from an optional ConfigMap; no other step does. The chart renders those
  ConfigMaps from ``pipelineEnvironments``, and skiff's own reader of the folder finds the environment that
  opted in when their data is laid out as the kubelet mounts it.
"""

import yaml

from pipelines.runner import compile_pipeline
from skiff import cluster
from skiff.cloud.azure.workspace import targets
from tests.unit.test_helm import PLATFORM, by_kind, render, render_error

AZUREML = {"subscription_id": "00000000-0000-0000-0000-000000000000", "resource_group": "ml", "workspace": "ml-prod",
           "on_register": True}


def test_only_the_register_steps_mount_the_environments_read_only_and_optional(tmp_path):
    register = {"tabular": {"register"}, "image": {"register-image-op", "register-image-op-2"},
                "recommender": {"register-recs-op"}}
    for name, wanted in register.items():
        _, platform = yaml.safe_load_all(compile_pipeline(name, tmp_path / f"{name}.yaml").read_text())
        executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        mounting = set()
        for executor, config in executors.items():
            envs = [v for v in config["configMapAsVolume"] if v["configMapName"] != cluster.SETTINGS_CONFIG_MAP]
            if not envs:
                assert all(e["configMapName"] == cluster.SETTINGS_CONFIG_MAP for e in config["configMapAsEnv"])
                continue
            mounting.add(executor.removeprefix("exec-"))
            assert [(v["configMapName"], v["mountPath"], v["optional"]) for v in envs] == [
                (cluster.environment_config_map(env), f"{cluster.ENVIRONMENTS_MOUNT}/{env}", True)
                for env in cluster.PIPELINE_ENVIRONMENTS]
            (env_map,) = [e for e in config["configMapAsEnv"] if e["configMapName"] == cluster.ENVIRONMENTS_CONFIG_MAP]
            assert env_map["keyToEnv"] == [{"configMapKey": "SKIFF_ENVIRONMENTS", "envVar": "SKIFF_ENVIRONMENTS"}]
            assert env_map["optional"] is True
        assert mounting == wanted, name


def _mounted(docs: list[dict], root):
    """The environments folder as the register step sees it: each ConfigMap's data under its mount path."""
    maps = by_kind(docs, "ConfigMap")
    for env in cluster.PIPELINE_ENVIRONMENTS:
        folder = root / env
        folder.mkdir(parents=True)  # an optional ConfigMap that does not exist is an empty folder
        for key, text in (maps.get(cluster.environment_config_map(env)) or {}).get("data", {}).items():
            (folder / key).write_text(text)
    return maps


def test_the_chart_renders_the_environments_the_register_step_reads(tmp_path):
    sets = tuple(f"pipelineEnvironments.prod.azureml.{k}={str(v).lower() if isinstance(v, bool) else v}"
                 for k, v in AZUREML.items()) + ("pipelineEnvironments.dev.environment.namespace=dev",)
    docs = render("skiff", (str(PLATFORM / "ci/minimal-values.yaml"),), sets)
    maps = _mounted(docs, tmp_path / "environments")
    index = maps[cluster.ENVIRONMENTS_CONFIG_MAP]
    assert index["data"] == {"SKIFF_ENVIRONMENTS": cluster.ENVIRONMENTS_MOUNT}
    assert cluster.environment_config_map("staging") not in maps  # not given: not rendered, mounted empty
    dev = yaml.safe_load(maps[cluster.environment_config_map("dev")]["data"]["environment.yaml"])
    assert dev["name"] == "dev" and dev["namespace"] == "dev" and dev["registry"].endswith("/models")
    assert "azureml.yaml" not in maps[cluster.environment_config_map("dev")]["data"]
    # skiff's own reader of the folder: prod opted in, with its workspace; dev and staging did not
    (found,) = targets(tmp_path / "environments")
    assert (found.env, found.workspace, found.on_register) == ("prod", "ml-prod", True)
    assert found.subscription_id == AZUREML["subscription_id"]


def test_without_environments_nothing_is_rendered_and_an_unknown_one_is_refused():
    plain = by_kind(render("skiff", (str(PLATFORM / "ci/minimal-values.yaml"),)), "ConfigMap")
    assert not {n for n in plain if n.startswith(cluster.ENVIRONMENTS_CONFIG_MAP)}
    error = render_error("skiff", (str(PLATFORM / "ci/minimal-values.yaml"),),
                         ("pipelineEnvironments.qa.azureml.workspace=w",))
    assert "pipelineEnvironments.qa" in error and "dev, staging, prod" in error
    assert list(cluster.PIPELINE_ENVIRONMENTS) == ["dev", "staging", "prod"]  # the template's list


def test_the_chart_documents_the_mlflow_secret_and_never_renders_it():
    values = (PLATFORM / "values.yaml").read_text()
    assert cluster.MLFLOW_SECRET_NAME in values
    assert all(s.key in values for s in cluster.MLFLOW_SECRETS)
    docs = render("skiff", (str(PLATFORM / "ci/full-values.yaml"),))
    assert cluster.MLFLOW_SECRET_NAME not in by_kind(docs, "Secret")
