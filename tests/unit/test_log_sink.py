"""The inference-log sink: CloudEvents as KServe's logger sends them (built with the CloudEvents SDK, binary
and structured content modes) become the same rows the model server logs in-process; malformed events
are 4xx with a JSON reason; an unanswered request is written alone after the pair timeout."""

from __future__ import annotations

import json
import uuid

import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent

from serving.runtime.log_sink import REQUEST_TYPE, RESPONSE_TYPE, LogSink, make_sink_app
from skiff.config import load_settings
from skiff.inference_log import log_partitions, log_store, read_log
from tests.unit.test_serving_log import KEY, _frame, _v2, world  # noqa: F401 - the registered versions

SOURCE = "http://localhost:9081/"


def _event(etype: str, eid: str, data: dict, service: str = "accounts", **ext) -> CloudEvent:
    return CloudEvent({"type": etype, "source": SOURCE, "id": eid, "inferenceservicename": service,
                       "namespace": "prod", "component": "predictor", "endpoint": "default", **ext}, data)


def _rows(settings, model="accounts"):
    store = log_store(settings)
    return [r for v, h in log_partitions(store, model) for r in read_log(store, model, v, h).to_pylist()]


def _key(r):
    return (r["request_id"], r["row"])


@pytest.fixture
def sink_world(world, tmp_path, monkeypatch):  # noqa: F811 - the fixture imported above
    from fastapi.testclient import TestClient

    monkeypatch.setenv("SKIFF_INFERENCE_LOG_KEY", KEY)
    settings = load_settings(root=str(tmp_path / "sink"), registry=str(world["root"] / "models"),
                             inference_log_sample_rate=1.0)
    sink = LogSink(settings, pair_timeout_s=30)
    return settings, sink, TestClient(make_sink_app(sink, expire_every_s=3600))


def test_the_sink_writes_the_rows_the_server_writes_from_binary_and_structured_events(world, sink_world,  # noqa: F811
                                                                                      monkeypatch):
    from fastapi.testclient import TestClient

    from serving.runtime.predictor import SkiffPredictor
    from serving.runtime.request_log import build_writer
    from serving.runtime.server import make_app

    settings, sink, sink_client = sink_world
    served = load_settings(root=str(world["root"]), inference_log_sample_rate=1.0)
    p = SkiffPredictor("accounts", version=1, settings=served)
    assert p.load()
    p.request_log = build_writer(served, [p.metadata])
    server = TestClient(make_app([p])[1])
    data = _frame(30, 11)
    ids = []
    with server, sink_client:
        for i in range(12):
            rows = data.iloc[i:i + 1 + i % 3]
            eid = str(uuid.uuid4())
            if i % 3 == 0:  # V1, the client's X-Request-Id forwarded as logger metadata
                body = {"instances": rows.to_dict("records")}
                r = server.post("/v1/models/accounts:predict", json=body, headers={"X-Request-Id": f"v1-{i}"})
                ext = {"metadata": json.dumps({"X-Request-Id": [f"v1-{i}"]})}
                ids.append(f"v1-{i}")
            else:
                body = _v2(rows, f"v2-{i}")
                r = server.post("/v2/models/accounts/infer", json=body)
                ext = {}
                ids.append(f"v2-{i}")
            assert r.status_code == 200, r.text
            for etype, payload in ((REQUEST_TYPE, body), (RESPONSE_TYPE, r.json())):
                headers, content = (to_binary if i % 2 else to_structured)(_event(etype, eid, payload, **ext))
                got = sink_client.post("/", headers=dict(headers), content=content)
                assert got.status_code == 202, got.text
        metrics = sink_client.get("/metrics").text
    p.request_log.close()
    assert sink.writer.closed  # the app's shutdown flushed and closed the writer
    mine = {_key(r): r for r in _rows(settings)}
    theirs = {_key(r): r for r in _rows(served)}
    assert sorted({k[0] for k in mine}) == sorted(ids) and mine.keys() == theirs.keys()
    for k, r in mine.items():
        s = theirs[k]
        for col in ("model", "version", "request_id", "row", "status", "error", "sampled", "sample_rate", "inputs"):
            assert r[col] == s[col], (k, col, r[col], s[col])
        assert r["outputs"]["prediction"] == s["outputs"]["prediction"]
        assert r["outputs"]["probability"] == pytest.approx(s["outputs"]["probability"], abs=1e-12)
    c = sink.writer.counters.snapshot()["accounts"]
    assert c["offered"] == c["accepted"] == c["logged"] == 12 and c["rows_written"] == len(mine)
    assert sink.events["paired"] == 12 and 'skiff_log_sink_events_total{outcome="paired"} 12.0' in metrics
    assert 'skiff_inference_log_logged_total{model="accounts"}' in metrics


def test_an_unanswered_request_is_written_alone_and_a_response_alone_too(world, sink_world):  # noqa: F811
    settings, sink, client = sink_world
    bad = {"instances": [{"plan": "pro", "usage": "not-a-number", "seats": 1}]}
    answer = {"id": "only-answer", "model_name": "accounts", "model_version": "1", "outputs": [
        {"name": "label", "datatype": "BOOL", "shape": [2], "data": [True, False]},
        {"name": "probability", "datatype": "FP64", "shape": [2], "data": [0.9, 0.1]}]}
    with client:
        h, b = to_binary(_event(REQUEST_TYPE, "e-bad", bad, annotations=json.dumps({"skiff.io/served-version": "1"})))
        assert client.post("/", headers=dict(h), content=b).status_code == 202
        h, b = to_binary(_event(RESPONSE_TYPE, "e-resp", answer))
        assert client.post("/", headers=dict(h), content=b).status_code == 202
        assert sink.expire() == 0  # within the pair timeout: still waiting
        assert sink.expire(now=1e12) == 2
    rows = {r["request_id"]: r for r in sorted(_rows(settings), key=lambda r: -r["row"])}  # each id's row 0
    assert rows["e-bad"]["status"] is None and rows["e-bad"]["error"] == "BadRequest: field 'usage'"
    assert rows["e-bad"]["inputs"] == {"plan": None, "usage": None, "seats": None}
    assert b"not-a-number" not in b"".join(f.read_bytes() for f in (settings_root(settings)).rglob("*.parquet"))
    assert rows["only-answer"]["outputs"] == {"prediction": "True", "probability": 0.9}
    assert sink.events["unpaired"] == 2 and len(_rows(settings)) == 3


def settings_root(settings):
    from pathlib import Path

    return Path(settings.root) / "inference"


@pytest.mark.parametrize(("headers", "body", "status", "words"), [
    ({"ce-type": REQUEST_TYPE, "ce-source": SOURCE, "ce-specversion": "1.0", "ce-inferenceservicename": "accounts",
      "content-type": "application/json"}, b"{}", 400, "id"),
    ({"ce-id": "1", "ce-type": "com.example.other", "ce-source": SOURCE, "ce-specversion": "1.0",
      "ce-inferenceservicename": "accounts", "content-type": "application/json"}, b"{}", 400, "not an inference"),
    ({"ce-id": "1", "ce-type": REQUEST_TYPE, "ce-source": SOURCE, "ce-specversion": "1.0",
      "ce-inferenceservicename": "accounts", "content-type": "application/json"}, b"{not json", 400, "not JSON"),
    ({"ce-id": "1", "ce-type": REQUEST_TYPE, "ce-source": SOURCE, "ce-specversion": "1.0",
      "ce-inferenceservicename": "nobody", "content-type": "application/json"}, b"{}", 400, "nobody"),
    ({"ce-id": "1", "ce-type": REQUEST_TYPE, "ce-source": SOURCE, "ce-specversion": "0.3",
      "ce-inferenceservicename": "accounts", "content-type": "application/json"}, b"{}", 400, "specversion"),
    ({"ce-id": "1", "ce-type": REQUEST_TYPE, "ce-source": SOURCE, "ce-specversion": "1.0",
      "content-type": "application/json"}, b"{}", 400, "inferenceservicename"),
    ({"content-type": "application/cloudevents+json"}, b'{"id": "1"}', 400, "source"),
    ({"content-type": "application/cloudevents-batch+json"}, b'{"id": "1"}', 400, "array"),
    ({"content-type": "application/json"}, b"{}", 415, "not a CloudEvent"),
    ({"ce-id": "1", "ce-type": REQUEST_TYPE, "ce-source": SOURCE, "ce-specversion": "1.0",
      "ce-inferenceservicename": "accounts", "content-type": "application/json"}, b"[1, 2]", 400, "JSON object"),
])
def test_malformed_events_are_4xx_with_a_reason(sink_world, headers, body, status, words):
    _, sink, client = sink_world
    with client:
        r = client.post("/", headers=headers, content=body)
    assert r.status_code == status, r.text
    assert words in r.json()["message"] and r.json()["error"] in ("BadEvent", "UnknownInferenceService")
    assert sink.writer.counters.snapshot().get("accounts", {}).get("offered", 0) == 0


def test_an_event_over_the_limit_is_413(world, tmp_path, monkeypatch):  # noqa: F811
    from fastapi.testclient import TestClient

    monkeypatch.setenv("SKIFF_INFERENCE_LOG_KEY", KEY)
    settings = load_settings(root=str(tmp_path), registry=str(world["root"] / "models"),
                             inference_log_sample_rate=1.0)
    with TestClient(make_sink_app(LogSink(settings), max_body_bytes=100)) as client:
        r = client.post("/", headers={"content-type": "application/cloudevents+json"}, content=b"{" + b" " * 200 + b"}")
    assert r.status_code == 413 and "limit" in r.json()["message"]
