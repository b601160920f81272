"""The register step as one plain function: the step's input artifacts to a published model version.

:func:`register_step` is what ``components/register/component.py`` runs inside ``@dsl.component``; it
reads the artifacts the earlier steps wrote (model folder, splits, evaluation report, TFDV statistics),
exports the ONNX graph, builds the version metadata with :func:`components.register.logic.version_metadata`,
bins the training rows into the drift reference the serving monitor compares with
(:func:`skiff.monitoring.reference.reference_from_frame`) and publishes them. :func:`version_files` decides which files travel with the version.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.register.logic import RegisterResult

__all__ = ["StepArtifacts", "register_step", "version_files", "REPORT_FILE", "STATISTICS_FILE",
           "DRIFT_REFERENCE_FILE"]

#: the evaluation report as a version holds it
REPORT_FILE = "report.html"
#: the TFDV statistics of the training data as a version holds it
STATISTICS_FILE = "statistics.pb"
#: the serving monitor's drift reference as a version holds it (skiff.monitoring.reference.REFERENCE_FILE)
DRIFT_REFERENCE_FILE = "drift_reference.json"


@dataclass(frozen=True)
class StepArtifacts:
    """Where the step's input artifacts are (local paths) and what their metadata says."""

    model: str | Path
    test_data: str | Path
    training_data: str | Path
    report: str | Path
    statistics: str | Path
    #: the evaluation report's metadata (the evaluate step's gate record)
    report_metadata: Mapping[str, Any] = field(default_factory=dict)
    #: the lake partitions the training rows came from (the training artifact's metadata)
    partitions: list[str] = field(default_factory=list)
    #: where the statistics are kept in the lake (the statistics artifact's metadata)
    statistics_uri: str | None = None


def version_files(report: str | Path, statistics: str | Path, onnx: Path | None = None,
                  drift_reference: Path | None = None) -> dict[str, Path]:
    """The files published beside the model: the evaluation report; the TFDV statistics when the validate
    step wrote a file (a warn-only or skipped validation may leave the artifact empty); the ONNX graph
    when its export was exact (``onnx``: None otherwise); the drift reference (the training rows' bins),
    so the monitor never has to read the lake again for it."""
    files = {REPORT_FILE: Path(report)}
    if drift_reference is not None:
        files[DRIFT_REFERENCE_FILE] = drift_reference
    if Path(statistics).is_file():
        files[STATISTICS_FILE] = Path(statistics)
    if onnx is not None:
        files[onnx.name] = onnx
    return files


def register_step(
    artifacts: StepArtifacts,
    spec_text: str,
    *,
    registry_uri: str,
    model_name: str,
    feature_service: str,
    test_metrics: Mapping[str, float],
    promote: bool,
    reason: str,
    gate_metric: str,
    margin: float,
    pipeline_run_id: str | None = None,
) -> RegisterResult:
    """Publish an immutable version of the model (with ONNX when exact); promote it when ``promote``.

    ``spec_text`` is the spec as the pipeline passes it (JSON); the registry at ``registry_uri`` is opened
    with the platform's settings (storage options, and its locks: PostgreSQL advisory locks in a cluster,
    so parallel runs never share a version number).
    """
    import pandas as pd

    from components.register.logic import (
        gate_record,
        input_schema,
        model_features,
        register_version,
        version_metadata,
    )
    from skiff.config import load_settings
    from skiff.locks import locks_for
    from skiff.modeling import load_model
    from skiff.monitoring.reference import reference_from_frame
    from skiff.onnx_export import ONNX_FILE, export_onnx
    from skiff.registry import ModelRegistry
    from skiff.spec_text import spec_from_text
    from skiff.storage import Store

    spec = spec_from_text(spec_text)
    name = model_name or spec.name
    settings = load_settings()
    registry = ModelRegistry(Store(registry_uri, settings.storage_options), locks=locks_for(settings))
    pipeline, info, cv = load_model(artifacts.model)
    features = model_features(info, spec)
    test = pd.read_parquet(artifacts.test_data)
    training = pd.read_parquet(artifacts.training_data)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / ONNX_FILE
        # the training rows seed generated check rows when the held-out rows are too few
        onnx_info = export_onnx(pipeline, test, onnx_path, features=features,
                                input_schema=input_schema(spec, features), reference=training)
        meta = version_metadata(
            spec, spec_text, info, cv, training, name=name, test_metrics=test_metrics,
            gate=gate_record(artifacts.report_metadata, metric=gate_metric, margin=margin, promote=promote,
                             reason=reason),
            partitions=list(artifacts.partitions), feature_service=feature_service,
            statistics_uri=artifacts.statistics_uri, pipeline_run_id=pipeline_run_id, onnx=onnx_info,
        )
        # the training rows are at hand here; binned now, the monitor compares with exactly what was trained on
        reference_path = Path(tmp) / DRIFT_REFERENCE_FILE
        reference_path.write_text(json.dumps(reference_from_frame(meta, training, pipeline).to_dict()))
        files = version_files(artifacts.report, artifacts.statistics, onnx_path if onnx_info["exact"] else None,
                              reference_path)
        return register_version(registry, name, pipeline, meta, promote=promote, reason=reason, files=files)
