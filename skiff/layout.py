"""The folders under the skiff root, and who may read and write each: one definition for every side.

The settings (:mod:`skiff.config`) derive the lake, artifacts, registry and Feast locations from the
root with these prefixes; the Helm chart reads the same definition from its copy
``helm/skiff/files/layout.json`` (kept equal to :func:`layout_document` by ``tests/unit/test_helm.py``);
the cloud policies (Terraform) must grant each workload identity exactly :data:`ACCESS` on
``<bucket or container>/<root prefix>/<prefix>/*``; the GitOps environment files name
``registry: <root>/models``.
"""

from __future__ import annotations

from typing import Any, Final, Literal

__all__ = ["LAKE", "ARTIFACTS", "MODELS", "FEAST", "ROLLOUTS", "INFERENCE", "PREFIXES", "NAMED", "ACCESS", "Workload",
           "layout_document"]

#: Ingested runs (``raw/<dataset>/<date>/run=<id>/``) and the offline feature sources (``features/``).
LAKE: Final = "lake"
#: Pipeline artifacts: the Kubeflow Pipelines pipeline root of cluster runs, reports.
ARTIFACTS: Final = "artifacts"
#: The model registry (``<name>/<version>/``).
MODELS: Final = "models"
#: The Feast registry (``registry.db``); the local engine's SQLite online store too.
FEAST: Final = "feast"
#: The rollout controller's state (``<env>/<model>.json``).
ROLLOUTS: Final = "rollouts"
#: The inference log (``<model>/version=<v>/date=.../hour=.../``, :mod:`skiff.inference_log`): its own
#: prefix, not under the lake, so serving may write it without being able to write (or read) the lake.
INFERENCE: Final = "inference"

#: Every top-level prefix under the root and what it holds.
PREFIXES: Final[dict[str, str]] = {
    LAKE: "ingested runs and offline feature sources",
    ARTIFACTS: "pipeline artifacts (the pipeline root of cluster runs)",
    MODELS: "the model registry",
    FEAST: "the Feast registry",
    ROLLOUTS: "canary rollout state",
    INFERENCE: "the inference log of served models",
}

Workload = Literal["pipeline", "serving", "rollout", "api", "stream"]

#: What each workload identity reads and writes under the root (least privilege; the cloud policies grant
#: exactly this). Pipelines write everything a run produces; serving (predictors, transformers, the Feast
#: feature server) reads models and the Feast registry and writes the inference log (reading it too: a
#: writer lists what it wrote, and the cloud policies grant writes only within reads); the monitor runs as
#: a pipeline and reads the log (the drift reference comes from the registry, so it writes nothing there);
#: the rollout controller reads models and keeps its state; the REST API reads what it lists and sets champions (its promotions and rollbacks edit the GitOps
#: folder, not the root); a stream consumer writes the lake only.
ACCESS: Final[dict[Workload, dict[Literal["read", "write"], tuple[str, ...]]]] = {
    "pipeline": {"read": (LAKE, ARTIFACTS, MODELS, FEAST, INFERENCE), "write": (LAKE, ARTIFACTS, MODELS, FEAST)},
    "serving": {"read": (MODELS, FEAST, INFERENCE), "write": (INFERENCE,)},
    "rollout": {"read": (MODELS, ROLLOUTS), "write": (ROLLOUTS,)},
    "api": {"read": (LAKE, ARTIFACTS, MODELS, ROLLOUTS), "write": (MODELS,)},
    "stream": {"read": (LAKE,), "write": (LAKE,)},
}


#: the role of each prefix (what the chart and Terraform look a prefix up by) -> the prefix
NAMED: Final[dict[str, str]] = {"lake": LAKE, "artifacts": ARTIFACTS, "models": MODELS, "feast": FEAST,
                                "rollouts": ROLLOUTS, "inference": INFERENCE}


def layout_document() -> dict[str, Any]:
    """The layout as plain data: what ``helm/skiff/files/layout.json`` holds (and Terraform may read):
    ``prefixes`` (role -> prefix), ``holds`` (prefix -> what it holds), ``access`` (workload -> read/write
    prefixes)."""
    return {
        "prefixes": dict(NAMED),
        "holds": dict(PREFIXES),
        "access": {w: {k: list(v) for k, v in rights.items()} for w, rights in ACCESS.items()},
    }
