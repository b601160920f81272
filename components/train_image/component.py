"""The image steps as KFP v2 components: train, evaluate (with the champion/challenger gate) and register.

Thin wrappers over :mod:`components.train_image.logic`, :mod:`~components.train_image.evaluate` and
:mod:`~components.train_image.register`. The model artifact is a folder (model.keras, saved_model/, label map,
preprocessing, the test split); its metadata carries the classes, the phases' accuracies and the device. On a
cluster the pipeline gives the train task a GPU (see :mod:`pipelines.image`); the code is the same on a CPU.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Input, Metrics, Model, Output

from components._image import GPU_IMAGE

__all__ = ["train_image_op", "train_image_tfjob_op", "evaluate_image_op", "register_image_op"]


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def train_image_op(dataset: str, lake_uri: str, run_id: str, model: Output[Model],
                   config: dict = {},  # noqa: B006 - KFP needs a literal default; it is never mutated
                   storage_options: dict = {}):  # noqa: B006
    """Train an image classifier on the accepted images of lake run ``run_id`` of ``dataset``."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from pathlib import Path

    from components.train_image.logic import TrainImageConfig, train_image
    from skiff.image_data import read_image_table
    from skiff.lake import Lake
    from skiff.storage import Store

    lake = Lake(Store(lake_uri, storage_options or None))
    ref = lake.select_runs(dataset, run_id=run_id).runs[0]
    rows = read_image_table(lake, ref).to_pylist()
    result = train_image(rows, Path(model.path), TrainImageConfig.model_validate(config),
                         storage_options=storage_options or None)
    manifest = lake.manifest(ref)
    model.metadata.update({"classes": result.classes, "counts": result.counts, "phases": result.phases,
                           "device": result.device, "dataset": dataset, "run_id": ref.run_id,
                           "ingest_date": ref.date, "content_hash": manifest.content_hash or "",
                           "duration_s": result.duration_s})


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def train_image_tfjob_op(dataset: str, lake_uri: str, run_id: str, artifacts_uri: str, model: Output[Model],
                         workers: int = 2, gpus_per_worker: int = 1, image: str = GPU_IMAGE,
                         namespace: str = "", service_account: str = "",
                         config: dict = {},  # noqa: B006 - KFP needs a literal default; it is never mutated
                         storage_options: dict = {},  # noqa: B006
                         timeout_s: float = 86400.0):
    """Train past one node: the step's code as a TFJob of ``workers`` workers (MultiWorkerMirroredStrategy),
    created with the Kubernetes client and waited for; the chief's model folder becomes this task's output."""
    import json
    import os
    from pathlib import Path

    import fsspec
    from kubernetes import client
    from kubernetes import config as kube_config

    from components.train_image.tfjob import create, job_name, render_tfjob, wait_for
    from components.train_image.worker import RESULT_FILE
    from skiff.storage import join_uri

    name = job_name(f"{dataset}-{run_id}")
    if not namespace:  # the namespace this task runs in (the pipeline's profile namespace)
        ns_file = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        namespace = ns_file.read_text().strip() if ns_file.exists() else "default"
    output_uri = join_uri(artifacts_uri, "tfjobs", name, "model")
    obj = render_tfjob(name=name, namespace=namespace, image=image, workers=workers, dataset=dataset,
                       lake_uri=lake_uri, run_id=run_id, output_uri=output_uri, config=config,
                       gpus_per_worker=gpus_per_worker, service_account=service_account,
                       labels={"skiff.io/run-id": job_name(run_id, "run")})
    kube_config.load_incluster_config()
    api = client.CustomObjectsApi()
    create(api, obj)
    print(wait_for(api, name, namespace, timeout_s=timeout_s) or f"TFJob {namespace}/{name} succeeded", flush=True)
    fs, path = fsspec.core.url_to_fs(output_uri, **(storage_options or {}))
    os.makedirs(model.path, exist_ok=True)
    fs.get(path.rstrip("/") + "/", model.path.rstrip("/") + "/", recursive=True)
    meta = json.loads((Path(model.path) / RESULT_FILE).read_text())
    model.metadata.update({**meta, "tfjob": f"{namespace}/{name}", "workers": workers})


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def evaluate_image_op(model: Input[Model], registry_uri: str, model_name: str, evaluation: Output[Artifact],
                      metrics: Output[Metrics], margin: float = 0.0, top_k: int = 3,
                      storage_options: dict = {},  # noqa: B006
                      ) -> NamedTuple("EvaluateImageOutputs", [("promote", bool), ("reason", str)]):
    """Score the model on its test images against the registered champion (``model_name``) on the same images."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tempfile
    from collections import namedtuple
    from pathlib import Path

    from components.train_image.evaluate import evaluate_image_model
    from skiff.errors import NotFoundError
    from skiff.registry import ModelRegistry
    from skiff.storage import Store

    registry = ModelRegistry(Store(registry_uri, storage_options or None))
    with tempfile.TemporaryDirectory() as tmp:
        champion_dir, champion_version = None, None
        try:
            champ = registry.get(model_name, "champion")
            if champ.metadata.flavor == "tensorflow":
                champion_dir = registry.download(model_name, champ.version, Path(tmp) / "champion")
                champion_version = champ.version
        except NotFoundError:
            pass
        ev = evaluate_image_model(Path(model.path), Path(evaluation.path), top_k=top_k, champion_dir=champion_dir,
                                  champion_version=champion_version, margin=margin,
                                  storage_options=storage_options or None)
    for key, value in ev.metrics.items():
        metrics.log_metric(key, value)
    evaluation.metadata.update({"metrics": ev.metrics, "promote": ev.promote, "reason": ev.reason,
                                "champion": ev.champion or {}})
    outputs = namedtuple("EvaluateImageOutputs", ["promote", "reason"])
    return outputs(ev.promote, ev.reason)


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def register_image_op(model: Input[Model], evaluation: Input[Artifact], registry_uri: str, model_name: str,
                      margin: float = 0.0, pipeline_job: str = "",
                      storage_options: dict = {},  # noqa: B006
                      ) -> NamedTuple("RegisterImageOutputs", [("version", int), ("champion", bool)]):
    """Register the model version (the champion when the evaluate step promoted it)."""
    import json
    from collections import namedtuple
    from pathlib import Path

    from components.train_image.evaluate import METRICS_FILE, ImageEvaluation
    from components.train_image.register import register_image_model
    from skiff.config import load_settings
    from skiff.locks import locks_for
    from skiff.registry import ModelRegistry
    from skiff.storage import Store

    ev = ImageEvaluation.model_validate(json.loads((Path(evaluation.path) / METRICS_FILE).read_text()))
    meta = model.metadata
    dataset = {k: meta.get(k) for k in ("dataset", "run_id", "ingest_date", "content_hash", "counts")}
    settings = load_settings()  # the cluster's settings: the registry's write locks (PostgreSQL when configured)
    registry = ModelRegistry(Store(registry_uri, storage_options or settings.storage_options),
                             locks=locks_for(settings))
    done = register_image_model(registry, model_name,
                                Path(model.path), Path(evaluation.path), ev, dataset=dataset, margin=margin,
                                pipeline_run_id=pipeline_job or None)
    outputs = namedtuple("RegisterImageOutputs", ["version", "champion"])
    return outputs(done["version"], done["champion"])
