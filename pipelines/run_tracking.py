"""The exit task every pipeline runs last, whatever happened: the run's MLflow record marked FAILED when a
step failed (components/track), wired like any step of the namespace."""

from __future__ import annotations

from typing import Any

from kfp import dsl

from components.track.component import track_final_status_op
from pipelines.cluster_wiring import in_namespace

__all__ = ["final_status_task"]


def final_status_task(pipeline: str, *, run_id: Any, lake_uri: Any, model_name: Any, spec: Any,
                      tracking_uri: Any) -> Any:
    """The ``track-final-status`` task of ``pipeline``, for ``dsl.ExitHandler`` (the pipeline's parameters
    are passed through; KFP gives the task its own run id to look the failed step up)."""
    final = track_final_status_op(run_id=run_id, pipeline=pipeline, lake_uri=lake_uri, model_name=model_name,
                                  spec=spec, tracking_uri=tracking_uri, kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
    final.set_caching_options(False).set_display_name("track-final-status")
    in_namespace(final, "track-final-status")
    return final
