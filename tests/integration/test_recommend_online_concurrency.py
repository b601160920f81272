"""Several processes merging interleaved events of the same user into the real Redis (and the local SQLite)
online store lose no update: every event's item ends up in the user's list with its weights summed."""

import multiprocessing as mp
import uuid

import pytest

from skiff.config import Settings
from skiff.recommend.events import InteractionEvent, RecsConfig
from skiff.recommend.online import RecentItems
from tests.conftest import require_service

pytestmark = pytest.mark.integration

WRITERS = 4
EVENTS = 12  # per writer, one at a time: each one a read-modify-write racing the other writers
CONFIG = RecsConfig(recent_n=200)


def _settings(root: str, redis: bool) -> Settings:
    return Settings(root=root, feature_store_yaml="feature_store.redis.yaml" if redis else "feature_store.yaml")


def _writer(root: str, redis: bool, model: str, user: str, writer: int, start, out) -> None:
    from skiff.feature_store import open_store_from_settings

    recent = RecentItems(open_store_from_settings(_settings(root, redis)), model, CONFIG)
    start.wait()
    for i in range(EVENTS):
        # an item of this writer only, and one item every writer clicks (its weights must add up)
        recent.add([InteractionEvent(user_id=user, item_id=f"w{writer}-{i}", event_type="view"),
                    InteractionEvent(user_id=user, item_id="shared", event_type="click")])
    out.put((writer, recent.lock_kind))


def _race(tmp_path, redis: bool) -> tuple[RecentItems, str, set[str]]:
    model = f"recs_{uuid.uuid4().hex[:8]}"
    user = f"busy-{uuid.uuid4().hex[:6]}"
    root = str(tmp_path / "root")
    recent = RecentItems.open(_settings(root, redis), model, CONFIG)  # applies the view once, before the writers
    ctx = mp.get_context("fork")  # the writers start with skiff and Feast imported
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(root, redis, model, user, w, start, out)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * WRITERS
    kinds = {out.get(timeout=5)[1] for _ in procs}
    return recent, user, kinds


def _assert_nothing_lost(recent: RecentItems, user: str) -> None:
    got = {r.item: r.weight for r in recent.get(user)}
    expected_items = {f"w{w}-{i}" for w in range(WRITERS) for i in range(EVENTS)} | {"shared"}
    assert set(got) == expected_items, f"lost: {sorted(expected_items - set(got))}"
    assert all(got[f"w{w}-{i}"] == 1.0 for w in range(WRITERS) for i in range(EVENTS))  # view weighs 1
    assert got["shared"] == 3.0 * WRITERS * EVENTS  # every writer's every click, summed
    assert sum(got.values()) == WRITERS * EVENTS * (1.0 + 3.0)


def test_concurrent_writers_of_one_user_lose_nothing_on_redis(tmp_path, monkeypatch):
    require_service("Redis", 6379)
    monkeypatch.setenv("SKIFF_REDIS", "127.0.0.1:6379")  # the spawned writers inherit it
    recent, user, kinds = _race(tmp_path, redis=True)
    assert kinds == {"redis"}
    _assert_nothing_lost(recent, user)


def test_concurrent_writers_of_one_user_lose_nothing_on_sqlite(tmp_path):
    recent, user, kinds = _race(tmp_path, redis=False)
    assert kinds == {"file"}
    _assert_nothing_lost(recent, user)
