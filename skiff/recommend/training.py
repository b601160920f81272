"""Training and evaluating recommenders by a time-based split.

:func:`time_split` holds out the last ``test_days`` of events: models train on the past and are scored on
the users who came back in the test period (their held-out items not already seen in training are the
relevant set; a user never seen in training is scored too: the model answers with popular items).
:func:`evaluate_models` trains each configured kind on the past, computes the ranking metrics
(:mod:`skiff.recommend.metrics`) and each model's lift over the popularity baseline, and names the best
by NDCG@k. :func:`fit_final` refits the chosen kind on every event, the model a version registers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from skiff.errors import SkiffError
from skiff.recommend.events import Interactions, RecsConfig
from skiff.recommend.metrics import lift, ranking_metrics
from skiff.recommend.model import RecModel, train_model

__all__ = ["time_split", "evaluate_models", "score_model", "Evaluation", "Split"]


@dataclass(frozen=True)
class Split:
    train: Interactions
    test: Interactions
    cutoff: float  # seconds since the epoch: train < cutoff <= test

    def describe(self) -> dict[str, Any]:
        return {"train_events": len(self.train), "test_events": len(self.test), "cutoff": self.cutoff,
                "test_users": len(set(self.test.users.tolist()))}


def time_split(data: Interactions, test_days: float) -> Split:
    """Events before ``newest - test_days`` train, the rest test; a :class:`SkiffError` when either is empty."""
    if len(data) == 0:
        raise SkiffError("no interaction events to split")
    cutoff = float(data.ts.max()) - test_days * 86400.0
    train = data.ts < cutoff
    if not train.any() or train.all():
        span = (float(data.ts.max()) - float(data.ts.min())) / 86400.0
        raise SkiffError(f"a time split with test_days={test_days} leaves an empty train or test set (the events "
                         f"span {span:.1f} days); lower recs_config.test_days")
    return Split(data.select(train), data.select(~train), cutoff)


def _relevant(split: Split, model: RecModel) -> dict[str, set[str]]:
    truth: dict[str, set[str]] = {}
    for u, i in zip(split.test.users.tolist(), split.test.items.tolist(), strict=True):
        truth.setdefault(u, set()).add(i)
    for u, items in truth.items():  # items the user already had in training are not news
        idx, _ = model.profile(u)
        seen = {str(model.items[j]) for j in idx.tolist()}
        truth[u] = items - seen
    return truth


def score_model(model: RecModel, split: Split, k: int) -> dict[str, float]:
    """The ranking metrics of ``model`` (trained on ``split.train``) on ``split.test``."""
    truth = _relevant(split, model)
    recs = {u: model.recommend(u, k, exclude_seen=True).items for u, rel in truth.items() if rel}
    return ranking_metrics(recs, truth, k, model.n_items)


@dataclass
class Evaluation:
    """Each kind's metrics on the split, their lift over popularity, the best kind and the split."""

    k: int
    metrics: dict[str, dict[str, float]]
    lift: dict[str, dict[str, float | None]]
    best: str
    split: dict[str, Any]
    train_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def gate_metric(self) -> str:
        return f"ndcg@{self.k}"


def evaluate_models(data: Interactions, config: RecsConfig, *, threads: int = 1) -> tuple[Evaluation, Split]:
    """Train every configured kind (and popularity, the baseline) on the past; score on the last period."""
    split = time_split(data, config.test_days)
    kinds: list[str] = list(dict.fromkeys(["popularity", *config.models]))
    metrics: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}
    for kind in kinds:
        t0 = time.perf_counter()
        model = train_model(kind, split.train, config, now=split.cutoff, threads=threads)
        seconds[kind] = time.perf_counter() - t0
        metrics[kind] = score_model(model, split, config.k)
    key = f"ndcg@{config.k}"
    candidates: list[str] = [k for k in kinds if k in config.models]
    best = max(candidates, key=lambda k: (metrics[k][key], -candidates.index(k)))
    lifts = {k: lift(metrics[k], metrics["popularity"]) for k in kinds}
    return Evaluation(config.k, metrics, lifts, best, split.describe(), seconds), split


def champion_metrics(kind: str, params: dict[str, Any], split: Split, config: RecsConfig, *,
                     threads: int = 1) -> dict[str, float]:
    """The champion's configuration refit on the same past and scored on the same period (a fair gate)."""
    cfg = config.model_copy(deep=True)
    if kind == "als":
        cfg.als = cfg.als.model_copy(update={k: v for k, v in params.items() if k in type(cfg.als).model_fields})
    elif kind == "item_item" and "neighbours" in params:
        cfg.neighbours = int(params["neighbours"])
    model = train_model(kind, split.train, cfg, now=split.cutoff, threads=threads)
    return score_model(model, split, config.k)


def newest(data: Interactions) -> float:
    return float(np.max(data.ts)) if len(data) else time.time()
