"""The step that logs an image or recommender run to MLflow, after its register step.

The tabular pipeline's register step logs its own run (it holds the search table and the validation record
that are not in the registry); the image and recommender register steps publish a version whose metadata and
files hold everything the run's MLflow record needs (:func:`skiff.tracking.runs.version_record` reads it by
flavor), so one small step reads it back and logs it the same way: kfp.local and a cluster run the same task,
which never fails the pipeline (an unreachable server is a warning and a retry, and the record is kept in the
lake for ``skiff tracking sync``). On a cluster it reads the MLflow credentials Secret
(:data:`pipelines.cluster_wiring.STEP_SECRETS`).
"""

from kfp import dsl

from components._image import BASE_IMAGE

__all__ = ["track_run_op"]


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def track_run_op(registry_uri: str, model_name: str, version: int, run_id: str, pipeline: str, lake_uri: str,
                 spec: str = "", tracking_uri: str = "", storage_options: dict = {}):  # noqa: B006
    """Log run ``run_id`` (which registered ``version`` of ``model_name``) to MLflow: ``tracking_uri``, else
    the step's settings (see skiff.tracking.runs); kept under ``lake_uri`` when the server does not answer."""
    import json

    from skiff.config import load_settings
    from skiff.tracking.runs import track_version

    try:
        parsed = json.loads(spec) if spec else None
    except ValueError:
        parsed = None
    settings = load_settings()
    if storage_options:
        settings = settings.model_copy(update={"storage_options": storage_options})
    track_version(settings, tracking_uri, registry_uri=registry_uri, name=model_name, version=version,
                  run_id=run_id, pipeline=pipeline, lake_uri=lake_uri,
                  spec=parsed if isinstance(parsed, dict) else None)
