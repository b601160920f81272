"""KFP component of the register step: a thin wrapper over components.register.logic, which builds the
version metadata (:func:`~components.register.logic.version_metadata`) and publishes it."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Model

from components._image import BASE_IMAGE

__all__ = ["register"]


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def register(
    model: Input[Model],
    test_data: Input[Dataset],
    training_data: Input[Dataset],
    report: Input[HTML],
    statistics: Input[Artifact],
    spec: str,
    registry_uri: str,
    model_name: str,
    feature_service: str,
    test_metrics: dict,
    promote: bool,
    reason: str,
    gate_metric: str,
    margin: float,
    run_id: str = "",
    pipeline_job: str = "",
) -> NamedTuple("RegisterOutputs", [("version", int), ("champion", bool), ("uri", str)]):
    """Publish an immutable model version (with ONNX when exact) and promote it when the gate said so."""
    import tempfile
    from collections import namedtuple
    from pathlib import Path

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
    from skiff.onnx_export import ONNX_FILE, export_onnx
    from skiff.registry import ModelRegistry
    from skiff.spec_text import spec_from_text
    from skiff.storage import Store

    s = spec_from_text(spec)
    name = model_name or s.name
    settings = load_settings()
    # the platform's locks (PostgreSQL advisory locks in a cluster): parallel runs never share a version
    registry = ModelRegistry(Store(registry_uri, settings.storage_options), locks=locks_for(settings))
    pipeline, info, cv = load_model(model.path)
    features = model_features(info, s)
    test = pd.read_parquet(test_data.path)
    training = pd.read_parquet(training_data.path)

    with tempfile.TemporaryDirectory() as tmp:
        files = {"report.html": Path(report.path)}
        if Path(statistics.path).is_file():
            files["statistics.pb"] = Path(statistics.path)
        onnx_info = export_onnx(pipeline, test, Path(tmp) / ONNX_FILE, features=features,
                                input_schema=input_schema(s, features))
        if onnx_info["exact"]:
            files[ONNX_FILE] = Path(tmp) / ONNX_FILE
        meta = version_metadata(
            s, spec, info, cv, training, name=name, test_metrics=test_metrics,
            gate=gate_record(report.metadata, metric=gate_metric, margin=margin, promote=promote, reason=reason),
            partitions=training_data.metadata.get("partitions", []), feature_service=feature_service,
            statistics_uri=statistics.metadata.get("uri"), pipeline_run_id=run_id or pipeline_job or None,
            onnx=onnx_info,
        )
        result = register_version(registry, name, pipeline, meta, promote=promote, reason=reason, files=files)
    outputs = namedtuple("RegisterOutputs", ["version", "champion", "uri"])
    return outputs(result.version, result.champion, result.uri)
