"""Feast features from a spec: real Feast, a SQLite online store, point-in-time retrieval."""

import datetime as dt
import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.features.logic import (
    apply_definitions,
    build_offline_source,
    feature_service_name,
    materialize,
    online_features,
    open_store,
    render_definitions,
    training_frame,
)
from skiff.errors import NotFoundError
from skiff.lake import Lake
from skiff.spec import load_spec, parse_spec
from skiff.storage import Store
from tests.conftest import REPO

SPEC = {
    "name": "accounts",
    "entity_key": "account_id",
    "event_timestamp": "ts",
    "target": "churned",
    "problem_type": "binary",
    "columns": {
        "account_id": {"type": "string"},
        "ts": {"type": "datetime"},
        "plan": {"type": "category"},
        "usage": {"type": "float"},
        "seats": {"type": "integer"},
        "churned": {"type": "boolean"},
    },
    "derived": [{"name": "usage_per_seat", "expr": "usage / (seats + 1)"}],
}


def _publish(lake: Lake, run_id: str, date: str, df: pd.DataFrame) -> None:
    with lake.publish_run("accounts", run_id, date) as d:
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), d / "part-00000.parquet")
        (d / "_manifest.json").write_text(json.dumps({"finished_at": f"{date}T12:00:00+00:00"}))


@pytest.fixture(scope="module")
def feast_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("feast")
    lake = Lake(Store(str(root / "lake")))
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    day1 = pd.DataFrame({
        "account_id": ["a", "b", "c"], "ts": [t0, t0, t0], "plan": ["pro", "free", "pro"],
        "usage": [10.0, 1.0, 7.0], "seats": [4, 1, 2], "churned": [False, True, False],
    })
    # account a changes later: its later usage must not leak into the label at t0
    day2 = pd.DataFrame({
        "account_id": ["a", "d"], "ts": [t0 + pd.Timedelta(days=30)] * 2, "plan": ["pro", "free"],
        "usage": [99.0, 3.0], "seats": [9, 1], "churned": [True, False],
    })
    _publish(lake, "r1", "2026-01-01", day1)
    _publish(lake, "r2", "2026-01-31", day2)
    spec = parse_spec(SPEC)
    sources = Store(str(root / "lake" / "features"))
    offline, parts = build_offline_source(lake, spec, sources)
    store = open_store(REPO / "feature_repo", root / "feast", sources.root)
    service, defs = apply_definitions(store, spec, root / "defs")
    materialize(store, dt.datetime(2026, 6, 1, tzinfo=dt.UTC))
    return {"store": store, "spec": spec, "service": service, "offline": offline, "parts": parts, "defs": defs}


def test_offline_source_consolidates_runs(feast_world):
    assert feast_world["parts"] == ["2026-01-01", "2026-01-31"]
    assert len(feast_world["offline"]) == 5


def test_point_in_time_training_rows(feast_world):
    w = feast_world
    labels = w["offline"][["account_id", "ts", "churned"]]
    rows = training_frame(w["store"], w["spec"], w["service"], labels)
    first_a = rows[(rows.account_id == "a")].iloc[0]
    later_a = rows[(rows.account_id == "a")].iloc[1]
    assert first_a["usage"] == 10.0 and later_a["usage"] == 99.0  # no leakage of the later value
    assert first_a["usage_per_seat"] == pytest.approx(10.0 / 5)
    assert list(rows.churned) == list(rows.sort_values(["ts", "account_id"]).churned)


def test_online_features_latest_values_and_unknown_key(feast_world):
    w = feast_world
    out = online_features(w["store"], w["service"], [{"account_id": "a"}, {"account_id": "nobody"}])
    assert out["usage"] == [99.0, None]
    assert out["plan"] == ["pro", None]
    assert out["usage_per_seat"][0] == pytest.approx(99.0 / 10)


def test_feature_service_name_changes_with_features():
    spec = parse_spec(SPEC)
    other = parse_spec({**SPEC, "derived": []})
    assert feature_service_name(spec) == feature_service_name(parse_spec(SPEC))
    assert feature_service_name(spec) != feature_service_name(other)


def test_no_partitions_is_a_clear_error(tmp_path):
    with pytest.raises(NotFoundError, match="skiff ingest"):
        build_offline_source(Lake(Store(str(tmp_path))), parse_spec(SPEC), Store(str(tmp_path / "f")))


def test_repo_definitions_in_step_with_example_spec():
    spec_file = REPO / "examples" / "churn.yaml"
    assert (REPO / "feature_repo" / "churn.py").read_text() == render_definitions(load_spec(spec_file))
