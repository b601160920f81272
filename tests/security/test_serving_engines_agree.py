"""Property: for generated requests — valid, boundary and hostile (unseen categories, NaN/Infinity, huge
integers, wrong types, extra or missing fields, odd shapes) — the ONNX and scikit-learn engines answer
with the same status, and on 200 with the same probabilities (1e-6), on V1 and V2; for tree models
(histogram gradient boosting and random forests, classification and regression, compiled in double
precision, missing values on the graph) with the same probabilities and values."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.base import clone

from tests.security.test_serving_online_offline import FEATURES, _client, world  # noqa: F401 - fixture

pytestmark = pytest.mark.slow

_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(min_value=-(10**40), max_value=10**40),
    st.sampled_from([0, -200, "-200", " ", "", "1,5", "1.234,5", " 3 ", "NaN", "Infinity", "1e400", "x"]),
)
_text = st.one_of(st.sampled_from(["north", "south", "east", " north", "west", "", "NA", "Yes", "No", "yes"]),
                  st.text(max_size=8))
_values = {"kwh": _numbers, "seats": _numbers, "paper": st.one_of(_text, st.booleans(), st.integers(-2, 2)),
           "site": _text}
_hostile = st.one_of(st.none(), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3),
                                                                                       st.integers(), max_size=1))
_row = st.fixed_dictionaries({f: st.one_of(_values[f], _hostile) for f in FEATURES},
                             optional={"extra": st.integers()})
_rows = st.lists(st.one_of(_row, _row.map(lambda r: {k: v for k, v in r.items() if k != "site"})),
                 min_size=1, max_size=4)


def _json(body) -> bytes:
    return json.dumps(body, allow_nan=True).encode()  # NaN / Infinity literals, as clients send them


def _answer(client, path: str, body: bytes):
    r = client.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code < 500, r.text
    return r.status_code, r.json()


def _probabilities(body) -> list[float]:
    if "predictions" in body:
        return [p["probability"] for p in body["predictions"]]
    return next(o for o in body["outputs"] if o["name"] == "probability")["data"]


@pytest.fixture(scope="module")
def engines(world):  # noqa: F811 - the fixture imported above
    return _client(world, "auto"), _client(world, "sklearn")


def _same(engines, path: str, body: bytes) -> None:
    (sa, a), (sb, b) = (_answer(c, path, body) for c in engines)
    assert sa == sb, (body[:300], a, b)
    if sa == 200:
        pa, pb = _probabilities(a), _probabilities(b)
        assert len(pa) == len(pb) and all(math.isclose(x, y, abs_tol=1e-6) for x, y in zip(pa, pb, strict=True))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=_rows)
def test_v1_engines_agree(engines, rows):
    _same(engines, "/v1/models/meters:predict", _json({"instances": rows}))


_shapes = st.one_of(st.just(None), st.lists(st.integers(min_value=-2, max_value=2**70), min_size=0, max_size=3))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(_row, min_size=1, max_size=4), shape=_shapes,
       datatype=st.sampled_from(["BYTES", "FP64", "INT64", "BOOL", "FP32", "STRING"]))
def test_v2_engines_agree(engines, rows, shape, datatype):
    inputs = []
    for f in FEATURES:
        data = [r.get(f) for r in rows]
        dt = {"kwh": "FP64", "seats": "INT64"}.get(f, "BYTES") if f != "kwh" else datatype
        inputs.append({"name": f, "datatype": dt, "shape": shape if (shape is not None and f == "site")
                       else [len(rows)], "data": data})
    _same(engines, "/v2/models/meters/infer", _json({"inputs": inputs}))


# -- tree models: the compiled engine's values equal scikit-learn's on every request ---------------------
TREE_MODELS = {"meters-hgb": "binary", "meters-rf": "binary", "kwh-hgb": "regression", "kwh-rf": "regression"}


@pytest.fixture(scope="module")
def tree_engines(world):  # noqa: F811 - the fixture imported above
    from fastapi.testclient import TestClient
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )

    from serving.runtime.predictor import SkiffPredictor
    from serving.runtime.server import make_app
    from skiff.onnx_export import export_onnx
    from skiff.registry import ModelRegistry

    typed, base = world["typed"], world["pipe"]
    registry = ModelRegistry.from_settings(world["settings"])
    meta = registry.get("meters").metadata
    estimators = {"meters-hgb": HistGradientBoostingClassifier(max_iter=30, random_state=0),
                  "meters-rf": RandomForestClassifier(n_estimators=25, min_samples_leaf=2, random_state=0),
                  "kwh-hgb": HistGradientBoostingRegressor(max_iter=30, random_state=0),
                  "kwh-rf": RandomForestRegressor(n_estimators=25, random_state=0)}
    clients = {}
    for name, est in estimators.items():
        pipe = clone(base).set_params(model=est)
        target = typed["faulty"] if TREE_MODELS[name] == "binary" else typed["kwh"].fillna(0) * 40 + typed["seats"]
        pipe.fit(typed[FEATURES], target)
        dest = world["settings"].root + f"/{name}.onnx"
        info = export_onnx(pipe, typed[FEATURES][:40], dest, features=FEATURES, input_schema=meta.input_schema,
                           reference=typed[FEATURES])
        assert info["exact"] and info["compiler"] == "skiff-onnx-double", info["reason"]
        registry.register(name, pipe, {"features": FEATURES, "input_schema": meta.input_schema,
                                       "input_rules": meta.input_rules, "problem_type": TREE_MODELS[name],
                                       **({"classes": [False, True]} if TREE_MODELS[name] == "binary" else {}),
                                       "extra": {"onnx": info}}, files={"model.onnx": dest})
        pair = []
        for engine in ("auto", "sklearn"):
            p = SkiffPredictor(name, settings=world["settings"], engine=engine)
            assert p.load(), p.load_error
            assert p.runtime.engine == ("onnxruntime" if engine == "auto" else "sklearn")
            pair.append(TestClient(make_app([p])[1]))
        clients[name] = pair
    return clients


def _numbers_of(body) -> list[float]:
    if "predictions" in body:
        return [p["probability"] if isinstance(p, dict) else p for p in body["predictions"]]
    return next(o for o in body["outputs"] if o["name"] in ("probability", "value"))["data"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=_rows, name=st.sampled_from(sorted(TREE_MODELS)))
def test_tree_models_give_the_same_values_on_both_engines(tree_engines, rows, name):
    (sa, a), (sb, b) = (_answer(c, f"/v1/models/{name}:predict", _json({"instances": rows}))
                        for c in tree_engines[name])
    assert sa == sb, (rows, a, b)
    if sa == 200:
        va, vb = _numbers_of(a), _numbers_of(b)
        assert len(va) == len(vb)
        for x, y in zip(va, vb, strict=True):  # 1e-6 absolute on probabilities, relative on values
            assert math.isclose(x, y, abs_tol=1e-6, rel_tol=1e-6), (rows, x, y)
