import json

import pytest
import yaml

from skiff.cli import main
from skiff.config import load_settings
from skiff.errors import ConfigError, ConflictError, SpecError
from skiff.spec import dump_spec, load_spec, parse_spec
from skiff.storage import Store

SPEC = {
    "name": "churn",
    "entity_key": "customer_id",
    "event_timestamp": "ts",
    "target": "churn",
    "problem_type": "binary",
    "sources": [{"type": "file", "path": "data/churn.csv"}, {"type": "sql", "url_env": "DB", "table": "t"}],
    "columns": {
        "customer_id": {"type": "string", "required": True, "unique": True},
        "ts": {"type": "datetime"},
        "tenure": {"type": "integer", "min": 0, "max": 120},
        "charges": {"type": "float", "missing": "impute", "impute": "median", "sentinels": [-200]},
        "email": {"type": "string", "feature": False},
        "churn": {"type": "boolean"},
    },
}


def test_settings_precedence(skiff_env, monkeypatch):
    monkeypatch.delenv("SKIFF_ROOT")
    (skiff_env / "skiff.yaml").write_text("root: /from/file\nmax_threads: 2\n")
    s = load_settings()
    assert s.root == "/from/file" and s.max_threads == 2 and s.lake_uri == "/from/file/lake"
    monkeypatch.setenv("SKIFF_MAX_THREADS", "3")
    assert load_settings().max_threads == 3
    assert load_settings(max_threads=4).max_threads == 4


def test_settings_reject_unknown_keys(skiff_env, monkeypatch):
    monkeypatch.delenv("SKIFF_ROOT")
    (skiff_env / "skiff.yaml").write_text("roots: typo\n")
    with pytest.raises(ConfigError, match="roots"):
        load_settings()


def test_spec_round_trip_and_derived_columns(tmp_path):
    spec = parse_spec(SPEC)
    assert spec.feature_columns == ["tenure", "charges"]
    path = tmp_path / "churn.yaml"
    path.write_text(dump_spec(spec))
    assert load_spec(path) == spec
    assert yaml.safe_load(path.read_text())["sources"][0]["type"] == "file"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"target": "nope"}, "target column 'nope'"),
        ({"entity_key": "nope"}, "entity_key column 'nope'"),
        ({"problem_type": None}, "needs problem_type"),
        ({"event_timestamp": "tenure"}, "must have type datetime"),
        ({"problem_type": "regression"}, "regression needs a numeric target"),
        ({"name": "bad name!"}, "name"),
    ],
)
def test_spec_errors_name_the_field(change, message):
    with pytest.raises(SpecError, match=message):
        parse_spec({**SPEC, **change})


def test_spec_column_rule_errors():
    bad = json.loads(json.dumps(SPEC))
    bad["columns"]["tenure"] = {"type": "integer", "min": 5, "max": 1}
    with pytest.raises(SpecError, match=r"columns\.tenure.*greater than max"):
        parse_spec(bad)


def test_atomic_dir_publishes_whole_or_nothing(tmp_path):
    store = Store(str(tmp_path / "root"))
    with pytest.raises(RuntimeError), store.atomic_dir("models", "m", "1") as d:
        (d / "model.bin").write_bytes(b"half")
        raise RuntimeError("crash mid-write")
    assert not store.exists("models", "m", "1")
    assert store.listdir("models", "m") == []  # no staging leftovers
    with store.atomic_dir("models", "m", "1") as d:
        (d / "model.bin").write_bytes(b"whole")
    assert store.read_bytes("models", "m", "1", "model.bin") == b"whole"
    assert store.is_committed("models", "m", "1")
    with pytest.raises(ConflictError), store.atomic_dir("models", "m", "1"):
        pass


def test_remote_store_writes_marker_last():
    store = Store("memory://skiff-test-root")
    with store.atomic_dir("v1") as d:
        (d / "a" / "b.txt").parent.mkdir()
        (d / "a" / "b.txt").write_text("x")
    assert store.read_text("v1", "a", "b.txt") == "x"
    assert store.is_committed("v1")
    store.delete("v1")


def test_cli_version_and_bad_settings_file(skiff_env, capsys):
    assert main(["--version"]) == 0
    assert "skiff" in capsys.readouterr().out
    assert main(["--config", "missing.yaml", "config"]) == 2
    assert "settings file not found" in capsys.readouterr().err
    assert main(["--root", "s3://bucket/prefix", "config", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["registry_uri"] == "s3://bucket/prefix/models"
    assert main(["config", "--bogus"]) == 2
    assert "No such option" in capsys.readouterr().err


def test_datetime_bounds_take_iso_dates():
    spec = parse_spec({**SPEC, "columns": {**SPEC["columns"], "ts": {"type": "datetime", "min": "2020-01-01",
                                                                       "max": "2030-01-01T00:00:00+01:00"}}})
    assert spec.columns["ts"].min == 1577836800.0
    assert spec.columns["ts"].max == 1893452400.0
    with pytest.raises(SpecError, match="not an ISO date"):
        parse_spec({**SPEC, "columns": {**SPEC["columns"], "ts": {"type": "datetime", "min": "yesterday"}}})
    with pytest.raises(SpecError, match="must be a number"):
        parse_spec({**SPEC, "columns": {**SPEC["columns"], "tenure": {"type": "integer", "min": "zero"}}})


@pytest.mark.parametrize("ktype", ["float", "boolean", "datetime"])
def test_spec_refuses_an_unsuitable_key_type_when_loaded(tmp_path, ktype):
    path = tmp_path / "s.yaml"
    columns = {**SPEC["columns"], "customer_id": {"type": ktype}}
    path.write_text(yaml.safe_dump({**SPEC, "columns": columns, "event_timestamp": None}))
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert err.value.exit_code == 2
    assert f"entity_key column 'customer_id' has type {ktype}; a key must be string, category or integer" \
        in err.value.message


def test_a_key_is_a_feature_only_when_the_spec_says_feature_true():
    spec = parse_spec(SPEC)
    assert spec.feature_columns == ["tenure", "charges"]
    keyed = parse_spec({**SPEC, "columns": {**SPEC["columns"], "customer_id": {"type": "string", "feature": True}}})
    assert keyed.feature_columns == ["customer_id", "tenure", "charges"]
    again = parse_spec(yaml.safe_load(dump_spec(keyed)))  # an explicit true survives the round trip
    assert again.feature_columns == keyed.feature_columns


def test_generated_key_spec_round_trip_fingerprint_and_comments():
    from skiff.spec import spec_fingerprint

    raw = {"name": "air", "entity_key": {"generated": "row"}, "min_accepted_fraction": 0.8,
           "columns": {"CO": {"type": "float", "sentinels": [-200]}, "room": {"type": "string"}}}
    spec = parse_spec(raw)
    assert spec.key_columns == ["row_id"] and list(spec.columns)[0] == "row_id"
    assert spec.columns["row_id"].type == "string" and spec.feature_columns == ["CO", "room"]
    text = dump_spec(spec, {"CO": "-200 appears in 17% of rows,\nnever otherwise below 0.1", "room": "odd"})
    assert "  # -200 appears in 17% of rows, never otherwise below 0.1\n  CO:\n" in text
    assert "  # odd\n  room:\n" in text
    assert "row_id" not in text  # implied by entity_key
    back = parse_spec(yaml.safe_load(text))
    assert back == spec and spec_fingerprint(back) == spec_fingerprint(spec)
    content = parse_spec({**raw, "entity_key": {"generated": "content"}})
    assert spec_fingerprint(content) != spec_fingerprint(spec)
    with pytest.raises(SpecError, match="never a feature"):
        parse_spec({**raw, "columns": {**raw["columns"], "row_id": {"type": "string", "feature": True}}})
    with pytest.raises(SpecError, match="min_accepted_fraction"):
        parse_spec({**raw, "min_accepted_fraction": 1.5})
