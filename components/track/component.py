"""The step that logs an image or recommender run to MLflow, after its register step.

The tabular pipeline's register step logs its own run (it holds the search table and the validation record
that are not in the registry); the image and recommender register steps publish a version whose metadata and
files hold everything the run's MLflow record needs (:func:`skiff.tracking.runs.version_record` reads it by
flavor), so one small step reads it back and logs it the same way: kfp.local and a cluster run the same task,
which never fails the pipeline (an unreachable server is a warning and a retry, and the record is kept in the
lake for ``skiff tracking sync``). On a cluster it reads the MLflow credentials Secret
(:data:`pipelines.cluster_wiring.STEP_SECRETS`).

Every pipeline's steps run inside one ``dsl.ExitHandler`` whose exit task, :func:`track_final_status_op`,
runs after them whatever happened, on kfp.local and on a cluster alike. When the run did not succeed it
marks the MLflow run FAILED (creating it when no step had logged it: a run that failed at ingestion), with
the failed task and the error KFP hands it; a step that recorded its own failure first (the validation
gate) keeps its step and reason. KFP names only the exit handler's group as the failed task, with an empty
or generic error, so on a cluster the exit task asks the Kubeflow Pipelines API (the ``kfp_host`` setting
of the cluster's settings ConfigMap) for the run's task details, by the run's KFP id
(``kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER``, which every pipeline passes), and records the step that
failed and its error (:func:`skiff.tracking.runs.kfp_failed_task`); an endpoint that does not answer
within a few seconds leaves the step ``unknown``. Under kfp.local there is no such API: a local run's
summary fills in the step and the error from the run's log (:func:`pipelines.local_runs.track_summary`).
When the run succeeded the exit task does nothing.
"""

from kfp import dsl

from components._image import BASE_IMAGE

__all__ = ["track_run_op", "track_final_status_op"]


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


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def track_final_status_op(status: dsl.PipelineTaskFinalStatus, run_id: str, pipeline: str, lake_uri: str,
                          model_name: str = "", spec: str = "", tracking_uri: str = "", kfp_run_id: str = ""):
    """The exit task: when the run did not succeed, mark its MLflow run FAILED with the failed task and the
    error (``model_name``'s experiment, else the spec's name), asking the Kubeflow Pipelines API for them by
    ``kfp_run_id`` when KFP names only the exit handler's group; kept under ``lake_uri`` when the server does
    not answer. Never fails."""
    import json
    import logging

    try:
        from skiff.tracking.runs import track_final_status

        name = model_name
        if not name and spec:
            try:
                parsed = json.loads(spec)
            except ValueError:
                parsed = None
            name = str(parsed.get("name") or "") if isinstance(parsed, dict) else ""
        # kfp.local names its runs local-pipeline-<task>: no Kubeflow Pipelines API knows them
        local = str(status.pipeline_job_resource_name or "").startswith("local-pipeline-")
        track_final_status(tracking_uri, state=status.state, run_id=run_id, pipeline=pipeline, model_name=name,
                           task=status.pipeline_task_name, error_message=status.error_message,
                           error_code=status.error_code, lake_uri=lake_uri,
                           kfp_run_id="" if local else kfp_run_id)
    except Exception as e:  # the exit task never fails the run: it only reports how it ended
        logging.getLogger(__name__).warning("experiment tracking: the final status of run %s was not recorded "
                                            "(%s)", run_id, type(e).__name__)
