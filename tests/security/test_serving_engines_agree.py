"""Property: for generated requests — valid, boundary and hostile (unseen categories, NaN/Infinity, huge
integers, wrong types, extra or missing fields, odd shapes) — the ONNX and scikit-learn engines answer
with the same status, and on 200 with the same probabilities (1e-6), on V1 and V2."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
