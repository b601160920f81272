"""Online = offline: the rows of an ingested export, sent to the model server exactly as the file spells
them (decimal commas, Yes/No, blanks, a sentinel, stray spaces), get the answers the pipeline's model
gives on the lake's typed rows; a value ingestion quarantines is a 400 naming the column and the rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from components.ingest.logic import ingest
from components.register.logic import input_rules, input_schema
from components.train.preparation import MISSING, FramePreparer
from skiff.config import load_settings
from skiff.lake import Lake
from skiff.onnx_export import export_onnx
from skiff.registry import ModelRegistry
from skiff.spec import parse_spec
from skiff.storage import Store

pytestmark = pytest.mark.slow

FEATURES = ["kwh", "seats", "paper", "site"]
SPEC = {
    "name": "meters", "entity_key": "meter_id", "target": "faulty", "problem_type": "binary",
    "columns": {
        "meter_id": {"type": "integer"},
        "kwh": {"type": "float", "sentinels": [-200], "missing": "impute", "impute": "median"},
        "seats": {"type": "integer", "min": 0},
        "paper": {"type": "boolean", "true_values": ["Yes"], "false_values": ["No"]},
        "site": {"type": "category", "allowed": ["north", "south", "east"]},
        "faulty": {"type": "boolean", "missing": "reject"},
    },
}


def _csv(n: int = 120) -> str:
    rng = np.random.default_rng(4)
    lines = ["meter_id;kwh;seats;paper;site;faulty"]
    for i in range(n):
        kwh = rng.gamma(2, 3)
        spelled = [f"{kwh:.2f}".replace(".", ","), f" {kwh:.2f} ", " ", "-200", f"1.{int(kwh * 10):03d},5"][i % 5]
        seats = int(rng.integers(1, 9))
        paper = ["Yes", "No", "yes", "NO"][i % 4]
        site = ["north", " south", "east ", "north"][i % 4]
        faulty = "Yes" if kwh > 6 else "No"
        lines.append(f"{i};{spelled};{seats};{paper};{site};{faulty}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("online")
    src = root / "meters.csv"
    src.write_text(_csv())
    spec = parse_spec({**SPEC, "sources": [{"type": "file", "path": str(src)}]})
    lake = Lake(Store(str(root / "lake")))
    res = ingest(spec, lake, ingest_date="2026-01-01", run_id="r1")
    assert res.counts["quarantined"] == 0, res.manifest
    typed = pd.concat([pq.read_table(p).to_pandas() for p in sorted((root / "lake").rglob("part-*.parquet"))])
    typed = typed.sort_values("meter_id").reset_index(drop=True)
    prep = FramePreparer(numeric=["kwh", "seats"], categorical=["paper", "site"])
    cat = Pipeline([("impute", SimpleImputer(strategy="most_frequent", missing_values=MISSING)),
                    ("onehot", OneHotEncoder(handle_unknown="ignore"))])
    num = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    ct = ColumnTransformer([("num", num, ["kwh", "seats"]), ("cat", cat, ["paper", "site"])])
    pipe = Pipeline([("prepare", prep), ("pre", ct), ("model", LogisticRegression())])
    pipe.fit(typed[FEATURES], typed["faulty"])
    schema = input_schema(spec, FEATURES)
    info = export_onnx(pipe, typed[FEATURES], root / "model.onnx", features=FEATURES, input_schema=schema)
    assert info["exact"], info
    settings = load_settings(root=str(root))
    ModelRegistry.from_settings(settings).register(
        "meters", pipe, {"features": FEATURES, "input_schema": schema,
                         "input_rules": input_rules(spec, FEATURES, typed), "problem_type": "binary",
                         "classes": [False, True], "extra": {"onnx": info}},
        files={"model.onnx": root / "model.onnx"})
    raw = [line.split(";") for line in src.read_text().splitlines()[1:]]
    raw = [dict(zip(["meter_id", *FEATURES], r[:5], strict=True)) for r in raw]
    raw_by_id = {int(r.pop("meter_id")): r for r in raw}
    return {"settings": settings, "pipe": pipe, "typed": typed,
            "raw": [raw_by_id[i] for i in typed["meter_id"]]}


def _client(world, engine):
    from fastapi.testclient import TestClient

    from serving.runtime.predictor import SkiffPredictor
    from serving.runtime.server import make_app

    p = SkiffPredictor("meters", settings=world["settings"], engine=engine)
    assert p.load(), p.load_error
    return TestClient(make_app([p])[1])


def _v1(client, rows):
    r = client.post("/v1/models/meters:predict", json={"instances": rows})
    assert r.status_code == 200, r.text
    return np.array([x["probability"] for x in r.json()["predictions"]])


def _v2(client, rows):
    inputs = [{"name": f, "datatype": "BYTES", "shape": [len(rows)], "data": [r[f] for r in rows]} for f in FEATURES]
    r = client.post("/v2/models/meters/infer", json={"inputs": inputs})
    assert r.status_code == 200, r.text
    return np.array(next(o for o in r.json()["outputs"] if o["name"] == "probability")["data"])


@pytest.mark.parametrize("engine", ["sklearn", "auto"])
def test_raw_export_rows_get_the_answers_of_the_lakes_typed_rows(world, engine):
    client = _client(world, engine)
    typed_rows = [{f: (v.item() if hasattr(v, "item") else v) for f, v in r.items()}
                  for r in world["typed"][FEATURES].to_dict("records")]
    offline = world["pipe"].predict_proba(world["typed"][FEATURES])[:, 1]
    raw_v1, raw_v2, typed_v1 = _v1(client, world["raw"]), _v2(client, world["raw"]), _v1(client, typed_rows)
    np.testing.assert_allclose(raw_v1, typed_v1, rtol=0, atol=1e-9)
    np.testing.assert_allclose(raw_v2, typed_v1, rtol=0, atol=1e-9)
    # the scikit-learn engine is the pipeline itself; onnxruntime is within its recorded exactness
    np.testing.assert_allclose(raw_v1, offline, rtol=0, atol=1e-9 if engine == "sklearn" else 1e-5)


@pytest.mark.parametrize(("value", "field", "rule"), [
    ({"site": "west"}, "site", "not_allowed"),
    ({"seats": "-1"}, "seats", "below_min"),
    ({"paper": "maybe"}, "paper", "not_a_boolean"),
    ({"kwh": "12 kWh"}, "kwh", "not_a_number"),
])
@pytest.mark.parametrize("engine", ["sklearn", "auto"])
def test_what_ingestion_quarantines_is_a_400_naming_the_rule(world, engine, value, field, rule):
    client = _client(world, engine)
    row = {**world["raw"][0], **value}
    for r in (client.post("/v1/models/meters:predict", json={"instances": [row]}),
              client.post("/v2/models/meters/infer", json={"inputs": [
                  {"name": f, "datatype": "BYTES", "shape": [1], "data": [row[f]]} for f in FEATURES]})):
        assert r.status_code == 400, r.text
        body = r.json()
        assert body["detail"]["field"] == field and body["detail"]["rule"] == rule, body
        assert field in body["message"]


def test_csv_is_dirty_in_the_ways_exports_are():
    text = _csv(10)
    assert all(s in text for s in (",", "; ;", ";-200;", ";Yes;", ";NO;", "; south;", "east ;", ".0"))


# -- one policy for non-finite and out-of-range numbers, on both protocols ----------------------------
def _post_v1(client, row_text: str):
    return client.post("/v1/models/meters:predict", content=f'{{"instances": [{row_text}]}}',
                       headers={"content-type": "application/json"})


def _post_v2(client, kwh: str, seats: str = "3", site_shape: str = "[1]"):
    inputs = [("kwh", "FP64", "[1]", kwh), ("seats", "INT64", "[1]", seats), ("paper", "BYTES", "[1]", '"Yes"'),
              ("site", "BYTES", site_shape, '"north"')]
    body = '{"inputs": [' + ",".join(f'{{"name": "{n}", "datatype": "{d}", "shape": {sh}, "data": [{v}]}}'
                                     for n, d, sh, v in inputs) + "]}"
    return client.post("/v2/models/meters/infer", content=body, headers={"content-type": "application/json"})


@pytest.mark.parametrize("engine", ["sklearn", "auto"])
def test_nan_is_missing_and_infinity_or_huge_numbers_are_a_400_on_v1_and_v2(world, engine):
    client = _client(world, engine)
    missing = _v1(client, [{"kwh": " ", "seats": "3", "paper": "Yes", "site": "north"}])  # imputed median
    r1 = _post_v1(client, '{"kwh": NaN, "seats": 3, "paper": "Yes", "site": "north"}')
    r2 = _post_v2(client, "NaN")
    assert r1.status_code == 200 and r2.status_code == 200, (r1.text, r2.text)
    assert r1.json()["predictions"][0]["probability"] == missing[0]
    assert next(o for o in r2.json()["outputs"] if o["name"] == "probability")["data"][0] == missing[0]
    for kwh, seats, field in (("Infinity", "3", "kwh"), ("-Infinity", "3", "kwh"), ("1e300", "3", "kwh"),
                              ("1e300", "null", "kwh"), ("2", "1" + "0" * 30, "seats")):
        for r in (_post_v1(client, f'{{"kwh": {kwh}, "seats": {seats}, "paper": "Yes", "site": "north"}}'),
                  _post_v2(client, kwh, seats)):
            assert r.status_code == 400, (kwh, seats, r.status_code, r.text)
            assert r.json()["detail"]["field"] == field, r.text


def test_huge_v2_shapes_are_a_json_400(world):
    client = _client(world, "auto")
    for shape in (f"[{2**70}]", f"[{2**70}, 4]", "[-1]"):
        r = _post_v2(client, "2", site_shape=shape)
        assert r.status_code == 400, r.text
        assert r.json()["detail"]["field"] == "site" and "shape" in r.json()["message"]
    r = client.post("/v2/models/meters/infer", json={"inputs": [
        {"name": "input", "datatype": "BYTES", "shape": [2**70, 4], "data": ["1", "2", "Yes", "north"]}]})
    assert r.status_code == 400 and r.json()["error"] == "InvalidInput", r.text


def test_model_server_has_its_own_body_cap_with_a_json_413(world):
    from fastapi.testclient import TestClient

    from serving.runtime.predictor import SkiffPredictor
    from serving.runtime.server import make_app

    p = SkiffPredictor("meters", settings=world["settings"])
    assert p.load()
    client = TestClient(make_app([p], max_body_bytes=4096)[1])
    rows = [world["raw"][0]] * 200
    r = client.post("/v1/models/meters:predict", json={"instances": rows})
    assert r.status_code == 413 and r.json()["detail"]["max_body_bytes"] == 4096, r.text
    assert client.post("/v1/models/meters:predict", json={"instances": rows[:5]}).status_code == 200
    assert load_settings().serve_max_body_bytes > 1024 * 1024  # above the REST API's 1 MiB default
