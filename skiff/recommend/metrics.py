"""Ranking metrics of top-k recommendations against the items each user went on to interact with.

Relevance is binary: an item is relevant to a user when it is in the user's held-out set. For a ranked list
``rec`` of at most ``k`` items and a relevant set ``rel`` (users with an empty ``rel`` are not scored):

- precision@k = hits / k; recall@k = hits / |rel|; hit rate = share of users with at least one hit;
- NDCG@k = DCG / IDCG with DCG = Σ_{hit at rank r (1-based)} 1 / log2(r + 1) and IDCG the DCG of
  min(|rel|, k) hits at the top;
- MAP@k = mean over users of AP@k = (Σ_{hit at rank r} precision@r) / min(|rel|, k);
- catalogue coverage = distinct items recommended to any scored user / catalogue size.

Each metric is the mean over scored users. :func:`lift` puts a model's metrics beside a baseline's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

__all__ = ["ranking_metrics", "lift", "METRIC_NAMES"]

METRIC_NAMES = ("precision", "recall", "ndcg", "map", "hit_rate", "coverage")


def ranking_metrics(recommended: Mapping[str, Sequence[str]], relevant: Mapping[str, set[str]], k: int,
                    catalogue_size: int) -> dict[str, float]:
    """``precision@k`` … ``coverage@k`` (keys ``<metric>@<k>``) and ``users`` (how many were scored)."""
    if k < 1:
        raise ValueError("k must be >= 1")
    sums = dict.fromkeys(("precision", "recall", "ndcg", "map", "hit_rate"), 0.0)
    shown: set[str] = set()
    scored = 0
    for user, rel in relevant.items():
        if not rel:
            continue
        scored += 1
        rec = list(recommended.get(user, ()))[:k]
        shown.update(rec)
        hits, dcg, ap = 0, 0.0, 0.0
        for rank, item in enumerate(rec, start=1):
            if item in rel:
                hits += 1
                dcg += 1.0 / math.log2(rank + 1)
                ap += hits / rank
        ideal = sum(1.0 / math.log2(r + 1) for r in range(1, min(len(rel), k) + 1))
        sums["precision"] += hits / k
        sums["recall"] += hits / len(rel)
        sums["ndcg"] += dcg / ideal
        sums["map"] += ap / min(len(rel), k)
        sums["hit_rate"] += 1.0 if hits else 0.0
    out = {f"{name}@{k}": (value / scored if scored else 0.0) for name, value in sums.items()}
    out[f"coverage@{k}"] = len(shown) / catalogue_size if catalogue_size else 0.0
    out["users"] = float(scored)
    return out


def lift(metrics: Mapping[str, float], baseline: Mapping[str, float]) -> dict[str, float | None]:
    """Each metric's ratio to the baseline's (None where the baseline is 0); ``users`` left out."""
    out: dict[str, float | None] = {}
    for key, value in metrics.items():
        if key == "users" or key not in baseline:
            continue
        base = baseline[key]
        out[key] = value / base if base else None
    return out
