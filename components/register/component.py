"""KFP component of the register step: a thin wrapper over :func:`components.register.artifacts.register_step`,
which builds the version metadata (:func:`~components.register.logic.version_metadata`) and publishes it."""

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
    tracking_uri: str = "",
) -> NamedTuple("RegisterOutputs", [("version", int), ("champion", bool), ("uri", str)]):
    """Publish an immutable model version (with ONNX when exact) and promote it when the gate said so; log
    the run to MLflow (``tracking_uri``; empty: the step's settings decide, see skiff.tracking.runs)."""
    from collections import namedtuple

    from components.register.artifacts import StepArtifacts, register_step

    artifacts = StepArtifacts(
        model=model.path, test_data=test_data.path, training_data=training_data.path, report=report.path,
        statistics=statistics.path, report_metadata=report.metadata,
        partitions=training_data.metadata.get("partitions", []), statistics_uri=statistics.metadata.get("uri"),
    )
    result = register_step(artifacts, spec, registry_uri=registry_uri, model_name=model_name,
                           feature_service=feature_service, test_metrics=test_metrics, promote=promote,
                           reason=reason, gate_metric=gate_metric, margin=margin,
                           pipeline_run_id=run_id or pipeline_job or None)
    from skiff.config import load_settings
    from skiff.tracking.runs import track_version

    track_version(load_settings(), tracking_uri, registry_uri=registry_uri, name=result.name, version=result.version,
                  run_id=run_id or pipeline_job, pipeline="tabular", model_dir=model.path,
                  validation=dict(statistics.metadata), lake_runs=training_data.metadata.get("runs"))
    outputs = namedtuple("RegisterOutputs", ["version", "champion", "uri"])
    return outputs(result.version, result.champion, result.uri)
