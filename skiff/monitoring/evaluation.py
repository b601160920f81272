"""Evaluate a registered version on a data partition of the lake (``POST /models/{name}/versions/{v}/
evaluations``): the same metrics as the evaluate step (:mod:`skiff.metrics`), next to the version's
held-out test metrics, so a partition that arrived after training shows how the version does on it.

The partition's rows must hold the version's input columns and the target (a derived feature computed by
the feature pipeline is not in the raw rows: such a version is refused with the columns it lacks).
Rows with a missing target are left out and counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from skiff.config import Settings
from skiff.errors import UsageError

__all__ = ["evaluate_partition"]


def evaluate_partition(settings: Settings, model: str, version: int | str, *, dataset: str | None = None,
                       dates: Sequence[str] | None = None) -> dict[str, Any]:
    """Metrics of ``model`` version ``version`` on the lake rows of ``dataset`` (default: the one it was
    trained on) at ``dates`` (default: the latest partition)."""
    from skiff.lake import Lake
    from skiff.metrics import score_metrics
    from skiff.modeling import positive_label, target_array
    from skiff.registry import ModelRegistry
    from skiff.spec import DatasetSpec

    registry = ModelRegistry.from_settings(settings)
    mv = registry.get(model, version)
    meta = mv.metadata
    if meta.flavor != "sklearn":
        raise UsageError(f"{model} version {mv.version}: evaluations on a partition take scikit-learn versions, "
                         f"not {meta.flavor}")
    if not meta.dataset.get("spec") or not meta.target:
        raise UsageError(f"{model} version {mv.version} records no dataset spec or target to evaluate against")
    spec = DatasetSpec.model_validate(meta.dataset["spec"])
    name = dataset or str(meta.dataset.get("name") or spec.name)
    lake = Lake.from_settings(settings)
    chosen = list(dates) if dates else [lake.latest_partition(name)]
    frame = lake.read(name, chosen).to_pandas()
    missing = [c for c in [*meta.features, meta.target] if c not in frame.columns]
    if missing:
        raise UsageError(f"dataset {name!r} {', '.join(chosen)} lacks column(s) of {model} version {mv.version}: "
                         f"{', '.join(missing)} (derived features are not in the raw rows)")
    labeled = frame[frame[meta.target].notna()]
    if labeled.empty:
        raise UsageError(f"dataset {name!r} {', '.join(chosen)} has no row with a target value")
    y = target_array(labeled[meta.target], spec)
    estimator = registry.load_model(model, mv.version)
    X = labeled[list(meta.features)]
    problem = str(meta.problem_type or spec.problem_type)
    if problem == "regression":
        metrics = score_metrics(problem, y, np.asarray(estimator.predict(X), dtype=float))
    else:
        classes = list(estimator.classes_)
        positive = positive_label(classes, spec) if problem == "binary" else None
        metrics = score_metrics(problem, y, np.asarray(estimator.predict_proba(X), dtype=float), classes, positive,
                                0.5 if meta.threshold is None else float(meta.threshold))
    clean = {k: float(v) for k, v in metrics.items() if not math.isnan(float(v))}
    return {"model": model, "version": mv.version, "dataset": name, "partitions": chosen, "rows": len(frame),
            "evaluated": len(labeled), "missing_target": len(frame) - len(labeled), "metrics": clean,
            "test_metrics": dict(meta.metrics),
            "delta": {k: clean[k] - meta.metrics[k] for k in clean if k in meta.metrics}}
