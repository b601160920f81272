"""The model server end to end: a tiny real pipeline registered, served by KServe's ModelServer on 127.0.0.1.

A subprocess (``python -m skiff serve``) answers V1, V2 and a third-party V2 client; in-process servers
(the same app, via Starlette's test client) cover the engines, other problem types and the transformer
over HTTP. The Feast world is real: SQLite online store, and Redis where it runs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import socket
import uuid
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from skiff.config import load_settings
from skiff.errors import NotFoundError, SkiffError
from skiff.onnx_export import export_onnx
from skiff.registry import ModelRegistry
from skiff.spec import parse_spec
from tests.conftest import REPO, require_service

pytestmark = pytest.mark.integration

FEATURES = ["plan", "usage", "seats", "annual"]
SCHEMA = {"plan": "category", "usage": "float", "seats": "integer", "annual": "boolean"}
THRESHOLD = 0.35
SPEC = {
    "name": "accounts",
    "entity_key": "account_id",
    "event_timestamp": "ts",
    "target": "churned",
    "problem_type": "binary",
    "columns": {"account_id": {"type": "string"}, "ts": {"type": "datetime"}, **{f: {"type": t} for f, t in SCHEMA.items()},
                "churned": {"type": "boolean"}},
}


# -- the world ---------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"plan": rng.choice(["free", "pro", "team"], n), "usage": np.round(rng.gamma(2, 3, n), 3),
                         "seats": rng.integers(1, 20, n), "annual": rng.random(n) < 0.4})


def pipeline(est, categorical=("plan",), numeric=("usage", "seats", "annual")) -> Pipeline:
    ct = ColumnTransformer([("oh", OneHotEncoder(handle_unknown="ignore"), list(categorical)),
                            ("sc", StandardScaler(), list(numeric))])
    return Pipeline([("ct", ct), ("est", est)])


def register(reg: ModelRegistry, name: str, pipe, holdout: pd.DataFrame, tmp, compilers=None, **meta):
    kw = {} if compilers is None else {"compilers": compilers}
    info = export_onnx(pipe, holdout, tmp / f"{name}.onnx", input_schema=SCHEMA, features=FEATURES, **kw)
    files = {"model.onnx": tmp / f"{name}.onnx"} if info["exact"] else {}
    return reg.register(name, pipe, {"features": FEATURES, "input_schema": SCHEMA, "extra": {"onnx": info}, **meta},
                        files=files), info


def feast_world(root, yaml_name: str = "feature_store.yaml", tag: str = ""):
    """Accounts in the lake, materialized into the online store; returns the store and the latest rows."""
    from components.features.logic import apply_definitions, build_offline_source, materialize, open_store
    from skiff.lake import Lake
    from skiff.storage import Store

    lake = Lake(Store(str(root / "lake")))
    df = frame(40, seed=7)
    df.insert(0, "account_id", [f"{tag}acct-{i}" for i in range(len(df))])
    df["ts"] = pd.Timestamp("2026-01-01", tz="UTC")
    df["churned"] = df.usage > 6
    with lake.publish_run("accounts", "r1", "2026-01-01") as d:
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), d / "part-00000.parquet")
        (d / "_manifest.json").write_text('{"finished_at": "2026-01-01T12:00:00+00:00"}')
    spec = parse_spec(SPEC)
    sources = lake.store.child("features")
    build_offline_source(lake, spec, sources)
    store = open_store(REPO / "feature_repo", root / "feast", sources.uri(), yaml_name)
    service, _ = apply_definitions(store, spec, sources.uri())
    materialize(store, dt.datetime(2026, 6, 1, tzinfo=dt.UTC))
    return store, service, df.set_index("account_id")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    settings = load_settings(root=str(root))
    reg = ModelRegistry.from_settings(settings)
    train = frame(400, seed=1)
    y = (train.usage / 3 + (train.plan == "pro") * 2 - train.annual + np.random.default_rng(2).normal(0, 1, 400)) > 3
    store, service, accounts = feast_world(root)
    pipe = pipeline(LogisticRegression()).fit(train[:300], y[:300])
    mv, info = register(reg, "accounts", pipe, train[300:], root, problem_type="binary", classes=[False, True],
                        threshold=THRESHOLD, feature_service=service)
    assert info["exact"], info
    # a model whose ONNX export is not exact: usage differences below float32 resolution decide the label,
    # and only the float32 compiler (skl2onnx) is offered (skiff's float64 one gets it exactly right)
    tie = train.copy()
    odd = np.arange(len(tie)) % 2 == 1
    tie["usage"] = np.round(tie.usage, 0) + np.where(odd, 1e-9, 0.0)
    hgb = pipeline(HistGradientBoostingClassifier(max_iter=30, random_state=0)).fit(tie, np.where(odd, "yes", "no"))
    _, hgb_info = register(reg, "ties", hgb, tie, root, compilers=["skl2onnx"], problem_type="binary",
                           classes=["no", "yes"])
    tiers = np.array(["bronze", "silver", "gold"])[np.digitize(train.usage, [3, 8])]
    multi = pipeline(LogisticRegression(max_iter=500)).fit(train, tiers)
    register(reg, "tiers", multi, train[300:], root, problem_type="multiclass",
             classes=multi.classes_.tolist())
    spend = pipeline(LinearRegression()).fit(train, train.usage * 12.5 + train.seats)
    register(reg, "spend", spend, train[300:], root, problem_type="regression")
    broken, _ = register(reg, "broken", pipe, train[300:], root, problem_type="binary", classes=[False, True])
    (root / "models" / "broken" / "1" / "model.joblib").write_bytes(b"not a pickle")
    return {"root": root, "settings": settings, "pipe": pipe, "rows": frame(25, seed=3), "hgb": hgb,
            "hgb_info": hgb_info, "tie": tie, "multi": multi, "spend": spend, "store": store, "service": service,
            "accounts": accounts}


@pytest.fixture(scope="module")
def server(world):
    from serving.runtime.server import start_local_server, stop_local_server

    port, grpc_port = free_port(), free_port()
    proc = start_local_server("accounts", 1, port, root=world["root"], grpc_port=grpc_port,
                              log_path=world["root"] / "serve-accounts.log")
    yield {"url": f"http://127.0.0.1:{port}", "proc": proc, "port": port, "grpc_port": grpc_port}
    stop_local_server(proc)


def expected(pipe, rows: pd.DataFrame) -> tuple[list, np.ndarray]:
    p = pipe.predict_proba(rows[FEATURES])[:, 1]
    return [bool(v) for v in p >= THRESHOLD], p


def v2_inputs(rows: pd.DataFrame) -> list[dict]:
    dts = {"plan": "BYTES", "usage": "FP64", "seats": "INT64", "annual": "BOOL"}
    return [{"name": f, "datatype": dts[f], "shape": [len(rows)], "data": rows[f].tolist()} for f in FEATURES]


# -- predictor over HTTP -----------------------------------------------------------------------------
def test_v1_rows_and_objects_exact(world, server):
    rows = world["rows"]
    instances = [list(r) for r in rows[FEATURES].itertuples(index=False)]
    instances[1] = dict(zip(FEATURES, instances[1], strict=True))
    r = httpx.post(f"{server['url']}/v1/models/accounts:predict", json={"instances": instances})
    assert r.status_code == 200, r.text
    body = r.json()
    labels, p = expected(world["pipe"], rows)
    assert body["model_version"] == "1" and body["model_name"] == "accounts"
    assert [x["label"] for x in body["predictions"]] == labels
    np.testing.assert_allclose([x["probability"] for x in body["predictions"]], p, atol=1e-6)


def test_v2_named_inputs_and_one_tensor_exact(world, server):
    rows = world["rows"]
    labels, p = expected(world["pipe"], rows)
    named = httpx.post(f"{server['url']}/v2/models/accounts/infer", json={"id": "r-1", "inputs": v2_inputs(rows)})
    tensor = httpx.post(f"{server['url']}/v2/models/accounts/infer", json={"inputs": [
        {"name": "input", "datatype": "BYTES", "shape": [len(rows), 4],
         "data": [list(r) for r in rows[FEATURES].itertuples(index=False)]}]})
    assert named.status_code == 200 and tensor.status_code == 200, (named.text, tensor.text)
    for body in (named.json(), tensor.json()):
        out = {o["name"]: o for o in body["outputs"]}
        assert body["model_version"] == "1"
        assert out["label"]["datatype"] == "BOOL" and out["label"]["data"] == labels
        assert out["probability"]["shape"] == [len(rows)]
        np.testing.assert_allclose(out["probability"]["data"], p, atol=1e-6)
        assert float(out["probability"]["parameters"]["threshold"]) == THRESHOLD
    assert named.json()["id"] == "r-1"
    assert tensor.json()["id"]  # a request without id gets one (KServe alone answers 500 here)


def test_third_party_v2_client(world, server):
    import tritonclient.http as th

    rows = world["rows"][:5]
    client = th.InferenceServerClient(url=f"127.0.0.1:{server['port']}")
    try:
        assert client.is_server_ready() and client.is_model_ready("accounts")
        meta = client.get_model_metadata("accounts")
        assert meta["versions"] == ["1"] and [i["name"] for i in meta["inputs"]] == FEATURES
        labels, p = expected(world["pipe"], rows)
        for binary in (False, True):
            inputs = []
            for f, dtype, np_dtype in [("plan", "BYTES", object), ("usage", "FP64", np.float64),
                                       ("seats", "INT64", np.int64), ("annual", "BOOL", bool)]:
                inp = th.InferInput(f, [len(rows)], dtype)
                inp.set_data_from_numpy(rows[f].to_numpy(dtype=np_dtype), binary_data=binary)
                inputs.append(inp)
            outputs = [th.InferRequestedOutput("label", binary_data=binary),
                       th.InferRequestedOutput("probability", binary_data=binary)]
            res = client.infer("accounts", inputs, outputs=outputs)
            assert res.as_numpy("label").tolist() == labels
            np.testing.assert_allclose(res.as_numpy("probability"), p, atol=1e-6)
    finally:
        client.close()


def test_grpc_v2(world, server):
    import asyncio

    from kserve import InferenceGRPCClient, InferInput, InferRequest

    rows = world["rows"][:3]
    labels, p = expected(world["pipe"], rows)

    async def call():
        client = InferenceGRPCClient(url=f"127.0.0.1:{server['grpc_port']}", timeout=10)
        try:
            inputs = []
            for f, dtype, np_dtype in [("plan", "BYTES", object), ("usage", "FP64", np.float64),
                                       ("seats", "INT64", np.int64), ("annual", "BOOL", bool)]:
                inp = InferInput(f, [len(rows)], dtype)
                inp.set_data_from_numpy(rows[f].to_numpy(dtype=np_dtype), binary_data=False)
                inputs.append(inp)
            return await client.infer(InferRequest(model_name="accounts", infer_inputs=inputs, request_id="g1"))
        finally:
            await client.close()

    res = asyncio.run(call())
    out = {o.name: o for o in res.outputs}
    assert res.model_version == "1"
    assert out["label"].as_numpy().tolist() == labels
    np.testing.assert_allclose(out["probability"].as_numpy(), p, atol=1e-6)


BAD = [
    ("v1", {"instances": [{"plan": "pro", "usage": 1.0, "seats": 2}]}, 400, "annual"),
    ("v1", {"instances": [{"plan": "pro", "usage": 1.0, "seats": 2, "annual": True, "color": "red"}]}, 400, "color"),
    ("v1", {"instances": [{"plan": "pro", "usage": "lots", "seats": 2, "annual": True}]}, 400, "usage"),
    ("v1", {"instances": [{"plan": "pro", "usage": 1.0, "seats": 2, "annual": "perhaps"}]}, 400, "annual"),
    ("v1", b'{"instances": [{"plan": "pro", "usage": Infinity, "seats": 2, "annual": true}]}', 400, "usage"),
    ("v1", {"instances": [["pro", 1.0, 2]]}, 400, "instances[0]"),
    ("v1", {"instances": []}, 400, "instances"),
    ("v1", {"instances": [{"plan": "pro", "usage": None, "seats": 2, "annual": True}]}, 400, "usage"),
    ("v1", b'{"instances": [["pro", 1.0,', 400, "body"),
    ("v2", {"inputs": [i for i in v2_inputs(frame(1, 0)) if i["name"] != "seats"]}, 400, "seats"),
    ("v2", {"inputs": [{"name": "input", "datatype": "BYTES", "shape": [1, 4, 1], "data": [["pro", 1.0, 2, True]]}]},
     400, "input"),
    ("v2", {"inputs": [{**i, "data": ["x"], "datatype": "BYTES"} if i["name"] == "usage" else i
                       for i in v2_inputs(frame(1, 0))]}, 400, "usage"),
    ("v2", {"inputs": []}, 400, "inputs"),
    ("v2", {"inputs": [{"name": "plan", "shape": [1], "data": ["pro"]}]}, 400, "inputs.0.datatype"),
    ("v2", b'{"inputs": [{"name": "input"', 400, "body"),
]


@pytest.mark.parametrize(("protocol", "body", "status", "field"), BAD)
def test_bad_requests_are_400_with_the_field(server, protocol, body, status, field):
    url = (f"{server['url']}/v1/models/accounts:predict" if protocol == "v1"
           else f"{server['url']}/v2/models/accounts/infer")
    kw = {"content": body, "headers": {"content-type": "application/json"}} if isinstance(body, bytes) else {"json": body}
    r = httpx.post(url, **kw)
    assert r.status_code == status, r.text
    got = r.json()
    assert got["error"] == "InvalidInput" and got["detail"]["field"] == field, got
    assert got["message"]


def test_unknown_model_is_404_json(server):
    for url in (f"{server['url']}/v1/models/nobody:predict", f"{server['url']}/v2/models/nobody/infer"):
        r = httpx.post(url, json={"instances": [[1]], "inputs": []})
        assert r.status_code == 404 and r.json()["error"] == "ModelNotFound"
        assert r.json()["detail"]["model"] == "nobody"


def test_metadata_and_readiness_tell_the_version(server):
    url = server["url"]
    meta = httpx.get(f"{url}/v2/models/accounts").json()
    assert meta["versions"] == ["1"] and meta["platform"] == "onnxruntime_onnx"
    assert {i["name"]: i["datatype"] for i in meta["inputs"]} == {"plan": "BYTES", "usage": "FP64",
                                                                   "seats": "INT64", "annual": "BOOL"}
    assert [o["name"] for o in meta["outputs"]] == ["label", "probability"]
    assert httpx.get(f"{url}/v2/models/accounts/ready").json() == {"name": "accounts", "ready": True, "version": "1"}
    assert httpx.get(f"{url}/v1/models/accounts").json()["version"] == "1"
    assert httpx.get(f"{url}/v2/models/accounts/versions/1/ready").status_code == 200
    wrong = httpx.get(f"{url}/v2/models/accounts/versions/2/ready")
    assert wrong.status_code == 404 and wrong.json()["detail"]["served"] == "1"
    assert httpx.post(f"{url}/v2/models/accounts/versions/1/infer",
                      json={"inputs": v2_inputs(frame(1, 0))}).status_code == 200
    assert httpx.get(f"{url}/v2/health/ready").json() == {"ready": True}


def _samples(url: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for fam in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_count_requests_by_version_and_status(server):
    url = server["url"]
    ok = (("model", "accounts"), ("status", "200"), ("version", "1"))
    bad = (("model", "accounts"), ("status", "400"), ("version", "1"))
    before = _samples(url)
    httpx.post(f"{url}/v1/models/accounts:predict", json={"instances": []})
    httpx.post(f"{url}/v1/models/accounts:predict", json={"instances": [["pro", 1.0, 2, True]]})
    after = _samples(url)
    assert after[("skiff_requests_total", bad)] == before.get(("skiff_requests_total", bad), 0) + 1
    assert after[("skiff_requests_total", ok)] == before.get(("skiff_requests_total", ok), 0) + 1
    count = ("skiff_request_duration_seconds_count", (("model", "accounts"), ("version", "1")))
    assert after[count] == before.get(count, 0) + 2
    le = (("le", "0.0005"), ("model", "accounts"), ("version", "1"))
    assert ("skiff_request_duration_seconds_bucket", le) in after
    assert any(k[0] == "request_predict_seconds_count" for k in after)  # KServe's own series stay


def test_server_listens_on_loopback_only(server):
    import psutil

    proc = psutil.Process(server["proc"].pid)
    conns = proc.net_connections(kind="inet") if hasattr(proc, "net_connections") else proc.connections(kind="inet")
    listening = [c for c in conns if c.status == psutil.CONN_LISTEN]
    assert len(listening) == 2  # HTTP and gRPC
    for c in listening:
        ip = ipaddress.ip_address(c.laddr.ip)
        assert (getattr(ip, "ipv4_mapped", None) or ip).is_loopback, c


def test_no_per_request_log_lines_by_default(server):
    httpx.post(f"{server['url']}/v1/models/accounts:predict", json={"instances": [["pro", 1.0, 2, True]]})
    text = server["proc"].log_path.read_text()
    assert "POST /v1/models" not in text and "predict_ms" not in text


def test_cli_predict_prints_answer_and_maps_errors(server, capsys):
    from skiff.cli import main

    rc = main(["predict", "accounts", "--url", server["url"], "--json", '{"instances": [["pro", 1.0, 2, true]]}'])
    assert rc == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["predictions"][0]["label"] in (True, False)
    rc = main(["predict", "accounts", "--url", server["url"], "--json", '{"instances": [["pro", "x", 2, true]]}'])
    assert rc == 2
    assert "expected a number" in capsys.readouterr().err
    rc = main(["predict", "accounts", "--v2", "--url", server["url"], "--json",
               json.dumps({"inputs": v2_inputs(frame(2, 0))})])
    assert rc == 0 and json.loads(capsys.readouterr().out)["outputs"][0]["shape"] == [2]


# -- failures to load --------------------------------------------------------------------------------
def test_model_that_fails_to_load_leaves_server_not_ready(world):
    from serving.runtime.server import start_local_server, stop_local_server

    proc = start_local_server("broken", 1, free_port(), root=world["root"], require_ready=False,
                              log_path=world["root"] / "serve-broken.log")
    try:
        url = f"http://127.0.0.1:{proc.args[proc.args.index('--port') + 1]}"
        ready = httpx.get(f"{url}/v2/health/ready")
        assert ready.status_code == 503 and "broken" in ready.json()["message"]
        model = httpx.get(f"{url}/v2/models/broken/ready")
        assert model.status_code == 503 and model.json()["error"] == "ModelNotReady"
        infer = httpx.post(f"{url}/v1/models/broken:predict", json={"instances": [["pro", 1.0, 2, True]]})
        assert infer.status_code == 503
    finally:
        stop_local_server(proc)
    assert "broken (version 1) failed to load" in proc.log_path.read_text()
    with pytest.raises(SkiffError, match="not ready"):
        start_local_server("broken", 1, free_port(), root=world["root"], log_path=world["root"] / "broken2.log")


# -- engines and problem types (in-process, the same app) -----------------------------------------------
def _client(*models):
    from fastapi.testclient import TestClient

    from serving.runtime.server import make_app

    _, app = make_app(list(models))
    return TestClient(app)


def _predictor(world, name, engine="auto", **kw):
    from serving.runtime.predictor import SkiffPredictor

    p = SkiffPredictor(name, settings=world["settings"], engine=engine, **kw)
    assert p.load(), p.load_error
    return p


def test_onnx_and_sklearn_give_the_same_responses(world):
    fast, slow = _predictor(world, "accounts"), _predictor(world, "accounts", engine="sklearn")
    assert fast.runtime.engine == "onnxruntime" and slow.runtime.engine == "sklearn"
    rows = world["rows"]
    v1 = {"instances": [list(r) for r in rows[FEATURES].itertuples(index=False)]}
    a = _client(fast).post("/v1/models/accounts:predict", json=v1).json()
    b = _client(slow).post("/v1/models/accounts:predict", json=v1).json()
    assert [x["label"] for x in a["predictions"]] == [x["label"] for x in b["predictions"]]
    np.testing.assert_allclose([x["probability"] for x in a["predictions"]],
                               [x["probability"] for x in b["predictions"]], atol=1e-6)
    labels, p = expected(world["pipe"], rows)
    np.testing.assert_allclose([x["probability"] for x in b["predictions"]], p, atol=1e-12)
    v2 = {"id": "same", "inputs": v2_inputs(rows)}
    a2 = _client(fast).post("/v2/models/accounts/infer", json=v2).json()
    b2 = _client(slow).post("/v2/models/accounts/infer", json=v2).json()
    assert [(o["name"], o["datatype"], o["shape"]) for o in a2["outputs"]] == \
        [(o["name"], o["datatype"], o["shape"]) for o in b2["outputs"]]
    assert a2["outputs"][0]["data"] == b2["outputs"][0]["data"] == labels
    np.testing.assert_allclose(a2["outputs"][1]["data"], b2["outputs"][1]["data"], atol=1e-6)


def test_not_exact_export_falls_back_to_sklearn(world):
    info = world["hgb_info"]
    assert info["exact"] is False and info["max_abs_diff"] > 1e-5 and info["file"] is None
    p = _predictor(world, "ties")
    assert p.runtime.engine == "sklearn" and p.platform == "sklearn"
    rows = world["tie"][:30]
    body = _client(p).post("/v1/models/ties:predict",
                           json={"instances": [list(r) for r in rows[FEATURES].itertuples(index=False)]}).json()
    np.testing.assert_array_equal([x["probability"] for x in body["predictions"]],
                                  world["hgb"].predict_proba(rows[FEATURES])[:, 1])


def test_multiclass_label_and_class_probabilities(world):
    p = _predictor(world, "tiers")
    rows = world["rows"][:6]
    proba = world["multi"].predict_proba(rows[FEATURES])
    classes = world["multi"].classes_.tolist()
    c = _client(p)
    v1 = c.post("/v1/models/tiers:predict",
                json={"instances": [list(r) for r in rows[FEATURES].itertuples(index=False)]}).json()
    assert [x["label"] for x in v1["predictions"]] == [classes[i] for i in proba.argmax(1)]
    np.testing.assert_allclose([[x["probabilities"][k] for k in classes] for x in v1["predictions"]], proba, atol=1e-6)
    v2 = c.post("/v2/models/tiers/infer", json={"inputs": v2_inputs(rows)}).json()
    out = {o["name"]: o for o in v2["outputs"]}
    assert out["probabilities"]["shape"] == [6, 3]
    assert json.loads(out["probabilities"]["parameters"]["classes"]) == classes
    np.testing.assert_allclose(np.reshape(out["probabilities"]["data"], (6, 3)), proba, atol=1e-6)
    assert out["label"]["datatype"] == "BYTES"


def test_regression_value(world):
    p = _predictor(world, "spend")
    rows = world["rows"][:4]
    want = world["spend"].predict(rows[FEATURES])
    c = _client(p)
    v1 = c.post("/v1/models/spend:predict", json={"instances": [list(r) for r in rows[FEATURES].itertuples(index=False)]})
    np.testing.assert_allclose(v1.json()["predictions"], want, rtol=1e-6)
    v2 = c.post("/v2/models/spend/infer", json={"inputs": v2_inputs(rows)}).json()
    assert v2["outputs"][0]["name"] == "value"
    np.testing.assert_allclose(v2["outputs"][0]["data"], want, rtol=1e-6)


def test_a_tensorflow_version_without_recorded_preprocessing_fails_to_load(world):
    from serving.runtime.predictor import SkiffPredictor

    reg = ModelRegistry.from_settings(world["settings"])
    reg.register("tfmodel", {"weights": [1]}, {"flavor": "tensorflow", "features": FEATURES, "input_schema": SCHEMA})
    p = SkiffPredictor("tfmodel", settings=world["settings"])
    assert p.load() is False and "tensorflow" in p.load_error
    r = _client(p).get("/v2/health/ready")
    assert r.status_code == 503 and "tensorflow" in r.json()["message"]


# -- the Feast transformer ---------------------------------------------------------------------------
def _feature_rows(world, keys):
    return world["accounts"].loc[keys, FEATURES]


def test_transformer_in_process_sqlite(world):
    from serving.runtime.server import start_local_server, stop_local_server

    port = free_port()
    proc = start_local_server("accounts", 1, port, root=world["root"], with_features=True,
                              log_path=world["root"] / "serve-features.log")
    try:
        url = f"http://127.0.0.1:{port}"
        keys = ["acct-3", "acct-11"]
        labels, p = expected(world["pipe"], _feature_rows(world, keys))
        v1 = httpx.post(f"{url}/v1/models/accounts:predict",
                        json={"instances": [{"account_id": k} for k in keys]})
        assert v1.status_code == 200, v1.text
        assert [x["label"] for x in v1.json()["predictions"]] == labels
        np.testing.assert_allclose([x["probability"] for x in v1.json()["predictions"]], p, atol=1e-6)
        v2 = httpx.post(f"{url}/v2/models/accounts/infer", json={"inputs": [
            {"name": "account_id", "datatype": "BYTES", "shape": [2], "data": keys}]})
        assert v2.status_code == 200, v2.text
        np.testing.assert_allclose(v2.json()["outputs"][1]["data"], p, atol=1e-6)
        unknown = httpx.post(f"{url}/v1/models/accounts:predict", json={"instances": [{"account_id": "nobody"}]})
        assert unknown.status_code == 404
        assert unknown.json()["error"] == "NotFoundError" and unknown.json()["detail"]["field"] == "account_id"
        missing = httpx.post(f"{url}/v1/models/accounts:predict", json={"instances": [{"customer": "x"}]})
        assert missing.status_code == 400 and missing.json()["detail"]["field"] == "account_id"
        # the predictor is served alongside, taking features
        direct = httpx.post(f"{url}/v1/models/accounts-predictor:predict",
                            json={"instances": [list(r) for r in _feature_rows(world, keys).itertuples(index=False)]})
        assert direct.json()["predictions"] == v1.json()["predictions"]
        counts = _samples(url)
        assert counts[("skiff_requests_total", (("model", "accounts"), ("status", "404"), ("version", "1")))] == 1
    finally:
        stop_local_server(proc)


def test_transformer_over_http_to_a_predictor(world, server):
    from serving.runtime.transformer import FeastTransformer, TransformerOptions

    t = FeastTransformer("accounts", TransformerOptions(predictor_host=f"127.0.0.1:{server['port']}"),
                         settings=world["settings"], store=world["store"])
    assert t.load(), t.load_error
    keys = ["acct-5"]
    labels, p = expected(world["pipe"], _feature_rows(world, keys))
    with _client(t) as c:
        v1 = c.post("/v1/models/accounts:predict", json={"instances": [{"account_id": "acct-5"}]})
        assert v1.status_code == 200, v1.text
        assert v1.json()["predictions"][0]["label"] == labels[0]
        assert v1.json()["predictions"][0]["probability"] == pytest.approx(p[0], abs=1e-6)
        v2 = c.post("/v2/models/accounts/infer", json={"id": "t1", "inputs": [
            {"name": "account_id", "datatype": "BYTES", "shape": [1], "data": keys}]})
        assert v2.status_code == 200 and v2.json()["id"] == "t1"
        assert v2.json()["outputs"][1]["data"][0] == pytest.approx(p[0], abs=1e-6)
        assert c.post("/v1/models/accounts:predict", json={"instances": [{"account_id": "zz"}]}).status_code == 404


def test_transformer_with_redis_online_store(tmp_path, monkeypatch):
    require_service("Redis", 6379)
    from serving.runtime.predictor import SkiffPredictor
    from serving.runtime.transformer import FeastTransformer

    monkeypatch.setenv("SKIFF_REDIS", "127.0.0.1:6379")
    tag = f"{uuid.uuid4().hex[:8]}-"
    settings = load_settings(root=str(tmp_path), feature_store_yaml="feature_store.redis.yaml")
    store, service, accounts = feast_world(tmp_path, "feature_store.redis.yaml", tag=tag)
    train = frame(200, seed=4)
    pipe = pipeline(LogisticRegression()).fit(train, train.usage > 6)
    register(ModelRegistry.from_settings(settings), "accounts", pipe, train, tmp_path, problem_type="binary",
             classes=[False, True], threshold=THRESHOLD, feature_service=service)
    predictor = SkiffPredictor("accounts-predictor", model_name="accounts", settings=settings)
    assert predictor.load(), predictor.load_error
    t = FeastTransformer("accounts", settings=settings, predictor=predictor, store=store)
    assert t.load(), t.load_error
    keys = [f"{tag}acct-1", f"{tag}acct-2"]
    _, p = expected(pipe, accounts.loc[keys, FEATURES])
    with _client(t, predictor) as c:
        r = c.post("/v1/models/accounts:predict", json={"instances": [{"account_id": k} for k in keys]})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose([x["probability"] for x in r.json()["predictions"]], p, atol=1e-6)
        gone = c.post("/v1/models/accounts:predict", json={"instances": [{"account_id": f"{tag}missing"}]})
        assert gone.status_code == 404 and f"{tag}missing" in gone.json()["message"]


def test_feature_lookup_timeout_is_a_json_502(world):
    from serving.runtime.transformer import FeastTransformer, TransformerOptions

    t = FeastTransformer("accounts", TransformerOptions(timeout_s=1e-9), settings=world["settings"],
                         predictor=_predictor(world, "accounts"), store=world["store"])
    assert t.load(), t.load_error
    with _client(t) as c:
        r = c.post("/v1/models/accounts:predict", json={"instances": [{"account_id": "acct-1"}]})
    assert r.status_code == 502 and r.json()["error"] == "SourceError" and "timed out" in r.json()["message"]


def test_access_log_flag_logs_each_request(world):
    from serving.runtime.server import start_local_server, stop_local_server

    port = free_port()
    proc = start_local_server("accounts", 1, port, root=world["root"], access_log=True,
                              log_path=world["root"] / "serve-access.log")
    try:
        httpx.post(f"http://127.0.0.1:{port}/v1/models/accounts:predict", json={"instances": [["pro", 1.0, 2, True]]})
    finally:
        stop_local_server(proc)
    text = proc.log_path.read_text()
    assert "POST /v1/models/accounts" in text and 'HTTP/1.1" 200' in text


def test_transformer_reads_a_real_feast_feature_server(world, server):
    """The cluster layout: the transformer asks a Feast feature server (``feast serve``) over HTTP and the
    predictor over HTTP; answers equal the in-process path's."""
    import os
    import subprocess
    import sys
    import time

    from serving.runtime.transformer import FeastTransformer, TransformerOptions

    reg = ModelRegistry.from_settings(world["settings"])
    rows = frame(100, seed=9)
    register(reg, "accounts_fs", world["pipe"], rows, world["root"], problem_type="binary",
             classes=[False, True], threshold=THRESHOLD, feature_service=world["service"],
             dataset={"name": "accounts", "spec": SPEC})
    port = free_port()
    feast = Path(sys.executable).with_name("feast")
    env = {**os.environ, "SKIFF_FEAST_DIR": str(world["root"] / "feast"),
           "SKIFF_FEATURE_SOURCE_DIR": str(world["root"] / "lake" / "features")}
    log = open(world["root"] / "feast-serve.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([str(feast), "-c", str(REPO / "feature_repo"), "serve", "-h", "127.0.0.1",
                             "-p", str(port), "--no-access-log"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (world["root"] / "feast-serve.log").read_text()[-2000:]
            time.sleep(0.5)
        t = FeastTransformer("accounts_fs", TransformerOptions(
            predictor_name="accounts", predictor_host=f"127.0.0.1:{server['port']}",
            feature_server_url=f"http://127.0.0.1:{port}", feature_service=world["service"]),
            settings=world["settings"])
        assert t.load(), t.load_error
        keys = ["acct-4", "acct-17"]
        labels, p = expected(world["pipe"], _feature_rows(world, keys))

        async def ask(payload):
            return await t.predict(await t.preprocess(payload))

        out = asyncio.run(ask({"instances": [{"account_id": k} for k in keys]}))
        assert [x["label"] for x in out["predictions"]] == labels
        np.testing.assert_allclose([x["probability"] for x in out["predictions"]], p, atol=1e-6)
        with pytest.raises(NotFoundError, match="unknown entity key"):
            asyncio.run(ask({"instances": [{"account_id": "nobody"}]}))
        wrong = FeastTransformer("accounts_fs", TransformerOptions(
            predictor_host="127.0.0.1:1", feature_server_url=f"http://127.0.0.1:{port}",
            feature_service="other_v1"), settings=world["settings"])
        assert not wrong.load() and "not 'other_v1'" in wrong.load_error

        # the container command an InferenceService runs, with the arguments KServe appends; its predictor
        # serves the registered name, as `python -m serving predictor accounts_fs` does in the predictor container
        from serving.runtime.server import start_local_server, stop_local_server

        pport, tport = free_port(), free_port()
        predictor = start_local_server("accounts_fs", 1, pport, root=world["root"],
                                       log_path=world["root"] / "serve-accounts-fs.log")
        container = subprocess.Popen(
            [sys.executable, "-m", "serving", "transformer", "--model", "accounts_fs", "--version", "1",
             "--feature_service", world["service"], "--feature_server_url", f"http://127.0.0.1:{port}",
             "--host", "127.0.0.1", "--model_name", "accounts-fs", "--predictor_host",
             f"127.0.0.1:{pport}", "--http_port", str(tport), "--workers", "1"],
            env={**env, "SKIFF_ROOT": str(world["root"])}, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 90
            ready = None
            while time.monotonic() < deadline and container.poll() is None:
                try:
                    ready = httpx.get(f"http://127.0.0.1:{tport}/v2/health/ready", timeout=1)
                    if ready.status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
            assert ready is not None and ready.status_code == 200, (world["root"] / "feast-serve.log").read_text()[-3000:]
            r = httpx.post(f"http://127.0.0.1:{tport}/v1/models/accounts-fs:predict",
                           json={"instances": [{"account_id": k} for k in keys]})
            assert r.status_code == 200, r.text
            assert [x["label"] for x in r.json()["predictions"]] == labels
        finally:
            container.terminate()
            container.wait(timeout=15)
            stop_local_server(predictor)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


_GENERATED = {**SPEC, "entity_key": {"generated": "row", "column": "row_id"},
              "columns": {k: v for k, v in SPEC["columns"].items() if k != "account_id"}}


@pytest.mark.parametrize(("recorded", "keys"), [
    (parse_spec(_GENERATED).model_dump(mode="json"), {"row_id": "string"}),  # as the register step records it
    (_GENERATED, {"row_id": "string"}),  # the generated column implied, not listed
    ({**SPEC, "entity_key": ["account_id", "seats"]}, {"account_id": "string", "seats": "integer"}),
])
def test_transformer_takes_its_keys_from_the_recorded_spec(world, recorded, keys):
    """With a feature server, the join keys come from the dataset spec the version records, read by the
    core spec model: a generated key's column (not the mapping's field names), a composite key's columns."""
    from serving.runtime.transformer import FeastTransformer, TransformerOptions

    register(ModelRegistry.from_settings(world["settings"]), "accounts_keys", world["pipe"], frame(60, seed=5),
             world["root"], problem_type="binary", classes=[False, True], feature_service=world["service"],
             dataset={"name": "accounts", "spec": recorded})
    t = FeastTransformer("accounts_keys", TransformerOptions(
        predictor_host="127.0.0.1:1", feature_server_url=f"http://127.0.0.1:{free_port()}",
        feature_service=world["service"]), settings=world["settings"])
    assert t.load(), t.load_error
    assert dict(t.key_schema.types) == keys and list(t.key_schema.features) == list(keys)
    row = {k: 7 if typ == "integer" else "k-1" for k, typ in keys.items()}
    with _client(t) as c:
        missing = c.post("/v1/models/accounts_keys:predict", json={"instances": [{"account": "k-1"}]})
        assert missing.status_code == 400 and missing.json()["detail"]["field"] in keys, missing.text
        # the keys reach the feature server (none listens there: a 502 naming it, not a 400 about the keys)
        asked = c.post("/v1/models/accounts_keys:predict", json={"instances": [row]})
        assert asked.status_code == 502 and "feature server" in asked.json()["message"], asked.text


def test_transformer_with_an_invalid_recorded_spec_is_not_ready_and_says_why(world):
    from serving.runtime.transformer import FeastTransformer, TransformerOptions

    broken = {**SPEC, "entity_key": {"generated": "row", "column": "churned"}}  # a boolean feature column
    register(ModelRegistry.from_settings(world["settings"]), "accounts_badspec", world["pipe"], frame(60, seed=5),
             world["root"], problem_type="binary", classes=[False, True], feature_service=world["service"],
             dataset={"name": "accounts", "spec": broken})
    t = FeastTransformer("accounts_badspec", TransformerOptions(
        predictor_host="127.0.0.1:1", feature_server_url="http://127.0.0.1:1", feature_service=world["service"]),
        settings=world["settings"])
    assert not t.load()
    assert "dataset spec recorded by model accounts_badspec v1" in t.load_error and "entity_key" in t.load_error
