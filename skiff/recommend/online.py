"""Each user's most recent items in the Feast online store: what makes a click change the next answer.

A recommender version ``<model>`` has one feature view, ``<model>_recent_items``, keyed by the user column
(entity ``<model>_user``), with three list features: ``recent_items`` (item ids, newest last),
``recent_times`` (event times, seconds since the epoch) and ``recent_weights`` (the event types' weights).
Events (HTTP on the model server, MQTT through :mod:`skiff.recommend.stream`) are merged into the user's
list (:func:`merge_recent`: the last ``recent_n``, one entry per item, newest time and summed weight) and
written with ``write_to_online_store``.

Reading: :meth:`RecentItems.weighted` is the one read of the serving path. It returns each user's items
with their weights decayed by age (``0.5 ** (age / recent_half_life_s)``, :func:`decayed`) and boosted by
``recent_boost``. Behind a KServe transformer the transformer calls it and hands the items to the
predictor in the request; a predictor served alone calls it itself.

Writing is a read-modify-write of one user's list, and it is safe across processes and pods: every writer
of a user holds that user's lock from reading the list to writing it back, so concurrent writers of the
same user (several MQTT consumers, several model-server replicas taking events) each merge into what the
previous one wrote and no event is lost:

- Redis online store (a cluster's, or ``feature_store.redis.yaml``): a per-user Redis lock (redis-py's
  ``Lock``: ``SET NX PX`` with a random token, released only by its holder) on the key
  ``skiff:lock:<project>:<view>:<user>``, through the store's own Redis connection (cluster mode too). It
  expires after :data:`LOCK_LEASE_S` if its holder dies; a writer waits at most :data:`LOCK_WAIT_S`, then
  fails with a :class:`~skiff.errors.SourceError` (nothing written). On a Redis Cluster the Feast config
  must say ``redis_type: redis_cluster``; a plain client sent there fails with a SourceError saying so. A batch takes its users' locks in
  sorted order, so two batches never wait for each other in a cycle.
- SQLite online store (the local engine): an OS file lock (:func:`skiff.locks.exclusive_path`) next to
  the database file, one per view, held by every process writing that view.
- Any other online store: writers are serialised within the process only (logged once).

Each write's Feast event timestamp is later than the one it replaces (Feast's Redis store skips a row whose
timestamp is not newer than the stored one, which clock skew between writers would otherwise trigger).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skiff.errors import SourceError, UsageError
from skiff.recommend.events import InteractionEvent, RecsConfig

if TYPE_CHECKING:
    from feast import FeatureStore

    from skiff.config import Settings

__all__ = ["RecentItems", "Recent", "merge_recent", "decayed", "view_name", "feast_objects", "LOCK_LEASE_S",
           "LOCK_WAIT_S"]

log = logging.getLogger(__name__)

#: Seconds a user's Redis lock lives if its holder dies before releasing it.
LOCK_LEASE_S = 30.0
#: Seconds a writer waits for another writer of the same user (or view, on SQLite) before failing.
LOCK_WAIT_S = 10.0
#: How much later than the stored row a write's Feast timestamp is at least (microseconds: Feast keeps them).
_STAMP_STEP = dt.timedelta(microseconds=1)


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


class _UserLocks:
    """The lock a writer holds around one read-modify-write of some users' lists (see the module doc)."""

    kind = "process"

    def __init__(self) -> None:
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self, users: Sequence[str]) -> Iterator[None]:
        with self._lock:
            yield


class _RedisUserLocks(_UserLocks):
    """One redis-py ``Lock`` per user, taken in sorted order, on the online store's own connection."""

    kind = "redis"

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    @contextlib.contextmanager
    def hold(self, users: Sequence[str]) -> Iterator[None]:
        from redis.exceptions import AskError, LockError, LockNotOwnedError, MovedError, RedisError

        held = []
        try:
            for user in sorted(set(users)):
                lock = self.client.lock(f"{self.prefix}{user}", timeout=LOCK_LEASE_S, blocking_timeout=LOCK_WAIT_S,
                                        thread_local=False)
                try:
                    acquired = lock.acquire()
                except (MovedError, AskError) as e:  # a non-cluster client sent to a Redis Cluster node
                    raise SourceError(f"cannot take the recent-items lock of user {user!r}: the online store's "
                                      f"Redis is a cluster ({type(e).__name__}: {e}); set redis_type: "
                                      "redis_cluster in the Feast config's online_store", user=user) from e
                except RedisError as e:
                    raise SourceError(f"cannot take the recent-items lock of user {user!r} in Redis "
                                      f"({type(e).__name__}: {e})", user=user) from e
                if not acquired:
                    raise SourceError(f"another writer has held the recent-items lock of user {user!r} for over "
                                      f"{LOCK_WAIT_S:g} s; nothing was written", user=user)
                held.append(lock)
            yield
        finally:
            for lock in reversed(held):
                try:
                    lock.release()
                except LockNotOwnedError:  # it outlived its lease: another writer may have merged meanwhile
                    log.warning("recent-items lock %s expired before its write finished (lease %g s)",
                                lock.name, LOCK_LEASE_S)
                except (LockError, RedisError) as e:  # the lease ends it anyway
                    log.warning("could not release recent-items lock %s: %s", lock.name, e)


class _FileUserLocks(_UserLocks):
    """An OS file lock next to the SQLite database, one per view (SQLite serialises its writers anyway)."""

    kind = "file"

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    @contextlib.contextmanager
    def hold(self, users: Sequence[str]) -> Iterator[None]:
        from skiff.locks import exclusive_path

        with self._lock, exclusive_path(self.path, timeout=LOCK_WAIT_S):
            yield


_warned_stores: set[str] = set()


def _user_locks(store: FeatureStore, view: str) -> _UserLocks:
    """The cross-process locks of the store's online store kind (Redis, SQLite), else a process lock."""
    config = store.config
    online = config.online_store
    kind = str(getattr(online, "type", "") or "")
    if kind == "redis" or kind.endswith("RedisOnlineStore"):
        # the online store's own client: its connection string, credentials, TLS and cluster mode
        redis_store: Any = store._get_provider().online_store  # noqa: SLF001 - Feast's RedisOnlineStore
        client = redis_store._get_client(online)  # noqa: SLF001 - its one client for this store
        return _RedisUserLocks(client, f"skiff:lock:{config.project}:{view}:")
    if kind == "sqlite" or kind.endswith("SqliteOnlineStore"):
        path = Path(online.path)
        if config.repo_path and not path.is_absolute():
            path = Path(config.repo_path) / path
        return _FileUserLocks(path.parent / f".{path.name}.{view}.lock")
    if kind not in _warned_stores:
        _warned_stores.add(kind)
        log.warning("online store %r has no cross-process lock in skiff: concurrent writers of one user's recent "
                    "items may lose an update (use Redis, or route one user's events to one writer)", kind)
    return _UserLocks()


class RecentItems:
    """A recommender's recent-items view in a Feast store: read a user's list, merge events into it."""

    def __init__(self, store: FeatureStore, model: str, config: RecsConfig) -> None:
        self.store = store
        self.model = model
        self.view = view_name(model)
        self.config = config
        self.user_column = config.user_column
        self._features = [f"{self.view}:recent_items", f"{self.view}:recent_times", f"{self.view}:recent_weights"]
        self._locks = _user_locks(store, self.view)

    @property
    def lock_kind(self) -> str:
        """``redis``, ``file`` (SQLite) or ``process``: how far the writers' lock reaches."""
        return self._locks.kind

    @classmethod
    def open(cls, settings: Settings, model: str, config: RecsConfig) -> RecentItems:
        """Open the settings' Feast store and apply the view's definitions when the registry lacks them."""
        from feast.errors import FeatureViewNotFoundException

        from skiff.feature_store import feature_sources, open_store_from_settings
        from skiff.lake import Lake

        lake = Lake.from_settings(settings)
        store = open_store_from_settings(settings, lake)
        try:  # an applied view is left as it is: replicas starting together do not rewrite the registry
            store.get_feature_view(view_name(model))
        except FeatureViewNotFoundException:
            path = feature_sources(lake).uri(view_name(model), "offline.parquet")
            store.apply(feast_objects(model, config.user_column, path))
        return cls(store, model, config)

    def _read(self, users: Sequence[str]) -> tuple[list[list[Recent]], list[dt.datetime | None]]:
        """Each user's list and the Feast event timestamp of its row (None: no row)."""
        response = self.store.get_online_features(features=self._features,
                                                  entity_rows=[{self.user_column: u} for u in users])
        values = response.to_dict()
        stamps: list[dt.datetime | None] = [None] * len(users)
        for name, result in zip(response.proto.metadata.feature_names.val, response.proto.results, strict=True):
            if name == "recent_items":
                stamps = [ts.ToDatetime(tzinfo=dt.UTC) if ts.seconds or ts.nanos else None
                          for ts in result.event_timestamps]
        out: list[list[Recent]] = []
        for items, times, weights in zip(values["recent_items"], values["recent_times"], values["recent_weights"],
                                         strict=True):
            if not items:
                out.append([])
                continue
            out.append([Recent(str(i), float(t), float(w)) for i, t, w in zip(items, times, weights, strict=True)])
        return out, stamps

    def get_many(self, users: Sequence[str]) -> list[list[Recent]]:
        if not users:
            return []
        return self._read(users)[0]

    def get(self, user: str) -> list[Recent]:
        return self.get_many([user])[0]

    def weighted(self, users: Sequence[str], now: float | None = None) -> list[list[tuple[str, float]]]:
        """Each user's recent items with their decayed, boosted weights (what scoring adds to the history).

        The one read of the serving path: the transformer calls it and sends the result to the predictor;
        a predictor without a transformer calls it itself."""
        t = time.time() if now is None else now
        c = self.config
        return [decayed(r, t, c.recent_half_life_s, c.recent_boost) for r in self.get_many(users)]

    def add(self, events: Sequence[InteractionEvent]) -> dict[str, int]:
        """Merge events into their users' lists and write them, holding the users' locks (safe across
        processes on Redis and SQLite); unknown event types are a :class:`UsageError` naming them (nothing
        is written then). Returns events accepted per user."""
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
        if not users:
            return {}
        with self._locks.hold(users):
            current, stamps = self._read(users)
            merged = [merge_recent(old, by_user[u], self.config.recent_n) for u, old in zip(users, current, strict=True)]
            wall = dt.datetime.now(dt.UTC)
            frame = pd.DataFrame({
                self.user_column: users,
                "recent_items": [[r.item for r in m] for m in merged],
                "recent_times": [[r.ts for r in m] for m in merged],
                "recent_weights": [[r.weight for r in m] for m in merged],
                # later than the row it replaces, whatever the writers' clocks say
                "event_timestamp": [pd.Timestamp(wall if s is None or s < wall else s + _STAMP_STEP) for s in stamps],
            })
            self.store.write_to_online_store(self.view, frame)
        return {u: len(by_user[u]) for u in users}
