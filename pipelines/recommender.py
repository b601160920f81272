"""The recommender pipeline: ingest events → train (time-split evaluation) → evaluate (gate) → register.

One ``@dsl.pipeline``: kfp.local runs it on this machine (``skiff run recommender --local``), a Kubeflow
Pipelines backend its compiled IR YAML. Interaction events are ingested by the same ingest step as any
data set (the spec's types and rules, bad rows quarantined with a reason); the train step evaluates the
popularity baseline, item–item similarity and implicit ALS on the last period and refits the best on
every event (building a faiss catalogue index past the exact-scoring threshold); the evaluate step gates
the challenger against the champion's configuration refit on the same split; register publishes the
``recommender`` version, and the last task logs the run to MLflow (:mod:`components.track.component`); every step runs inside
an exit handler whose task marks a run that did not succeed FAILED there. What a
run takes, checks and reports is :data:`pipelines.definitions.RECOMMENDER` (:mod:`pipelines.recommender_run`).
"""

from kfp import dsl

from components.ingest.component import ingest_op
from components.recommend.component import evaluate_recs_op, register_recs_op, train_recs_op
from components.track.component import track_run_op
from pipelines.cluster_wiring import in_namespace
from pipelines.run_tracking import final_status_task

__all__ = ["recommender"]


@dsl.pipeline(name="skiff-recommender", description="ingest events → train → evaluate → register")
def recommender(
    spec: str,
    lake_uri: str,
    registry_uri: str,
    run_id: str,
    sources: list = [],  # noqa: B006 - KFP parameter defaults are literals, never mutated
    model_name: str = "",
    recs_config: dict = {},  # noqa: B006
    margin: float = 0.0,
    ingest_date: str = "",
    tracking_uri: str = "",
):
    final = final_status_task("recommender", run_id=run_id, lake_uri=lake_uri, model_name=model_name, spec=spec,
                              tracking_uri=tracking_uri)
    with dsl.ExitHandler(final):
        ingested = ingest_op(spec=spec, lake_uri=lake_uri, run_id=run_id, sources=sources, ingest_date=ingest_date)
        ingested.set_caching_options(False).set_display_name("ingest-events")
        in_namespace(ingested, "ingest")
        trained = train_recs_op(ingested=ingested.outputs["manifest"], spec=spec, lake_uri=lake_uri, config=recs_config)
        trained.set_caching_options(False).set_display_name("train-recommender").set_cpu_limit("2")
        trained.set_memory_limit("8G")
        in_namespace(trained, "train")
        evaluated = evaluate_recs_op(model=trained.outputs["model"], ingested=ingested.outputs["manifest"], spec=spec,
                                     lake_uri=lake_uri,
                                     registry_uri=registry_uri, model_name=model_name, margin=margin)
        evaluated.set_caching_options(False).set_display_name("evaluate-recommender")
        in_namespace(evaluated, "evaluate")
        registered = register_recs_op(model=trained.outputs["model"], evaluation=evaluated.outputs["evaluation"],
                                      spec=spec, registry_uri=registry_uri, model_name=model_name,
                                      pipeline_job=run_id)
        registered.set_caching_options(False).set_display_name("register-recommender")
        in_namespace(registered, "register")
        tracked = track_run_op(registry_uri=registry_uri, model_name=model_name, version=registered.outputs["version"],
                               run_id=run_id, pipeline="recommender", lake_uri=lake_uri, spec=spec,
                               tracking_uri=tracking_uri)
        tracked.set_caching_options(False).set_display_name("track-run")
        in_namespace(tracked, "track")
