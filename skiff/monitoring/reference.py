"""The drift reference of a registered version: the training-time bins of its inputs and predictions.

Looked up in this order:

1. ``drift_reference.json`` in the version folder, which the register step publishes
   (``components/register/artifacts.py``; versions registered before it did have none);
2. the monitor's cache among the artifacts, ``monitoring/<model>/version=<v>/_reference.json`` (the
   monitor runs as a pipeline: it reads the inference log and writes artifacts, never the log);
3. built from the lake partitions the version was trained on (its metadata's ``dataset``), a sample of
   at most 50,000 rows, with the version's own predictions on them as the validation-time prediction
   distribution, then cached (2).

Features the spec marks ``pii`` are left out (the log holds a hash or nothing of them); per-feature PSI
thresholds are the spec's ``drift_threshold``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from skiff.config import Settings
from skiff.monitoring.drift import Reference
from skiff.registry import ModelRegistry, VersionMetadata
from skiff.storage import Store

__all__ = ["REFERENCE_FILE", "CACHE_FILE", "CACHE_PREFIX", "reference_for_version", "build_reference", "reference_from_frame",
           "SAMPLE_ROWS"]

log = logging.getLogger(__name__)

REFERENCE_FILE = "drift_reference.json"
CACHE_FILE = "_reference.json"
#: the folder of the cached references among the artifacts
CACHE_PREFIX = "monitoring"
SAMPLE_ROWS = 50_000


def _prediction_type(meta: VersionMetadata) -> str:
    return "float" if meta.problem_type == "regression" else "string"


def reference_from_frame(meta: VersionMetadata, frame: Any, model: Any | None = None) -> Reference:
    """A version's reference from its training rows (a pandas DataFrame) and, with ``model``, its predictions
    on them: what the register step can publish as ``drift_reference.json`` (``Reference.to_dict()``)."""
    from skiff.spec import DatasetSpec

    notes: list[str] = []
    spec = DatasetSpec.model_validate(meta.dataset["spec"]) if meta.dataset.get("spec") else None
    schema = dict(meta.input_schema)
    thresholds: dict[str, float] = {}
    if spec is not None:
        for name, col in spec.columns.items():
            if col.pii and name in schema:
                schema.pop(name)
                notes.append(f"{name}: personal data (pii: {col.pii}), not compared")
            if col.drift_threshold is not None:
                thresholds[name] = col.drift_threshold
    if len(frame) > SAMPLE_ROWS:
        frame = frame.sample(SAMPLE_ROWS, random_state=0)
    for c in schema:
        if c not in frame.columns:  # derived features: computed by the feature pipeline, not in the rows
            notes.append(f"{c}: not in the training rows (a derived feature?), not compared")
    predictions = None
    if model is not None:
        try:
            raw = model.predict(frame[list(meta.features)])
            predictions = [float(p) for p in raw] if _prediction_type(meta) == "float" else [str(p) for p in raw]
        except Exception as e:  # the monitor still compares inputs; the note says why predictions are not
            notes.append(f"no prediction reference: the model could not predict the training rows "
                         f"({type(e).__name__})")
    training = {c: frame[c].to_numpy() for c in schema if c in frame.columns}
    return Reference.build(meta.name, meta.version, training, {c: t for c, t in schema.items() if c in training},
                           predictions=predictions, prediction_type=_prediction_type(meta), thresholds=thresholds,
                           notes=notes)


def build_reference(settings: Settings, meta: VersionMetadata, model: Any | None = None) -> Reference:
    """Build a version's reference from the lake partitions it was trained on."""
    from skiff.lake import Lake

    dataset = str(meta.dataset.get("name") or meta.name)
    partitions = list(meta.dataset.get("partitions") or []) or None
    frame = Lake.from_settings(settings).read(dataset, partitions).to_pandas()
    return reference_from_frame(meta, frame, model)


def reference_for_version(settings: Settings, name: str, version: int, *, rebuild: bool = False) -> Reference:
    """The reference of ``name`` version ``version`` (see the module for where it comes from)."""
    registry = ModelRegistry.from_settings(settings)
    mv = registry.get(name, version)
    if not rebuild and REFERENCE_FILE in mv.metadata.files:
        published = Reference.from_dict(registry.store.read_json(name, str(mv.version), REFERENCE_FILE))
        # the register step bins the rows before the registry numbers the version
        return dataclasses.replace(published, model=name, version=mv.version)
    artifacts = Store(settings.artifacts_uri, settings.storage_options)
    cache = (CACHE_PREFIX, name, f"version={mv.version}", CACHE_FILE)
    if not rebuild and artifacts.exists(*cache):
        return Reference.from_dict(artifacts.read_json(*cache))
    ref = build_reference(settings, mv.metadata, registry.load_model(name, mv.version))
    artifacts.write_json(ref.to_dict(), *cache)
    log.info("built the drift reference of %s version %s (%s)", name, mv.version, "; ".join(ref.notes) or "all inputs")
    return ref
