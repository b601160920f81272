"""Feast features from a spec: real Feast, a SQLite online store, point-in-time retrieval."""

import datetime as dt
import importlib.util
import json
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.features.logic import (
    apply_definitions,
    build_definitions,
    build_offline_source,
    derived_udf_source,
    materialize,
    render_definitions,
    training_frame,
)
from skiff.errors import ConfigError, NotFoundError, SpecError
from skiff.feature_store import (
    DEFAULT_FEATURE_STORE_YAML,
    ensure_feature_repo,
    feature_service_name,
    feature_sources,
    online_features,
    open_store,
    open_store_from_settings,
)
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
    service, defs = apply_definitions(store, spec, sources.root)
    materialize(store, dt.datetime(2026, 6, 1, tzinfo=dt.UTC))
    return {"store": store, "spec": spec, "service": service, "offline": offline, "parts": parts, "defs": defs,
            "root": root, "sources": sources}


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
    assert list(rows.account_id) == ["a", "b", "c", "a", "d"]  # Feast returns the join key with each row


def test_online_features_latest_values_and_unknown_key(feast_world):
    w = feast_world
    out = online_features(w["store"], w["service"], [{"account_id": "a"}, {"account_id": "nobody"}])
    assert out["usage"] == [99.0, None]
    assert out["plan"] == ["pro", None]
    assert out["usage_per_seat"][0] == pytest.approx(99.0 / 10)
    assert out["account_id"] == ["a", "nobody"]


def test_the_store_opened_from_settings_serves_what_the_step_materialized(feast_world):
    from skiff.config import load_settings

    w = feast_world
    settings = load_settings(root=str(w["root"]), feature_repo=str(REPO / "feature_repo"))
    lake = Lake.from_settings(settings)
    assert feature_sources(lake).uri() == w["sources"].uri()  # <lake>/features, one place
    store = open_store_from_settings(settings)
    assert store.get_feature_service(w["service"]).name == feature_service_name(w["spec"])
    assert online_features(store, w["service"], [{"account_id": "d"}])["usage"] == [3.0]


def test_the_registry_holds_fixed_udf_text_and_the_spec_literal(feast_world):
    # Feast 0.67 rebuilds an on-demand UDF by exec'ing its stored source text: that text must be our
    # fixed template plus one literal of checked names and expressions, nothing else from the spec
    w = feast_world
    odfv = w["store"].get_on_demand_feature_view("accounts_derived")
    text = odfv.feature_transformation.udf_string
    assert text == derived_udf_source((("usage_per_seat", "usage / (seats + 1)", "float"),))
    assert "eval(" not in text and "exec(" not in text


def test_derived_udf_source_refuses_what_the_policy_refuses():
    with pytest.raises(SpecError, match="derived feature name"):
        derived_udf_source((("x\nimport os", "a", "float"),))
    with pytest.raises(SpecError, match="an expression may only use"):
        derived_udf_source((("x", "__import__('os')", "float"),))


def _import_generated(path, source_dir, monkeypatch):
    monkeypatch.setenv("SKIFF_FEATURE_SOURCE_DIR", source_dir)
    name = "skiff_test_generated_defs"
    mod_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(mod_spec)
    monkeypatch.setitem(sys.modules, name, module)
    mod_spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("spec_raw", [SPEC, {**SPEC, "derived": []},
                                      {**SPEC, "entity_key": ["account_id", "seats"], "derived": []}])
def test_generated_file_gives_the_directly_built_objects(tmp_path, monkeypatch, spec_raw):
    spec = parse_spec(spec_raw)
    path = tmp_path / "defs.py"
    path.write_text(render_definitions(spec))
    module = _import_generated(path, "/lake/features", monkeypatch)
    direct = build_definitions(spec, "/lake/features")
    assert [getattr(module, f"entity_{i}") for i in range(len(spec.key_columns))] == direct.entities
    assert module.source == direct.source
    assert module.feature_view == direct.feature_view
    assert getattr(module, "derived_view", None) == direct.derived_view
    assert module.feature_service == direct.feature_service
    assert (direct.derived_view is None) == (not spec.derived)


def test_a_key_column_that_is_a_feature_is_a_join_key_not_a_view_field():
    cols = {**SPEC["columns"], "account_id": {"type": "string", "feature": True}}
    spec = parse_spec({**SPEC, "columns": cols})
    assert "account_id" in spec.feature_columns  # `feature: true` makes a key column a model input
    view = build_definitions(spec, "/f").feature_view
    assert "account_id" not in [f.name for f in view.schema]
    assert view.entities == ["account_id"]
    assert [f.name for f in view.features] == ["plan", "usage", "seats"]


def test_an_added_event_time_may_not_shadow_a_column():
    raw = {**SPEC, "event_timestamp": None,
           "columns": {**SPEC["columns"], "event_timestamp": {"type": "datetime"}}}
    with pytest.raises(SpecError, match="event_timestamp"):
        build_definitions(parse_spec(raw), "/f")


def test_the_feature_repo_is_created_on_first_use(tmp_path):
    repo = tmp_path / "proj" / "feature_repo"
    path = ensure_feature_repo(repo)
    assert path.read_text() == DEFAULT_FEATURE_STORE_YAML
    path.write_text(DEFAULT_FEATURE_STORE_YAML + "# mine\n")
    assert ensure_feature_repo(repo).read_text().endswith("# mine\n")  # never overwritten
    with pytest.raises(ConfigError, match="feature_store.redis.yaml"):
        ensure_feature_repo(repo, "feature_store.redis.yaml")  # a service address is never made up


def test_the_embedded_default_is_the_source_trees_config():
    assert (REPO / "feature_repo" / "feature_store.yaml").read_text() == DEFAULT_FEATURE_STORE_YAML


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


def test_online_lookup_keys_are_parsed_per_the_specs_key_columns(tmp_path):
    from components.features.logic import definitions_file, entity_rows, write_definitions
    from skiff.errors import UsageError

    columns = {"id": {"type": "integer"}, "site": {"type": "string"}, "v": {"type": "float"}}
    by_id = parse_spec({"name": "m", "entity_key": "id", "columns": columns})
    assert entity_rows(by_id, ["7", "-3", '{"id": 9}']) == [{"id": 7}, {"id": -3}, {"id": 9}]
    with pytest.raises(UsageError, match="integer column"):
        entity_rows(by_id, ["seven"])
    with pytest.raises(UsageError, match="not a JSON object"):
        entity_rows(by_id, ["{oops"])
    by_site = parse_spec({"name": "m", "entity_key": "site", "columns": columns})
    assert entity_rows(by_site, ["007"]) == [{"site": "007"}]  # a string key stays text
    composite = parse_spec({"name": "m", "entity_key": ["id", "site"], "columns": columns})
    with pytest.raises(UsageError, match="composite key"):
        entity_rows(composite, ["7"])
    assert entity_rows(composite, ['{"id": 7, "site": "a"}']) == [{"id": 7, "site": "a"}]

    path = definitions_file(by_id, tmp_path / "repo")
    assert path == tmp_path / "repo" / "m.py"
    assert write_definitions(by_id, path).read_text() == render_definitions(by_id)
