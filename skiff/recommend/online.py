"""Each user's most recent items in the Feast online store: what makes a click change the next answer.

A recommender version ``<model>`` has one feature view, ``<model>_recent_items``, keyed by the user column
(entity ``<model>_user``), with three list features: ``recent_items`` (item ids, newest last),
``recent_times`` (event times, seconds since the epoch) and ``recent_weights`` (the event types' weights).
Events (HTTP on the model server, MQTT through :mod:`skiff.recommend.stream`) are merged into the user's
list (:func:`merge_recent`: the last ``recent_n``, one entry per item, newest time and summed weight) and
written with ``write_to_online_store``; the model server reads the list on each request and decays each
weight by its age (``0.5 ** (age / recent_half_life_s)``, :func:`decayed`).

The store is the project's Feast store (:func:`skiff.feature_store.open_store_from_settings`): SQLite on
the local engine, Redis with ``feature_store.redis.yaml`` or on a cluster. A read-modify-write of one user
is serialised within a process (a lock); across processes, route one user's events to one writer (MQTT
shared subscriptions keyed by user, or one events endpoint per user shard) — concurrent writers of the
same user may lose an update, never corrupt one.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from skiff.errors import UsageError
from skiff.recommend.events import InteractionEvent, RecsConfig

if TYPE_CHECKING:
    from feast import FeatureStore

    from skiff.config import Settings

__all__ = ["RecentItems", "Recent", "merge_recent", "decayed", "view_name", "feast_objects"]


@dataclass(frozen=True)
class Recent:
    """One recent item of a user: when (seconds since the epoch) and how much it weighs."""

    item: str
    ts: float
    weight: float


def view_name(model: str) -> str:
    return f"{model}_recent_items"


def merge_recent(existing: Sequence[Recent], new: Iterable[Recent], n: int) -> list[Recent]:
    """The last ``n`` items (oldest first), one entry per item: its newest time, its weights summed."""
    by_item: dict[str, Recent] = {}
    for r in [*existing, *new]:
        old = by_item.get(r.item)
        if old is None:
            by_item[r.item] = r
        else:
            by_item[r.item] = Recent(r.item, max(old.ts, r.ts), old.weight + r.weight)
    merged = sorted(by_item.values(), key=lambda r: (r.ts, r.item))
    return merged[-n:]


def decayed(recent: Sequence[Recent], now: float, half_life_s: float, boost: float = 1.0) -> list[tuple[str, float]]:
    """``(item, weight × boost × 0.5 ** (age / half_life_s))`` per recent item (future times count as now)."""
    return [(r.item, r.weight * boost * 0.5 ** (max(now - r.ts, 0.0) / half_life_s)) for r in recent]


def feast_objects(model: str, user_column: str, source_path: str) -> list[Any]:
    """The entity and feature view of a recommender's recent items (the batch source is never read: the
    view is written online only)."""
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Array, Float64, String

    view = view_name(model)
    entity = Entity(name=f"{model}_user", join_keys=[user_column], value_type=ValueType.STRING,
                    description=f"a user of recommender {model}")
    source = FileSource(name=f"{view}_source", path=source_path, timestamp_field="event_timestamp")
    fv = FeatureView(name=view, entities=[entity], ttl=dt.timedelta(days=365), online=True, source=source,
                     schema=[Field(name=user_column, dtype=String), Field(name="recent_items", dtype=Array(String)),
                             Field(name="recent_times", dtype=Array(Float64)),
                             Field(name="recent_weights", dtype=Array(Float64))],
                     description=f"each user's last items (recommender {model})")
    return [entity, fv]


class RecentItems:
    """A recommender's recent-items view in a Feast store: read a user's list, merge events into it."""

    def __init__(self, store: FeatureStore, model: str, config: RecsConfig) -> None:
        self.store = store
        self.model = model
        self.view = view_name(model)
        self.config = config
        self.user_column = config.user_column
        self._features = [f"{self.view}:recent_items", f"{self.view}:recent_times", f"{self.view}:recent_weights"]
        self._lock = threading.Lock()

    @classmethod
    def open(cls, settings: Settings, model: str, config: RecsConfig) -> RecentItems:
        """Open the settings' Feast store and apply the view's definitions (idempotent)."""
        from skiff.feature_store import feature_sources, open_store_from_settings
        from skiff.lake import Lake

        lake = Lake.from_settings(settings)
        store = open_store_from_settings(settings, lake)
        path = feature_sources(lake).uri(view_name(model), "offline.parquet")
        store.apply(feast_objects(model, config.user_column, path))
        return cls(store, model, config)

    def get_many(self, users: Sequence[str]) -> list[list[Recent]]:
        if not users:
            return []
        values = self.store.get_online_features(features=self._features,
                                                entity_rows=[{self.user_column: u} for u in users]).to_dict()
        out: list[list[Recent]] = []
        for items, times, weights in zip(values["recent_items"], values["recent_times"], values["recent_weights"],
                                         strict=True):
            if not items:
                out.append([])
                continue
            out.append([Recent(str(i), float(t), float(w)) for i, t, w in zip(items, times, weights, strict=True)])
        return out

    def get(self, user: str) -> list[Recent]:
        return self.get_many([user])[0]

    def weighted(self, users: Sequence[str], now: float | None = None) -> list[list[tuple[str, float]]]:
        """Each user's recent items with their decayed, boosted weights (what scoring adds to the history)."""
        t = time.time() if now is None else now
        c = self.config
        return [decayed(r, t, c.recent_half_life_s, c.recent_boost) for r in self.get_many(users)]

    def add(self, events: Sequence[InteractionEvent]) -> dict[str, int]:
        """Merge events into their users' lists and write them; unknown event types are a
        :class:`UsageError` naming them (nothing is written then). Returns events accepted per user."""
        import pandas as pd

        unknown = sorted({e.event_type for e in events if self.config.weight(e.event_type) is None})
        if unknown:
            raise UsageError(f"unknown event type(s) {unknown}; known: {sorted(self.config.weights)}",
                             unknown=unknown)
        now = time.time()
        by_user: dict[str, list[Recent]] = {}
        for e in events:
            ts = e.timestamp.timestamp() if e.timestamp is not None else now
            w = float(self.config.weight(e.event_type) or 1.0) * (e.rating if e.rating is not None else 1.0)
            by_user.setdefault(e.user_id, []).append(Recent(e.item_id, ts, w))
        users = sorted(by_user)
        with self._lock:
            current = self.get_many(users)
            merged = [merge_recent(old, by_user[u], self.config.recent_n) for u, old in zip(users, current, strict=True)]
            stamp = pd.Timestamp(dt.datetime.now(dt.UTC))
            frame = pd.DataFrame({
                self.user_column: users,
                "recent_items": [[r.item for r in m] for m in merged],
                "recent_times": [[r.ts for r in m] for m in merged],
                "recent_weights": [[r.weight for r in m] for m in merged],
                "event_timestamp": [stamp] * len(users),
            })
            self.store.write_to_online_store(self.view, frame)
        return {u: len(by_user[u]) for u in users}
