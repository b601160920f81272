"""The names a cluster and skiff's code must agree on: namespace, service accounts, Secrets, ConfigMaps.

Compiled pipelines carry these names in their IR (kfp-kubernetes mounts the settings ConfigMap and the
Secrets into every step), :func:`pipelines.runner.submit` runs them as :data:`PIPELINE_SERVICE_ACCOUNT`,
the Helm chart's defaults are these values (``tests/unit/test_helm.py`` holds them equal), and the cloud
identities (Terraform's IRSA roles / federated credentials) trust ``<NAMESPACE>/<service account>``.
No value here is a credential: a Secret is named, never read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "NAMESPACE",
    "PIPELINE_SERVICE_ACCOUNT",
    "SERVING_SERVICE_ACCOUNT",
    "ROLLOUT_SERVICE_ACCOUNT",
    "API_SERVICE_ACCOUNT",
    "STREAM_SERVICE_ACCOUNT",
    "SERVICE_ACCOUNTS",
    "SETTINGS_CONFIG_MAP",
    "SETTINGS_KEY",
    "SETTINGS_MOUNT",
    "SETTINGS_PATH_KEY",
    "SecretEnv",
    "REDIS_SECRET",
    "DATABASE_SECRET",
    "MLFLOW_SECRET_NAME",
    "MLFLOW_SECRETS",
    "ENVIRONMENTS_MOUNT",
    "ENVIRONMENTS_CONFIG_MAP",
    "ENVIRONMENTS_PATH_KEY",
    "PIPELINE_ENVIRONMENTS",
    "environment_config_map",
]

#: The namespace of the platform: pipeline runs (a Kubeflow Pipelines profile namespace), serving, the API.
NAMESPACE: Final = "skiff"

#: Pipeline runs: reads and writes the lake, artifacts, registry and Feast registry.
PIPELINE_SERVICE_ACCOUNT: Final = "skiff-pipeline"
#: Predictors, transformers and the Feast feature server: reads models and the Feast registry.
SERVING_SERVICE_ACCOUNT: Final = "skiff-serving"
#: The canary rollout controller: patches InferenceServices, keeps rollout state.
ROLLOUT_SERVICE_ACCOUNT: Final = "skiff-rollout"
#: The REST API (``skiff api``).
API_SERVICE_ACCOUNT: Final = "skiff-api"
#: Stream consumers (``skiff stream``): write the lake.
STREAM_SERVICE_ACCOUNT: Final = "skiff-stream"

#: workload (skiff.layout.ACCESS's keys) -> its service account
SERVICE_ACCOUNTS: Final[dict[str, str]] = {
    "pipeline": PIPELINE_SERVICE_ACCOUNT,
    "serving": SERVING_SERVICE_ACCOUNT,
    "rollout": ROLLOUT_SERVICE_ACCOUNT,
    "api": API_SERVICE_ACCOUNT,
    "stream": STREAM_SERVICE_ACCOUNT,
}

#: The ConfigMap holding skiff.yaml (root, registry, storage options, log level) for processes in the cluster.
SETTINGS_CONFIG_MAP: Final = "skiff-settings"
#: Its key: the file name SKIFF_CONFIG points at.
SETTINGS_KEY: Final = "skiff.yaml"
#: Where pods mount it (SKIFF_CONFIG=<SETTINGS_MOUNT>/<SETTINGS_KEY>).
SETTINGS_MOUNT: Final = "/etc/skiff/config"
#: A second key of the same ConfigMap: the value of SKIFF_CONFIG in pipeline steps (the mounted file's path).
#: It comes from the ConfigMap, not from the compiled container env, because kfp.local applies a
#: container's env to local runs too and would point them at a file that exists only in the cluster.
SETTINGS_PATH_KEY: Final = "SKIFF_CONFIG"


@dataclass(frozen=True)
class SecretEnv:
    """One key of a Secret that a process reads as one environment variable."""

    name: str  # the Secret's name in the namespace
    key: str  # the key inside it
    env: str  # the variable skiff (or Feast) reads


#: The Redis connection string of the Feast online store (Feast's format: host:port,ssl=true,password=...);
#: the features step materializes into it and the feature server reads it. The cloud module writes it.
REDIS_SECRET: Final = SecretEnv(name="skiff-redis", key="connection-string", env="SKIFF_REDIS")
#: The control plane's PostgreSQL URL (SQLAlchemy form, password included): the registry's and GitOps
#: writes lock through it, and the REST API keeps its metadata there.
DATABASE_SECRET: Final = SecretEnv(name="skiff-database", key="url", env="SKIFF_DATABASE_URL")
#: The MLflow tracking server's credentials (the ``tracking_uri`` setting names the server, never them):
#: basic auth (``username``/``password``) or a bearer ``token``, whichever keys the Secret has (each is
#: optional). The steps that log runs read them as MLflow's own variables; nothing in skiff logs them.
MLFLOW_SECRET_NAME: Final = "skiff-mlflow"
MLFLOW_SECRETS: Final = (
    SecretEnv(name=MLFLOW_SECRET_NAME, key="username", env="MLFLOW_TRACKING_USERNAME"),
    SecretEnv(name=MLFLOW_SECRET_NAME, key="password", env="MLFLOW_TRACKING_PASSWORD"),
    SecretEnv(name=MLFLOW_SECRET_NAME, key="token", env="MLFLOW_TRACKING_TOKEN"),
)

#: The GitOps environments folder in the pods that read it (SKIFF_ENVIRONMENTS): the register step, whose
#: Azure ML sync (skiff.cloud.azure.models.on_register) reads ``<env>/environment.yaml`` and
#: ``<env>/azureml.yaml`` of every environment, as the rollout controller reads its own.
ENVIRONMENTS_MOUNT: Final = "/etc/skiff/environments"
#: The ConfigMap whose key ENVIRONMENTS_PATH_KEY is the value of SKIFF_ENVIRONMENTS in those steps (from a
#: ConfigMap, not the container env, for the reason of SETTINGS_PATH_KEY; absent: the variable is unset).
ENVIRONMENTS_CONFIG_MAP: Final = "skiff-environments"
ENVIRONMENTS_PATH_KEY: Final = "SKIFF_ENVIRONMENTS"
#: The environments compiled pipelines mount, each from its own ConfigMap (:func:`environment_config_map`)
#: at ``ENVIRONMENTS_MOUNT/<env>``: a ConfigMap's keys are flat, and kfp-kubernetes mounts a ConfigMap whole
#: (no ``items``), so one ConfigMap per folder. Each is optional: a missing one is an empty folder, which
#: the Azure ML sync skips. The names are the GitOps environments of infra/environments.
PIPELINE_ENVIRONMENTS: Final = ("dev", "staging", "prod")


def environment_config_map(env: str) -> str:
    """The ConfigMap holding ``<env>/environment.yaml`` and ``<env>/azureml.yaml`` for pipeline steps."""
    return f"{ENVIRONMENTS_CONFIG_MAP}-{env}"
