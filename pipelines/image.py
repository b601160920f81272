"""The image pipeline: ingest images → train (transfer learning, two phases) → evaluate → register.

One ``@dsl.pipeline``: kfp.local runs it on this machine (``skiff run image --local``), a Kubeflow Pipelines
backend its compiled IR YAML. On a cluster the train task asks for one ``nvidia.com/gpu`` and carries the
GPU pool's toleration (``nvidia.com/gpu=present:NoSchedule``) and node selector (``skiff.io/node-pool=gpu``),
the names the Terraform GPU pools give (``terraform/modules/*/gpu.tf``); kfp.local ignores accelerators, so
the same step runs on the CPU there. With ``workers > 1`` (a cluster only) training runs past one node: a
launcher task creates a Kubeflow ``TFJob`` of that many workers, each with ``gpus_per_worker`` GPUs, running
the same training code under ``MultiWorkerMirroredStrategy`` (:mod:`components.train_image.tfjob`), and
evaluation and registration read its model as they read the single-node step's. After registration the
run is logged to MLflow (:mod:`components.track.component`); every step runs inside an exit handler whose
task marks a run that did not succeed FAILED there. What a run takes, checks and reports is
:data:`pipelines.definitions.IMAGE` (:mod:`pipelines.image_run`).
"""

from typing import Any

from kfp import dsl, kubernetes

from components.ingest_images.component import ingest_images_op
from components.track.component import track_run_op
from components.train_image.component import (
    evaluate_image_op,
    register_image_op,
    train_image_op,
    train_image_tfjob_op,
)
from pipelines.cluster_wiring import in_namespace
from pipelines.run_tracking import final_status_task

__all__ = ["image", "GPU_TOLERATION", "GPU_NODE_SELECTOR"]

#: the taint every GPU workload tolerates and the label of the GPU pool (terraform/modules/*/gpu.tf)
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}
GPU_NODE_SELECTOR = ("skiff.io/node-pool", "gpu")


def _judge_and_register(model: Any, registry_uri: Any, model_name: Any, margin: Any, top_k: Any, run_id: Any,
                        lake_uri: Any, spec: Any, tracking_uri: Any) -> None:
    """Evaluate (champion/challenger on the same test images), register and log the run to MLflow: the tasks
    after training."""
    evaluated = evaluate_image_op(model=model, registry_uri=registry_uri, model_name=model_name,
                                  margin=margin, top_k=top_k)
    evaluated.set_caching_options(False).set_display_name("evaluate-image")
    in_namespace(evaluated, "evaluate-image")
    registered = register_image_op(model=model, evaluation=evaluated.outputs["evaluation"],
                                   registry_uri=registry_uri, model_name=model_name, margin=margin,
                                   pipeline_job=run_id)
    registered.set_caching_options(False).set_display_name("register-image")
    in_namespace(registered, "register")
    tracked = track_run_op(registry_uri=registry_uri, model_name=model_name, version=registered.outputs["version"],
                           run_id=run_id, pipeline="image", lake_uri=lake_uri, spec=spec,
                           tracking_uri=tracking_uri)
    tracked.set_caching_options(False).set_display_name("track-run")
    in_namespace(tracked, "track")


@dsl.pipeline(name="skiff-image", description="ingest images → train → evaluate → register")
def image(
    dataset: str,
    lake_uri: str,
    registry_uri: str,
    run_id: str,
    data: str = "",  # the runner always sets it (image_run.preflight refuses a run without images)
    model_name: str = "",
    ingest_config: dict = {},  # noqa: B006 - KFP parameter defaults are literals, never mutated
    train_config: dict = {},  # noqa: B006
    margin: float = 0.0,
    top_k: int = 3,
    ingest_date: str = "",
    workers: int = 1,
    gpus_per_worker: int = 1,
    artifacts_uri: str = "",
    spec: str = "",
    tracking_uri: str = "",
):
    final = final_status_task("image", run_id=run_id, lake_uri=lake_uri, model_name=model_name, spec=spec,
                              tracking_uri=tracking_uri)
    with dsl.ExitHandler(final):
        ingested = ingest_images_op(dataset=dataset, data=data, lake_uri=lake_uri, run_id=run_id, config=ingest_config,
                                    ingest_date=ingest_date)
        ingested.set_caching_options(False).set_display_name("ingest-images")
        in_namespace(ingested, "ingest-images")
        with dsl.If(workers == 1, name="one-node"):
            trained = train_image_op(dataset=dataset, lake_uri=lake_uri, run_id=ingested.outputs["run_id"],
                                     config=train_config)
            trained.set_display_name("train-image").set_cpu_limit("4").set_memory_limit("16G")
            trained.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
            kubernetes.add_toleration(trained, **GPU_TOLERATION)
            kubernetes.add_node_selector(trained, *GPU_NODE_SELECTOR)
            in_namespace(trained, "train-image")
            _judge_and_register(trained.outputs["model"], registry_uri, model_name, margin, top_k, run_id,
                                lake_uri, spec, tracking_uri)
        with dsl.Else(name="past-one-node"):
            # the same training code as a TFJob of `workers` pods (MultiWorkerMirroredStrategy); this task only
            # creates it and waits, so it asks for no GPU itself
            launched = train_image_tfjob_op(dataset=dataset, lake_uri=lake_uri, run_id=ingested.outputs["run_id"],
                                            artifacts_uri=artifacts_uri, workers=workers,
                                            gpus_per_worker=gpus_per_worker, config=train_config)
            launched.set_display_name("train-image-tfjob").set_cpu_limit("1").set_memory_limit("1G")
            in_namespace(launched, "train-image-tfjob")
            _judge_and_register(launched.outputs["model"], registry_uri, model_name, margin, top_k, run_id,
                                lake_uri, spec, tracking_uri)
