"""What each step of a cluster run gets from its namespace: skiff's settings, the Secrets it needs, its identity.

A Kubeflow Pipelines run executes its steps as pods in the pipeline namespace (:data:`skiff.cluster.NAMESPACE`),
as the pipeline service account (:func:`pipelines.runner.submit` sets it for the whole run). Through
kfp-kubernetes (platform config in the compiled IR, which kfp.local ignores) every step also:

* mounts the settings ConfigMap (:data:`skiff.cluster.SETTINGS_CONFIG_MAP`: root, registry, storage
  options, log level) and reads ``SKIFF_CONFIG`` from the same ConfigMap, so ``load_settings()`` in the
  step sees the cluster's settings;
* reads the Secrets it needs as environment variables and no others: the features step the Redis
  connection string (``SKIFF_REDIS``, the Feast online store it materializes into), the register step
  the PostgreSQL URL (``SKIFF_DATABASE_URL``, the registry's write locks), and every step that logs a run
  to MLflow (the register steps, the validation gate, the tracking step) the tracking server's credentials
  (:data:`skiff.cluster.MLFLOW_SECRETS`). They are optional: a cluster without them gets skiff's own error
  naming the missing variable (or, for MLflow, a warning and the run kept in the lake), not a pod stuck in
  CreateContainerConfigError;
* the register step also mounts the GitOps environments its Azure ML sync reads (one optional ConfigMap
  per environment of :data:`skiff.cluster.PIPELINE_ENVIRONMENTS`, read-only, at
  ``ENVIRONMENTS_MOUNT/<env>``) and reads ``SKIFF_ENVIRONMENTS`` from the optional
  :data:`skiff.cluster.ENVIRONMENTS_CONFIG_MAP`: the Helm chart renders them from ``pipelineEnvironments``;
* carries ``azure.workload.identity/use: "true"``, the label Azure's workload identity webhook acts on
  (meaningless elsewhere), so the service account's federated identity reaches the step on AKS too.
"""

from __future__ import annotations

from typing import Any

from kfp import kubernetes

from skiff.cluster import (
    DATABASE_SECRET,
    ENVIRONMENTS_CONFIG_MAP,
    ENVIRONMENTS_MOUNT,
    ENVIRONMENTS_PATH_KEY,
    MLFLOW_SECRETS,
    PIPELINE_ENVIRONMENTS,
    REDIS_SECRET,
    SETTINGS_CONFIG_MAP,
    SETTINGS_MOUNT,
    SETTINGS_PATH_KEY,
    SecretEnv,
    environment_config_map,
)

__all__ = ["AZURE_WORKLOAD_IDENTITY_LABEL", "in_namespace", "STEP_SECRETS", "ENVIRONMENT_STEPS"]

#: The pod label Azure workload identity injects the federated token for.
AZURE_WORKLOAD_IDENTITY_LABEL = "azure.workload.identity/use"

#: step (its task name in the IR) -> the Secrets it reads; every other step reads none
STEP_SECRETS: dict[str, tuple[SecretEnv, ...]] = {
    "features": (REDIS_SECRET,),
    "register": (DATABASE_SECRET, *MLFLOW_SECRETS),
    "validation-blocked": MLFLOW_SECRETS,
    "track": MLFLOW_SECRETS,
    # the exit task: marks a run that did not succeed failed in MLflow
    "track-final-status": MLFLOW_SECRETS,
    # the monitor job: the control plane (scores, alerts, retrain decisions) is the cluster's PostgreSQL
    "monitor": (DATABASE_SECRET,),
}

#: the steps that read the GitOps environments (the register steps: the Azure ML sync of a new version)
ENVIRONMENT_STEPS: frozenset[str] = frozenset({"register"})


def in_namespace(task: Any, step: str) -> Any:
    """``task`` wired to the pipeline namespace's settings ConfigMap and to the Secrets ``step`` needs."""
    kubernetes.use_config_map_as_volume(task, SETTINGS_CONFIG_MAP, mount_path=SETTINGS_MOUNT)
    kubernetes.use_config_map_as_env(task, SETTINGS_CONFIG_MAP, {SETTINGS_PATH_KEY: "SKIFF_CONFIG"})
    by_name: dict[str, dict[str, str]] = {}
    for secret in STEP_SECRETS.get(step, ()):
        by_name.setdefault(secret.name, {})[secret.key] = secret.env
    for name, keys in by_name.items():
        kubernetes.use_secret_as_env(task, name, keys, optional=True)
    if step in ENVIRONMENT_STEPS:
        for env in PIPELINE_ENVIRONMENTS:
            kubernetes.use_config_map_as_volume(task, environment_config_map(env),
                                                mount_path=f"{ENVIRONMENTS_MOUNT}/{env}", optional=True)
        kubernetes.use_config_map_as_env(task, ENVIRONMENTS_CONFIG_MAP, {ENVIRONMENTS_PATH_KEY: "SKIFF_ENVIRONMENTS"},
                                         optional=True)
    kubernetes.add_pod_label(task, AZURE_WORKLOAD_IDENTITY_LABEL, "true")
    return task
