"""The model server records requests in the inference log: a real KServe ModelServer app (in-process,
Starlette's test client) serves registered versions — the compiled (ONNX) engine and the scikit-learn
pipeline — with logging at 50% sampling; the logged rows reconcile with the counters and with what was sent
and answered, personal data is hashed, a full queue drops and counts without holding requests back."""

from __future__ import annotations

import statistics
import threading
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from skiff.config import load_settings
from skiff.inference_log import log_partitions, log_store, read_log
from skiff.onnx_export import export_onnx
from skiff.registry import ModelRegistry

FEATURES = ["plan", "usage", "seats"]
SCHEMA = {"plan": "category", "usage": "float", "seats": "integer"}
KEY = "k" * 32
SPEC = {"name": "accounts", "entity_key": "account_id", "target": "churned", "problem_type": "binary",
        "columns": {"account_id": {"type": "string"}, "plan": {"type": "category", "pii": "hash"},
                    "usage": {"type": "float"}, "seats": {"type": "integer"}, "churned": {"type": "boolean"}}}


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"plan": rng.choice(["free", "pro", "team"], n), "usage": np.round(rng.gamma(2, 3, n), 3),
                         "seats": rng.integers(1, 20, n)})


def _pipe(est) -> Pipeline:
    return Pipeline([("ct", ColumnTransformer([("oh", OneHotEncoder(handle_unknown="ignore"), ["plan"]),
                                               ("sc", StandardScaler(), ["usage", "seats"])])), ("est", est)])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving-log")
    settings = load_settings(root=str(root), inference_log_sample_rate=0.5,
                             inference_log_sample_rates={"spend": 1.0})
    reg = ModelRegistry.from_settings(settings)
    train = _frame(300, 1)
    y = (train.usage / 3 + (train.plan == "pro") * 2) > 3
    pipe = _pipe(LogisticRegression()).fit(train, y)
    info = export_onnx(pipe, train[200:], root / "m.onnx", input_schema=SCHEMA, features=FEATURES)
    assert info["exact"], info
    reg.register("accounts", pipe, {"features": FEATURES, "input_schema": SCHEMA, "problem_type": "binary",
                                    "classes": [False, True], "threshold": 0.4, "extra": {"onnx": info},
                                    "dataset": {"name": "accounts", "spec": SPEC}},
                 files={"model.onnx": root / "m.onnx"})
    spend = _pipe(LinearRegression()).fit(train, train.usage * 2 + train.seats)
    reg.register("spend", spend, {"features": FEATURES, "input_schema": SCHEMA, "problem_type": "regression"})
    return {"root": root, "settings": settings, "pipe": pipe, "spend": spend}


def _serve(world, name, monkeypatch, **writer_kw):
    from fastapi.testclient import TestClient

    from serving.runtime.predictor import SkiffPredictor
    from serving.runtime.request_log import build_writer, export_metrics
    from serving.runtime.server import make_app

    monkeypatch.setenv("SKIFF_INFERENCE_LOG_KEY", KEY)
    p = SkiffPredictor(name, version=1, settings=world["settings"])
    assert p.load(), p.load_error
    writer = build_writer(world["settings"], [p.metadata])
    assert writer is not None
    for k, v in writer_kw.items():
        setattr(writer, k, v)
    p.request_log = writer
    export_metrics(writer)
    _, app = make_app([p])
    return p, writer, TestClient(app)


def _v2(rows: pd.DataFrame, rid: str | None) -> dict:
    body = {"inputs": [{"name": "plan", "datatype": "BYTES", "shape": [len(rows)], "data": rows.plan.tolist()},
                       {"name": "usage", "datatype": "FP64", "shape": [len(rows)], "data": rows.usage.tolist()},
                       {"name": "seats", "datatype": "INT64", "shape": [len(rows)], "data": rows.seats.tolist()}]}
    if rid:
        body["id"] = rid
    return body


def _rows(store, model):
    tables = [read_log(store, model, v, h) for v, h in log_partitions(store, model)]
    return [r for t in tables for r in t.to_pylist()]


def test_sampled_requests_are_logged_with_their_inputs_answers_version_latency_and_id(world, monkeypatch):
    import hashlib
    import hmac

    p, writer, client = _serve(world, "accounts", monkeypatch)
    assert p.runtime.engine == "onnxruntime"
    data = _frame(240, 7)
    sent, answers = {}, {}
    with client:
        for i in range(200):
            rows = data.iloc[i:i + 1 + i % 3]  # batches of 1 to 3 rows
            if i % 2:
                r = client.post("/v2/models/accounts/infer", json=_v2(rows, f"v2-{i}"))
                assert r.status_code == 200, r.text
                out = {o["name"]: o["data"] for o in r.json()["outputs"]}
                answers[f"v2-{i}"] = list(zip(out["label"], out["probability"], strict=True))
            else:
                r = client.post("/v1/models/accounts:predict", headers={"X-Request-Id": f"v1-{i}"},
                                json={"instances": rows.to_dict("records")})
                assert r.status_code == 200, r.text
                answers[f"v1-{i}"] = [(a["label"], a["probability"]) for a in r.json()["predictions"]]
            sent[f"{'v2' if i % 2 else 'v1'}-{i}"] = rows
        for i in range(20):  # refused: a text where a number goes, quoting a "secret" value
            r = client.post("/v1/models/accounts:predict", headers={"X-Request-Id": f"bad-{i}"},
                            json={"instances": [{"plan": "pro", "usage": "secret-value", "seats": 2}]})
            assert r.status_code == 400
        metrics = client.get("/metrics").text
        assert writer.flush(30)
    c = writer.counters.snapshot()["accounts"]
    assert c["offered"] == 220 and c["offered"] == c["unsampled"] + c["dropped"] + c["accepted"]
    assert c["dropped"] == 0 and c["accepted"] == c["logged"] and c["pending"] == 0
    assert 0.3 < c["accepted"] / 220 < 0.7  # 50% sampling
    store = log_store(world["settings"])
    logged = _rows(store, "accounts")
    ok = [r for r in logged if r["status"] == 200]
    bad = [r for r in logged if r["status"] == 400]
    assert len(logged) == c["rows_written"]
    assert len({r["request_id"] for r in logged}) == c["logged"]
    assert bad and all(r["error"] == "BadRequest: field 'usage'" and r["inputs"] == {"plan": None, "usage": None,
                                                                                    "seats": None} for r in bad)
    assert all(r["request_id"].startswith("bad-") for r in bad)
    for r in ok:  # every logged row is what was sent and answered, under the id the client knows
        row = sent[r["request_id"]].iloc[r["row"]]
        label, prob = answers[r["request_id"]][r["row"]]
        assert r["model"] == "accounts" and r["version"] == 1 and r["sampled"] and r["sample_rate"] == 0.5
        assert r["latency_ms"] > 0
        assert r["inputs"]["usage"] == row.usage and r["inputs"]["seats"] == row.seats
        assert r["inputs"]["plan"] == hmac.new(KEY.encode(), row.plan.encode(), hashlib.sha256).hexdigest()
        assert r["outputs"] == {"prediction": str(label), "probability": pytest.approx(prob, abs=1e-9)}
    files = list((world["root"] / "inference" / "accounts").rglob("*.parquet"))
    assert files and not any(b"secret-value" in f.read_bytes() or b"team" in f.read_bytes() for f in files)
    assert sum(pq.read_metadata(f).num_rows for f in files) == len(logged)
    assert 'skiff_inference_log_offered_total{model="accounts"} 220.0' in metrics
    assert f'skiff_inference_log_accepted_total{{model="accounts"}} {float(c["accepted"])}' in metrics
    writer.close()


def test_the_scikit_learn_engine_logs_regression_values_at_the_models_own_rate(world, monkeypatch):
    p, writer, client = _serve(world, "spend", monkeypatch)
    rows = _frame(5, 3)
    with client:
        r = client.post("/v2/models/spend/infer", json=_v2(rows, None))
        assert r.status_code == 200
    writer.close()
    values = next(o["data"] for o in r.json()["outputs"] if o["name"] == "value")
    logged = sorted(_rows(log_store(world["settings"]), "spend"), key=lambda x: x["row"])
    assert p.runtime.engine == "sklearn" and [x["sample_rate"] for x in logged] == [1.0] * 5
    assert [x["request_id"] for x in logged] == [r.json()["id"]] * 5  # the answer's id
    assert [x["outputs"]["prediction"] for x in logged] == pytest.approx(values)
    assert writer.counters.snapshot()["spend"]["logged"] == 1


def test_a_full_queue_drops_and_counts_without_holding_requests_back(world, monkeypatch):
    p, writer, client = _serve(world, "accounts", monkeypatch, queue_size=5)
    writer.models["accounts"] = type(writer.models["accounts"])(**{**writer.models["accounts"].__dict__,
                                                                 "sample_rate": 1.0})
    gate = threading.Event()
    real = writer.store.write_bytes

    def stuck(data, *parts):  # an object store that does not answer: the writer thread hangs
        gate.wait(60)
        return real(data, *parts)

    writer.store.write_bytes = stuck
    body = _v2(_frame(1, 5), "x")
    times = {"logged": [], "plain": []}
    with client:
        for i in range(300):
            for mode in ("logged", "plain"):
                p.request_log = writer if mode == "logged" else None
                t = time.perf_counter()
                assert client.post("/v2/models/accounts/infer", json=body).status_code == 200
                times[mode].append(time.perf_counter() - t)
            if i == 10:
                assert writer.flush(timeout=0.01) is False  # the writer is stuck on the store
    c = writer.counters.snapshot()["accounts"]
    gate.set()
    writer.close()
    assert c["offered"] == 300 and c["dropped"] >= 300 - 5 - 15 and c["accepted"] + c["dropped"] == 300
    # the requests did not wait for the stuck writer: as fast as without logging (generous on a busy machine)
    assert statistics.median(times["logged"]) < statistics.median(times["plain"]) * 1.5 + 0.002
    assert max(times["logged"]) < 1.0
    after = writer.counters.snapshot()["accounts"]
    assert after["logged"] == after["accepted"] and after["offered"] == after["unsampled"] + after["dropped"] + \
        after["accepted"]
