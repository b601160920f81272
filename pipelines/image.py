"""The image pipeline: ingest images → train (transfer learning, two phases) → evaluate → register.

One ``@dsl.pipeline``: kfp.local runs it on this machine (``skiff run image --local``), a Kubeflow Pipelines
backend its compiled IR YAML. On a cluster the train task asks for one ``nvidia.com/gpu`` and carries the
GPU pool's toleration (``nvidia.com/gpu=present:NoSchedule``) and node selector (``skiff.io/node-pool=gpu``),
the names the Terraform GPU pools give (``terraform/modules/*/gpu.tf``); kfp.local ignores accelerators, so
the same step runs on the CPU there. What a run takes, checks and reports is
:data:`pipelines.definitions.IMAGE` (:mod:`pipelines.image_run`).
"""

from kfp import dsl, kubernetes

from components.ingest_images.component import ingest_images_op
from components.train_image.component import evaluate_image_op, register_image_op, train_image_op
from pipelines.cluster_wiring import in_namespace

__all__ = ["image", "GPU_TOLERATION", "GPU_NODE_SELECTOR"]

#: the taint every GPU workload tolerates and the label of the GPU pool (terraform/modules/*/gpu.tf)
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}
GPU_NODE_SELECTOR = ("skiff.io/node-pool", "gpu")


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
):
    ingested = ingest_images_op(dataset=dataset, data=data, lake_uri=lake_uri, run_id=run_id, config=ingest_config,
                                ingest_date=ingest_date)
    ingested.set_caching_options(False).set_display_name("ingest-images")
    in_namespace(ingested, "ingest-images")
    trained = train_image_op(dataset=dataset, lake_uri=lake_uri, run_id=ingested.outputs["run_id"],
                             config=train_config)
    trained.set_display_name("train-image").set_cpu_limit("4").set_memory_limit("16G")
    trained.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
    kubernetes.add_toleration(trained, **GPU_TOLERATION)
    kubernetes.add_node_selector(trained, *GPU_NODE_SELECTOR)
    in_namespace(trained, "train-image")
    evaluated = evaluate_image_op(model=trained.outputs["model"], registry_uri=registry_uri, model_name=model_name,
                                  margin=margin, top_k=top_k)
    evaluated.set_caching_options(False).set_display_name("evaluate-image")
    in_namespace(evaluated, "evaluate-image")
    registered = register_image_op(model=trained.outputs["model"], evaluation=evaluated.outputs["evaluation"],
                                   registry_uri=registry_uri, model_name=model_name, margin=margin,
                                   pipeline_job=run_id)
    registered.set_caching_options(False).set_display_name("register-image")
    in_namespace(registered, "register")
