"""The register step: an immutable model version, and the champion when the gate said so.

The register step only stores: the evaluate step judged the challenger against the champion
(``components.evaluate.logic.champion_metrics``). Every trained model is registered — as a candidate
when it lost — so each run stays traceable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict

from skiff.registry import ModelRegistry, VersionMetadata
from skiff.spec import DatasetSpec

__all__ = ["RegisterResult", "register_version", "model_features", "version_metadata", "input_schema",
           "input_rules", "data_fingerprint", "gate_record", "serving_engine"]



class RegisterResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    version: int
    uri: str
    champion: bool
    previous_champion: int | None
    reason: str


def input_schema(spec: DatasetSpec, features: list[str]) -> dict[str, str]:
    """Spec type of each model input (what the predictor checks requests against)."""
    derived = {d.name: d.type for d in spec.derived}
    return {c: spec.columns[c].type if c in spec.columns else derived.get(c, "float") for c in features}


#: Column-spec fields that say nothing about one value (the model server has no use for them).
_NOT_RULES = {"description", "feature", "required", "unique"}


def input_rules(spec: DatasetSpec, features: list[str], training: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Each model input's column rules as the spec gives them, for the model server to coerce requests with
    exactly as ingestion coerced the training rows; a column imputed with a statistic also records
    ``impute_value``, that statistic computed on ``training`` the way ingestion computes it (a derived
    feature has its type only)."""
    import pyarrow as pa

    from skiff.cleansing import ARROW_TYPES, impute_statistic

    derived = {d.name: d.type for d in spec.derived}
    out: dict[str, dict[str, Any]] = {}
    for f in features:
        col = spec.columns.get(f)
        if col is None:
            out[f] = {"type": derived.get(f, "float")}
            continue
        rules = {"type": col.type, **col.model_dump(mode="json", exclude_defaults=True, exclude=_NOT_RULES)}
        if col.missing == "impute" and col.impute in ("mean", "median", "mode") and f in training.columns:
            typ = ARROW_TYPES[col.type]
            values = pa.chunked_array([pa.Array.from_pandas(training[f]).cast(typ)], type=typ)
            value = impute_statistic(values, col.impute, typ)
            rules["impute_value"] = value.isoformat() if hasattr(value, "isoformat") else value
        out[f] = rules
    return out


def gate_record(evaluated: Mapping[str, Any], *, metric: str, margin: float, promote: bool,
                reason: str) -> dict[str, Any]:
    """The gate as a version records it: the evaluate step's own record (its report's ``gate`` metadata:
    the metric it resolved — the pipeline's ``metric`` is empty by default —, both values, the margin,
    the verdict); from an evaluate step that wrote none, what the register step was told."""
    record = evaluated.get("gate")
    if record:
        return dict(record)
    return {"metric": metric or evaluated.get("gate_metric") or None, "margin": margin, "promote": promote,
            "reason": reason}


def data_fingerprint(frame: pd.DataFrame) -> str:
    """A content hash of the training rows (order-independent)."""
    import hashlib

    hashed = pd.util.hash_pandas_object(frame, index=False).sort_values().to_numpy()
    return "sha256:" + hashlib.sha256(hashed.tobytes()).hexdigest()


def model_features(info: Mapping[str, Any], spec: DatasetSpec) -> list[str]:
    """The model's input columns, in order: what training recorded, else the spec's feature columns."""
    return list(info.get("feature_columns") or spec.feature_columns)


def version_metadata(
    spec: DatasetSpec,
    spec_text: str,
    info: Mapping[str, Any],
    cv: pd.DataFrame | None,
    training: pd.DataFrame,
    *,
    name: str,
    test_metrics: Mapping[str, float],
    gate: Mapping[str, Any],
    partitions: list[str],
    feature_service: str,
    statistics_uri: str | None,
    pipeline_run_id: str | None,
    onnx: Mapping[str, Any],
) -> VersionMetadata:
    """What a registered version records about itself (the registry's stable contract).

    ``spec_text`` is the spec as the pipeline passed it (JSON); ``info`` and ``cv`` come from the model
    folder (:func:`skiff.modeling.load_model`); ``training`` is the training split the statistics and the
    data fingerprint are computed on; ``gate`` is :func:`gate_record`'s; ``onnx`` is the ONNX export's
    report (``exact`` and its evidence).
    """
    features = model_features(info, spec)
    return VersionMetadata(
        name=name,
        problem_type=info.get("problem_type") or spec.problem_type,
        target=spec.target,
        estimator=info.get("estimator"),
        params=info.get("params") or {},
        threshold=info.get("threshold"),
        classes=info.get("classes"),
        features=features,
        input_schema=input_schema(spec, features),
        input_rules=input_rules(spec, features, training),
        metrics={k: float(v) for k, v in test_metrics.items()},
        cv=cv.to_dict(orient="records") if cv is not None else [],
        gate=dict(gate),
        dataset={"name": spec.name, "partitions": list(partitions), "spec": json.loads(spec_text),
                 "rows": len(training)},
        data_fingerprint=data_fingerprint(training),
        feature_service=feature_service,
        statistics_uri=statistics_uri,
        pipeline_run_id=pipeline_run_id,
        extra={"onnx": dict(onnx), "engine": serving_engine(onnx), "cv_means": info.get("cv_means", {}),
               "positive_class": info.get("positive_class"), "scoring": info.get("scoring")},
    )


def serving_engine(onnx: Mapping[str, Any]) -> dict[str, Any]:
    """What serves a version, from its ONNX export's report: ``{"engine", "compiler", "reason"}``."""
    exact = bool(onnx.get("exact"))
    return {"engine": "onnxruntime" if exact else "sklearn", "compiler": onnx.get("compiler") if exact else None,
            "reason": onnx.get("reason") or ("exact export" if exact else "no exact export")}


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
    # Azure ML: the version appears in the workspace of each environment that opted in (a warning and a
    # pending sync when Azure ML is unreachable, never a failed registration)
    from skiff.cloud.azure.models import on_register

    on_register(registry, mv)
    return RegisterResult(name=name, version=mv.version, uri=mv.uri, champion=promote,
                          previous_champion=previous, reason=reason)
