"""The online store is pluggable: the same definitions materialized into the real Redis on this machine."""

import datetime as dt
import uuid

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.features.logic import run_features
from skiff.feature_store import feature_sources, online_features, open_store
from skiff.lake import Lake
from skiff.spec import parse_spec
from skiff.storage import Store
from tests.conftest import REPO, require_service

pytestmark = pytest.mark.integration


def test_materialize_into_redis_and_read_back(tmp_path, monkeypatch):
    require_service("Redis", 6379)
    monkeypatch.setenv("SKIFF_REDIS", "127.0.0.1:6379")
    tag = uuid.uuid4().hex[:8]
    spec = parse_spec({
        "name": "devices",
        "entity_key": "device_id",
        "columns": {"device_id": {"type": "string"}, "temp": {"type": "float"}, "zone": {"type": "category"}},
    })
    lake = Lake(Store(str(tmp_path / "lake")))
    ids = [f"{tag}-{i}" for i in range(3)]
    with lake.publish_run("devices", "r1", "2026-11-01") as d:
        pq.write_table(pa.table({"device_id": ids, "temp": [20.5, 21.0, 19.5], "zone": ["a", "b", "a"]}),
                       d / "part-00000.parquet")
        (d / "_manifest.json").write_text('{"finished_at": "2026-11-01T08:00:00+00:00"}')
    result = run_features(spec, lake, REPO / "feature_repo", tmp_path / "feast", "feature_store.redis.yaml",
                          training_out=tmp_path / "train.parquet")
    assert result.online_store == "RedisOnlineStoreConfig"
    # the event time was taken from the run's ingest time, since the spec names none
    train = pd.read_parquet(tmp_path / "train.parquet")
    assert set(train.device_id) == set(ids)
    assert (pd.to_datetime(train.event_timestamp, utc=True) == pd.Timestamp("2026-11-01T08:00:00Z")).all()
    store = open_store(REPO / "feature_repo", tmp_path / "feast", feature_sources(lake).uri(),
                       "feature_store.redis.yaml")
    out = online_features(store, result.feature_service, [{"device_id": ids[1]}, {"device_id": "missing"}])
    assert out["temp"] == [21.0, None] and out["zone"] == ["b", None]
    assert dt.datetime.fromisoformat(result.materialized_until) <= dt.datetime.now(dt.UTC)
