"""The recommender steps as KFP v2 components: train (with the time-split evaluation), evaluate (the
champion/challenger gate) and register. Thin wrappers over :mod:`components.recommend.logic`; the events
come from the lake, ingested and validated by the ingest step like any data set."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components._image import BASE_IMAGE

__all__ = ["train_recs_op", "evaluate_recs_op", "register_recs_op"]


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def train_recs_op(ingested: Input[Dataset], spec: str, lake_uri: str, model: Output[Model],
                  config: dict = {},  # noqa: B006 - KFP needs a literal default; it is never mutated
                  storage_options: dict = {}):  # noqa: B006
    """Evaluate popularity, item–item and ALS on the last period; refit the best on every event (the events:
    every run of the spec the ingest step's run was written with)."""
    from pathlib import Path

    from components.recommend.logic import read_events, train_recommender
    from skiff.config import load_settings
    from skiff.lake import Lake
    from skiff.recommend.events import RecsConfig
    from skiff.spec_text import spec_from_text
    from skiff.storage import Store

    parsed = spec_from_text(spec)
    frame, source = read_events(Lake(Store(lake_uri, storage_options or None)), parsed,
                                str(ingested.metadata["run_id"]))
    trained = train_recommender(frame, parsed, RecsConfig.model_validate(config), Path(model.path),
                                threads=load_settings().max_threads)
    model.metadata.update({"kind": trained.kind, "k": trained.k, "metrics": trained.metrics,
                           "catalogue": trained.catalogue, "events": trained.events, "ann": trained.ann or {},
                           "split": trained.split, "source": source, "duration_s": trained.duration_s})


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate_recs_op(model: Input[Model], ingested: Input[Dataset], spec: str, lake_uri: str, registry_uri: str,
                     model_name: str, evaluation: Output[Artifact], metrics: Output[Metrics],
                     margin: float = 0.0, storage_options: dict = {},  # noqa: B006
                     ) -> NamedTuple("EvaluateRecsOutputs", [("promote", bool), ("reason", str)]):
    """The gate: the challenger's NDCG@k against the champion's configuration refit on the same split."""
    import json
    from collections import namedtuple
    from pathlib import Path

    from components.recommend.logic import EVALUATION_FILE, GATE_FILE, Trained, gate, read_events
    from skiff.config import load_settings
    from skiff.lake import Lake
    from skiff.registry import ModelRegistry
    from skiff.spec_text import spec_from_text
    from skiff.storage import Store

    parsed = spec_from_text(spec)
    trained = Trained.model_validate(json.loads((Path(model.path) / EVALUATION_FILE).read_text()))
    frame, _ = read_events(Lake(Store(lake_uri, storage_options or None)), parsed, str(ingested.metadata["run_id"]))
    decision = gate(trained, frame, parsed, ModelRegistry(Store(registry_uri, storage_options or None)),
                    model_name or parsed.name, margin=margin, threads=load_settings().max_threads)
    for key, value in trained.metrics[trained.kind].items():
        metrics.log_metric(key.replace("@", "_at_"), value)
    Path(evaluation.path).mkdir(parents=True, exist_ok=True)
    (Path(evaluation.path) / GATE_FILE).write_text(decision.model_dump_json(indent=2))
    evaluation.metadata.update(decision.model_dump())
    outputs = namedtuple("EvaluateRecsOutputs", ["promote", "reason"])
    return outputs(decision.promote, decision.reason)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def register_recs_op(model: Input[Model], evaluation: Input[Artifact], spec: str, registry_uri: str,
                     model_name: str, pipeline_job: str = "",
                     storage_options: dict = {},  # noqa: B006
                     ) -> NamedTuple("RegisterRecsOutputs", [("version", int), ("champion", bool)]):
    """Register the recommender version (the champion when the gate promoted it)."""
    import json
    from collections import namedtuple
    from pathlib import Path

    from components.recommend.logic import GATE_FILE, GateDecision, register_recommender
    from skiff.config import load_settings
    from skiff.locks import locks_for
    from skiff.registry import ModelRegistry
    from skiff.spec_text import spec_from_text
    from skiff.storage import Store

    parsed = spec_from_text(spec)
    decision = GateDecision.model_validate(json.loads((Path(evaluation.path) / GATE_FILE).read_text()))
    settings = load_settings()
    registry = ModelRegistry(Store(registry_uri, storage_options or settings.storage_options),
                             locks=locks_for(settings))
    source = dict(model.metadata.get("source") or {})
    dataset = {"dataset": parsed.name, **source}
    done = register_recommender(registry, model_name or parsed.name, Path(model.path), decision, dataset=dataset,
                                pipeline_run_id=pipeline_job or None)
    outputs = namedtuple("RegisterRecsOutputs", ["version", "champion"])
    return outputs(done["version"], done["champion"])
