"""The register step: an immutable model version, and the champion when the gate said so.

The champion is judged on the challenger's own test split (:func:`champion_metrics` re-scores it
there), so the evaluate step's gate compares both models on the same rows. Every trained model is
registered — as a candidate when it lost — so each run stays traceable.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict

from skiff.registry import ModelRegistry, VersionMetadata
from skiff.spec import DatasetSpec

__all__ = ["RegisterResult", "champion_metrics", "register_version", "input_schema", "data_fingerprint"]

log = logging.getLogger(__name__)


class RegisterResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    version: int
    uri: str
    champion: bool
    previous_champion: int | None
    reason: str


def champion_metrics(registry: ModelRegistry, name: str, test: pd.DataFrame, spec: DatasetSpec) -> dict[str, float]:
    """The current champion's metrics on ``test`` ({} when there is no champion)."""
    import math

    from components.evaluate.logic import evaluate

    champ = registry.champion_version(name)
    if champ is None or champ not in registry.version_numbers(name):
        return {}
    mv = registry.get(name, champ)
    model = registry.load_model(name, champ)
    features = mv.metadata.features or spec.feature_columns
    missing = [c for c in features if c not in test.columns]
    if missing:
        log.warning("champion %s v%s needs columns %s the new data lacks: it cannot be compared; "
                    "treating it as beaten", name, champ, missing)
        return {}
    result = evaluate(model, test[features], test[spec.target], spec, mv.metadata.threshold)
    return {k: float(v) for k, v in result.metrics.items() if isinstance(v, float) and math.isfinite(v)}


def input_schema(spec: DatasetSpec, features: list[str]) -> dict[str, str]:
    """Spec type of each model input (what the predictor checks requests against)."""
    derived = {d.name: d.type for d in spec.derived}
    return {c: spec.columns[c].type if c in spec.columns else derived.get(c, "float") for c in features}


def data_fingerprint(frame: pd.DataFrame) -> str:
    """A content hash of the training rows (order-independent)."""
    import hashlib

    hashed = pd.util.hash_pandas_object(frame, index=False).sort_values().to_numpy()
    return "sha256:" + hashlib.sha256(hashed.tobytes()).hexdigest()


def register_version(
    registry: ModelRegistry,
    name: str,
    model: Any,
    metadata: VersionMetadata | Mapping[str, Any],
    *,
    promote: bool,
    reason: str,
    files: Mapping[str, Path | str] | None = None,
) -> RegisterResult:
    """Publish the version; make it the champion when ``promote``."""
    previous = registry.champion_version(name)
    mv = registry.register(name, model, metadata, files=files)
    if promote:
        registry.set_champion(name, mv.version, reason)
    return RegisterResult(name=name, version=mv.version, uri=mv.uri, champion=promote,
                          previous_champion=previous, reason=reason)
