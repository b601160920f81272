"""Interaction events and the recommender's configuration.

An interaction event is one row of a data set whose spec has ``problem_type: recommendation``: a user, an
item, an event type (``view``, ``click``, ``purchase`` … each with a weight), the event time and optionally
a rating. Batch events are ingested and validated like any data set (the spec's types and rules; bad rows
quarantined with a reason); real-time events (HTTP, MQTT) are checked by :class:`InteractionEvent`.

Which spec columns play which part, the weights and the time decay are a :class:`RecsConfig` (the
pipeline's ``recs_config`` parameter). :func:`interactions` turns rows into ``(user, item, weight, ts)``
with unknown event types counted, never silently kept; :func:`weighted_matrix` sums the weights, each
decayed by its age (``0.5 ** (age / half_life)``), into a users × items CSR matrix.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from skiff.errors import SpecError

if TYPE_CHECKING:
    import pandas as pd
    import scipy.sparse as sp

    from skiff.spec import DatasetSpec

__all__ = ["RecsConfig", "AlsConfig", "AnnConfig", "InteractionEvent", "Interactions", "DEFAULT_WEIGHTS",
           "check_events_spec", "interactions", "weighted_matrix", "ModelKind", "MODEL_KINDS"]

#: the default weight of each event type: a purchase says more than a view
DEFAULT_WEIGHTS: dict[str, float] = {"view": 1.0, "click": 3.0, "purchase": 10.0}
ModelKind = Literal["popularity", "item_item", "als"]
MODEL_KINDS: tuple[str, ...] = ("popularity", "item_item", "als")
_MAX_ID = 256
_DEFAULT_MODELS: tuple[ModelKind, ...] = ("popularity", "item_item", "als")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AlsConfig(_Strict):
    """implicit's alternating least squares on the weighted matrix (its values are the confidences)."""

    factors: int = Field(default=64, ge=2, le=1024, description="Latent factors per user and item.")
    regularization: float = Field(default=0.05, ge=0.0, description="L2 regularisation.")
    iterations: int = Field(default=15, ge=1, le=200, description="ALS sweeps.")
    alpha: float = Field(default=2.0, gt=0.0, description="Confidence scale: C = alpha * weight.")
    seed: int = Field(default=0, description="Random seed of the factor initialisation.")


class AnnConfig(_Strict):
    """The approximate catalogue index (faiss HNSW, inner product) used past ``threshold`` items."""

    threshold: int = Field(default=100_000, ge=1, description="Catalogues with more items than this get an "
                           "ANN index; up to it scoring is exact.")
    m: int = Field(default=32, ge=4, le=128, description="HNSW graph degree.")
    ef_construction: int = Field(default=200, ge=8, description="HNSW build breadth.")
    ef_search: int = Field(default=128, ge=8, description="HNSW search breadth.")
    recall_users: int = Field(default=500, ge=1, description="Users sampled to measure recall@k against exact.")


class RecsConfig(_Strict):
    """How interaction rows become a recommender: column roles, weights, decay, split, models."""

    user_column: str = Field(default="user_id", description="Column with the user id.")
    item_column: str = Field(default="item_id", description="Column with the item id.")
    event_column: str | None = Field(default="event_type", description="Column with the event type (None: "
                                     "every row weighs 1).")
    rating_column: str | None = Field(default=None, description="Optional rating column: an event's weight is "
                                      "multiplied by the rating when present.")
    weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_WEIGHTS),
                                      description="Event type to weight (> 0).")
    half_life_days: float | None = Field(default=30.0, gt=0.0, description="Time decay of training weights: "
                                         "an event half_life_days older than the newest weighs half. None: "
                                         "no decay.")
    test_days: float = Field(default=7.0, gt=0.0, description="The last period held out for evaluation.")
    k: int = Field(default=10, ge=1, le=1000, description="k of the @k metrics.")
    models: list[ModelKind] = Field(default_factory=lambda: list(_DEFAULT_MODELS),
                                    description="Models to train; the best on NDCG@k is registered.")
    neighbours: int = Field(default=100, ge=1, le=10_000, description="Item–item: neighbours kept per item.")
    als: AlsConfig = Field(default_factory=AlsConfig)
    ann: AnnConfig = Field(default_factory=AnnConfig)
    recent_n: int = Field(default=20, ge=1, le=1000, description="Real time: a user's last N items kept online.")
    recent_half_life_s: float = Field(default=3600.0, gt=0.0, description="Real time: half life of a recent "
                                      "item's weight, in seconds.")
    recent_boost: float = Field(default=5.0, ge=0.0, description="Real time: how much a recent item weighs "
                                "against the training history (times its event weight).")

    @field_validator("weights")
    @classmethod
    def _positive(cls, v: dict[str, float]) -> dict[str, float]:
        if not v:
            raise ValueError("weights needs at least one event type")
        bad = {k: w for k, w in v.items() if not (w > 0 and np.isfinite(w))}
        if bad:
            raise ValueError(f"event weights must be finite and > 0: {bad}")
        return v

    @model_validator(mode="after")
    def _models(self) -> RecsConfig:
        if not self.models:
            raise ValueError("models needs at least one of popularity, item_item, als")
        if len(set(self.models)) != len(self.models):
            raise ValueError(f"models lists one twice: {self.models}")
        return self

    def weight(self, event_type: str | None) -> float | None:
        """The weight of an event type (None: unknown type); with no event column every event weighs 1."""
        if self.event_column is None:
            return 1.0
        return self.weights.get(str(event_type)) if event_type is not None else None


class InteractionEvent(_Strict):
    """One real-time event (HTTP body or MQTT message): the same fields a batch row has."""

    user_id: str = Field(min_length=1, max_length=_MAX_ID)
    item_id: str = Field(min_length=1, max_length=_MAX_ID)
    event_type: str = Field(default="click", min_length=1, max_length=64)
    timestamp: dt.datetime | None = Field(default=None, description="Event time (default: when received).")
    rating: float | None = Field(default=None, allow_inf_nan=False)

    @field_validator("timestamp")
    @classmethod
    def _aware(cls, v: dt.datetime | None) -> dt.datetime | None:
        if v is not None and v.tzinfo is None:
            return v.replace(tzinfo=dt.UTC)
        return v


def check_events_spec(spec: DatasetSpec, config: RecsConfig) -> None:
    """The spec is an interaction data set the config can read: a :class:`SpecError` naming what is off."""
    problems: list[str] = []
    if spec.problem_type != "recommendation":
        problems.append(f"problem_type must be recommendation, not {spec.problem_type}")
    roles = {"user_column": config.user_column, "item_column": config.item_column,
             "event_column": config.event_column, "rating_column": config.rating_column}
    for role, col in roles.items():
        if col is None:
            continue
        if col not in spec.columns:
            problems.append(f"{role} {col!r} is not a column of the spec")
        elif role in ("user_column", "item_column", "event_column") and spec.columns[col].type not in (
                "string", "category", "integer"):
            problems.append(f"{role} {col!r} must be a string, category or integer column")
        elif role == "rating_column" and spec.columns[col].type not in ("float", "integer"):
            problems.append(f"rating_column {col!r} must be numeric")
    if config.event_column and config.event_column in spec.columns:
        allowed = spec.columns[config.event_column].allowed
        if allowed is not None:
            missing = sorted(str(a) for a in allowed if str(a) not in config.weights)
            if missing:
                problems.append(f"event types {missing} are allowed by the spec but have no weight")
    if problems:
        raise SpecError(f"dataset {spec.name!r} is not an interaction data set: " + "; ".join(problems),
                        problems=problems)


@dataclass(frozen=True)
class Interactions:
    """Interaction rows as columns: user and item ids (str), weight, event time (seconds since the epoch)."""

    users: np.ndarray
    items: np.ndarray
    weights: np.ndarray
    ts: np.ndarray
    dropped: dict[str, int]

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def select(self, mask: np.ndarray) -> Interactions:
        return Interactions(self.users[mask], self.items[mask], self.weights[mask], self.ts[mask], {})


def _seconds(values: Any) -> np.ndarray:
    import pandas as pd

    t = pd.to_datetime(pd.Series(values), utc=True, errors="coerce")
    out = np.full(len(t), np.nan)
    ok = t.notna().to_numpy()
    out[ok] = (t[ok] - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()  # any unit (ns, us, ms)
    return out


def interactions(frame: pd.DataFrame, config: RecsConfig, timestamp_column: str) -> Interactions:
    """Rows to weighted interactions. Rows without a user, item or time, with an unknown event type or a
    non-positive weight are dropped and counted by reason (``dropped``): counts reconcile."""
    n = len(frame)
    for col in (config.user_column, config.item_column, timestamp_column):
        if col not in frame.columns:
            raise SpecError(f"interaction rows have no column {col!r}")
    users = frame[config.user_column]
    items = frame[config.item_column]
    keep = (users.notna() & items.notna()).to_numpy()
    dropped: dict[str, int] = {}
    if (~keep).any():
        dropped["missing user or item"] = int((~keep).sum())
    ts = _seconds(frame[timestamp_column])
    bad_ts = keep & np.isnan(ts)
    if bad_ts.any():
        dropped["missing timestamp"] = int(bad_ts.sum())
        keep &= ~bad_ts
    if config.event_column is not None:
        if config.event_column not in frame.columns:
            raise SpecError(f"interaction rows have no column {config.event_column!r}")
        mapped = frame[config.event_column].astype("object").map(
            lambda e: config.weights.get(str(e)) if e is not None else None)
        weights = mapped.astype(float).to_numpy()
        unknown = keep & np.isnan(weights)
        if unknown.any():
            dropped["unknown event type"] = int(unknown.sum())
            keep &= ~unknown
    else:
        weights = np.ones(n)
    if config.rating_column is not None and config.rating_column in frame.columns:
        rating = frame[config.rating_column].astype(float).to_numpy()
        weights = np.where(np.isnan(rating), weights, weights * rating)
        nonpos = keep & ~(weights > 0)
        if nonpos.any():
            dropped["weight not positive (rating)"] = int(nonpos.sum())
            keep &= ~nonpos
    return Interactions(users=users.astype(str).to_numpy(dtype=object)[keep],
                        items=items.astype(str).to_numpy(dtype=object)[keep],
                        weights=weights[keep].astype(np.float64), ts=ts[keep], dropped=dropped)


def decay(ts: np.ndarray, now: float, half_life_s: float | None) -> np.ndarray:
    """``0.5 ** (age / half_life)`` per event (1 for events at or after ``now``; 1 without a half life)."""
    if half_life_s is None:
        return np.ones_like(ts, dtype=np.float64)
    age = np.maximum(now - ts, 0.0)
    return np.power(0.5, age / half_life_s)


def weighted_matrix(data: Interactions, users: np.ndarray, items: np.ndarray, *, now: float,
                    half_life_s: float | None) -> sp.csr_matrix:
    """The users × items CSR matrix of summed, time-decayed weights (rows ``users``, columns ``items``;
    interactions of users or items not listed are left out)."""
    import pandas as pd
    import scipy.sparse as sp

    u = pd.Index(users).get_indexer(pd.Index(data.users))
    i = pd.Index(items).get_indexer(pd.Index(data.items))
    ok = (u >= 0) & (i >= 0)
    w = data.weights[ok] * decay(data.ts[ok], now, half_life_s)
    m = sp.csr_matrix((w.astype(np.float32), (u[ok], i[ok])), shape=(len(users), len(items)), dtype=np.float32)
    m.sum_duplicates()
    return m
