"""The tabular pipeline: ingest → validate → features → train → evaluate → register.

One ``@dsl.pipeline``: kfp.local runs it on this machine (``skiff run tabular --local``) and a Kubeflow
Pipelines backend runs its compiled IR YAML (``skiff compile tabular``, ``skiff run tabular --host``).
Validation is a blocking gate: the rest runs only when the partition passed (``dsl.If``). On a cluster
every step reads the namespace's settings and only the Secrets it needs (:mod:`pipelines.cluster_wiring`).
Every step runs inside an exit handler whose task marks a run that did not succeed FAILED in MLflow
(:mod:`components.track.component`). What a run takes, checks and reports is
:data:`pipelines.definitions.TABULAR`.
"""

from kfp import dsl

from components.evaluate.component import evaluate
from components.features.component import features
from components.gate.component import validation_blocked
from components.ingest.component import ingest_op
from components.register.component import register
from components.train.component import train
from components.validate.component import validate
from pipelines.cluster_wiring import in_namespace
from pipelines.run_tracking import final_status_task

__all__ = ["tabular"]


@dsl.pipeline(name="skiff-tabular", description="ingest → validate → features → train → evaluate → register")
def tabular(
    spec: str,
    lake_uri: str,
    registry_uri: str,
    feature_repo: str,
    feast_dir: str,
    sources: list = [],  # noqa: B006 - KFP parameter defaults are literals, never mutated
    model_name: str = "",
    train_config: dict = {},  # noqa: B006
    metric: str = "",
    margin: float = 0.0,
    drift_threshold: float = 0.1,
    feature_thresholds: dict = {},  # noqa: B006
    warn_only: bool = False,
    feature_store_yaml: str = "feature_store.yaml",
    run_id: str = "",
    ingest_date: str = "",
    lake_run: str = "",
    tracking_uri: str = "",
):
    final = final_status_task("tabular", run_id=run_id, lake_uri=lake_uri, model_name=model_name, spec=spec,
                              tracking_uri=tracking_uri)
    with dsl.ExitHandler(final):
        # lake_run pins one committed run: ingestion reads nothing and names it, validate and features read it alone
        ingested = ingest_op(spec=spec, lake_uri=lake_uri, run_id=run_id, sources=sources, ingest_date=ingest_date,
                             read_run=lake_run)
        ingested.set_caching_options(False).set_display_name("ingest")
        in_namespace(ingested, "ingest")
        validated = validate(
            ingested=ingested.outputs["manifest"], spec=spec, lake_uri=lake_uri, drift_threshold=drift_threshold,
            feature_thresholds=feature_thresholds, warn_only=warn_only, run_id=lake_run,
        ).set_caching_options(False).set_display_name("validate")
        in_namespace(validated, "validate")
        with dsl.If(validated.outputs["passed"] == True, name="validation-passed"):  # noqa: E712 - KFP condition
            feats = features(
                ingested=ingested.outputs["manifest"], spec=spec, lake_uri=lake_uri, feature_repo=feature_repo,
                feast_dir=feast_dir, feature_store_yaml=feature_store_yaml, run_id=lake_run,
            ).set_caching_options(False).set_display_name("features")
            in_namespace(feats, "features")
            trained = train(training_data=feats.outputs["training_data"], spec=spec, config=train_config)
            trained.set_display_name("train").set_cpu_limit("2").set_memory_limit("8G")
            in_namespace(trained, "train")
            evaluated = evaluate(
                model=trained.outputs["model"], test_data=trained.outputs["test_data"], spec=spec,
                metric=metric, margin=margin, registry_uri=registry_uri, model_name=model_name,
            ).set_caching_options(False).set_display_name("evaluate")
            in_namespace(evaluated, "evaluate")
            registered = register(
                model=trained.outputs["model"], test_data=trained.outputs["test_data"],
                training_data=feats.outputs["training_data"], report=evaluated.outputs["report"],
                statistics=validated.outputs["statistics"], spec=spec, registry_uri=registry_uri,
                model_name=model_name, feature_service=feats.outputs["feature_service"],
                test_metrics=evaluated.outputs["test_metrics"], promote=evaluated.outputs["promote"],
                reason=evaluated.outputs["reason"], gate_metric=metric, margin=margin, run_id=run_id,
                pipeline_job=dsl.PIPELINE_JOB_ID_PLACEHOLDER, tracking_uri=tracking_uri,
            ).set_caching_options(False).set_display_name("register")
            in_namespace(registered, "register")
        with dsl.Else(name="validation-blocked"):
            blocked = validation_blocked(statistics=validated.outputs["statistics"], blocking=validated.outputs["blocking"],
                                         run_id=run_id, model_name=model_name, tracking_uri=tracking_uri)
            in_namespace(blocked, "validation-blocked")
