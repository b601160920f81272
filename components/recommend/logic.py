"""The recommender steps' work, without KFP: read events from the lake, train, gate, register.

- :func:`read_events`: the accepted rows of every run of the ingested spec (runs of one spec add up to
  the interaction history), as validated by ingestion;
- :func:`train_recommender`: the time-split evaluation of each configured model against popularity, then
  the best kind refit on all events; writes ``recs.npz``, ``evaluation.json`` and, past the ANN threshold,
  ``items.faiss`` with its recall@k against exact scoring;
- :func:`gate`: the champion/challenger decision: the champion's configuration refit on the same past and
  scored on the same period; the challenger must beat it on NDCG@k by ``margin``;
- :func:`register_recommender`: an immutable version of flavor ``recommender`` (promoted when the gate said so).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict

from skiff.errors import NotFoundError, SkiffError
from skiff.lake import Lake
from skiff.recommend.events import RecsConfig, check_events_spec, interactions
from skiff.recommend.index import INDEX_FILE_NAME, build_index, index_recall, write_index
from skiff.recommend.model import MODEL_FILE_NAME, train_model
from skiff.recommend.training import champion_metrics, evaluate_models, newest, time_split
from skiff.registry import ModelRegistry, VersionMetadata
from skiff.spec import DatasetSpec

__all__ = ["read_events", "train_recommender", "gate", "register_recommender", "Trained", "GateDecision",
           "EVALUATION_FILE", "GATE_FILE"]

EVALUATION_FILE = "evaluation.json"
GATE_FILE = "gate.json"


class Trained(BaseModel):
    """What the train step recorded (``evaluation.json`` in the model folder)."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    params: dict[str, Any]
    k: int
    metrics: dict[str, dict[str, float]]
    lift: dict[str, dict[str, float | None]]
    split: dict[str, Any]
    events: dict[str, Any]
    catalogue: dict[str, int]
    ann: dict[str, Any] | None
    config: dict[str, Any]
    duration_s: float


class GateDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metric: str
    challenger: float
    champion: float | None
    champion_version: int | None
    margin: float
    promote: bool
    reason: str


def read_events(lake: Lake, spec: DatasetSpec, run_id: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Every accepted row of the runs written with the spec of run ``run_id`` (its partitions included)."""
    import pyarrow.parquet as pq

    ref = lake.select_runs(spec.name, run_id=run_id).runs[0]
    spec_hash = lake.manifest(ref).spec_hash
    selection = lake.select_runs(spec.name, spec_hash=spec_hash)
    frames = []
    for r in selection.runs:
        for uri in lake.run_files(r):
            path = uri if lake.store.is_local else lake.store.fs._strip_protocol(uri)
            frames.append(pq.read_table(path, filesystem=None if lake.store.is_local else lake.store.fs).to_pandas())
    if not frames:
        raise NotFoundError(f"dataset {spec.name!r} has no accepted interaction rows", dataset=spec.name)
    frame = pd.concat(frames, ignore_index=True)
    return frame, {"runs": [f"{r.date}/{r.run_id}" for r in selection.runs], "rows": len(frame),
                   "run_id": ref.run_id, "ingest_date": ref.date, "spec_hash": spec_hash}


def _timestamp(spec: DatasetSpec) -> str:
    if spec.event_timestamp is None:  # the spec's own check makes this unreachable for a recommendation spec
        raise SkiffError(f"dataset {spec.name!r} has no event_timestamp")
    return spec.event_timestamp


def train_recommender(frame: pd.DataFrame, spec: DatasetSpec, config: RecsConfig, out: Path, *,
                      threads: int = 1) -> Trained:
    """Evaluate every configured model on the last period, refit the best on all events, write ``out``."""
    t0 = time.perf_counter()
    check_events_spec(spec, config)
    data = interactions(frame, config, _timestamp(spec))
    evaluation, _ = evaluate_models(data, config, threads=threads)
    model = train_model(evaluation.best, data, config, now=newest(data), threads=threads)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / MODEL_FILE_NAME)
    ann: dict[str, Any] | None = None
    if model.kind == "als" and model.n_items > config.ann.threshold:
        index = build_index(model.item_factors, config.ann)  # type: ignore[arg-type]  # als has factors
        ann = {"type": "faiss.IndexHNSWFlat", "m": config.ann.m, "ef_search": config.ann.ef_search,
               **index_recall(model, index, config.k, config.ann.recall_users)}
        write_index(index, out / INDEX_FILE_NAME)
    trained = Trained(kind=model.kind, params=model.params, k=config.k, metrics=evaluation.metrics,
                      lift=evaluation.lift, split=evaluation.split,
                      events={"rows": len(frame), "used": len(data), "dropped": data.dropped},
                      catalogue={"items": model.n_items, "users": int(model.users.shape[0])}, ann=ann,
                      config=config.model_dump(mode="json"), duration_s=time.perf_counter() - t0)
    (out / EVALUATION_FILE).write_text(trained.model_dump_json(indent=2))
    return trained


def gate(trained: Trained, frame: pd.DataFrame, spec: DatasetSpec, registry: ModelRegistry, name: str, *,
         margin: float = 0.0, threads: int = 1) -> GateDecision:
    """Promote when there is no recommender champion, or the challenger's NDCG@k beats the champion's
    configuration refit on the same split by ``margin``."""
    metric = f"ndcg@{trained.k}"
    challenger = trained.metrics[trained.kind][metric]
    try:
        champ = registry.get(name, "champion")
    except NotFoundError:
        champ = None
    if champ is None or champ.metadata.flavor != "recommender":
        return GateDecision(metric=metric, challenger=challenger, champion=None, champion_version=None,
                            margin=margin, promote=True, reason=f"no recommender champion yet; {trained.kind} "
                            f"{metric} {challenger:.4f} (popularity "
                            f"{trained.metrics['popularity'][metric]:.4f})")
    config = RecsConfig.model_validate(trained.config)
    data = interactions(frame, config, _timestamp(spec))
    split = time_split(data, config.test_days)
    kind = champ.metadata.estimator or "popularity"
    theirs = champion_metrics(kind, champ.metadata.params, split, config, threads=threads)[metric]
    promote = challenger > theirs + margin
    verb = "beats" if promote else "does not beat"
    return GateDecision(metric=metric, challenger=challenger, champion=theirs, champion_version=champ.version,
                        margin=margin, promote=promote,
                        reason=f"challenger {trained.kind} {metric} {challenger:.4f} {verb} champion v"
                               f"{champ.version} ({kind}, refit on the same split) {theirs:.4f} + margin {margin}")


def register_recommender(registry: ModelRegistry, name: str, model_dir: Path, decision: GateDecision, *,
                         dataset: dict[str, Any], pipeline_run_id: str | None = None) -> dict[str, Any]:
    """Publish the version (flavor ``recommender``) and promote it when the gate said so."""
    trained = Trained.model_validate(json.loads((model_dir / EVALUATION_FILE).read_text()))
    files = {MODEL_FILE_NAME: model_dir / MODEL_FILE_NAME, EVALUATION_FILE: model_dir / EVALUATION_FILE}
    if (model_dir / INDEX_FILE_NAME).is_file():
        files[INDEX_FILE_NAME] = model_dir / INDEX_FILE_NAME
    k = trained.k
    mine = trained.metrics[trained.kind]
    metrics = {key: value for key, value in mine.items() if key != "users"}
    metrics.update({f"baseline_{key}": value for key, value in trained.metrics["popularity"].items() if key != "users"})
    config = trained.config
    meta = VersionMetadata(
        name=name, flavor="recommender", problem_type="recommendation", estimator=trained.kind,
        params=trained.params, features=[config["user_column"]], input_schema={config["user_column"]: "string"},
        metrics=metrics, gate=decision.model_dump(), dataset=dataset,
        data_fingerprint=dataset.get("spec_hash"), pipeline_run_id=pipeline_run_id,
        extra={"recs": {"k": k, "models": trained.metrics, "lift": trained.lift, "split": trained.split,
                        "events": trained.events, "catalogue": trained.catalogue, "ann": trained.ann,
                        "config": config, "model_file": MODEL_FILE_NAME,
                        "index_file": INDEX_FILE_NAME if INDEX_FILE_NAME in files else None}})
    pointer = {"flavor": "recommender", "model": MODEL_FILE_NAME}
    version = registry.register(name, pointer, meta, files)
    champion = False
    if decision.promote:
        registry.set_champion(name, version.version, decision.reason)
        champion = True
    return {"name": name, "version": version.version, "uri": version.uri, "champion": champion,
            "reason": decision.reason}
