"""Scoring on arrival against the real Mosquitto: a registered model (exact ONNX export) scores each stored
reading in the consumer; the scores on the MQTT topic and in the lake equal the pipeline's predictions on the
lake's rows, readings without a model input are quarantined, a high score raises an alert on the alert topic."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import paho.mqtt.client as mqtt
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.stream.logic import StreamConfig, StreamConsumer
from components.stream.ops import HealthServer, StreamMetrics
from components.stream.score import MISSING_INPUT, SCORES_FILE
from skiff.lake import Lake
from skiff.spec import MqttSource, parse_spec
from skiff.storage import Store
from tests.conftest import require_service
from tests.integration.test_stream_mqtt import finish, publish, start
from tests.integration.test_stream_windows_mqtt import lake_windows, quarantine_rows, reading, stream_of
from tests.unit.test_stream_scoring import MODEL, register_anomaly_model
from tests.unit.test_stream_windows import BASE, T0, WINDOWS, compare

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _mosquitto():
    require_service("Mosquitto", 1883)


class Listener:
    """A paho subscriber collecting JSON messages per topic (subscribed before the stream starts)."""

    def __init__(self, *topics: str) -> None:
        self.got: dict[str, list[dict]] = {t: [] for t in topics}
        self._lock = threading.Lock()
        ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"listen-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.connect("127.0.0.1", 1883)
        self.client.loop_start()
        self.client.subscribe([(t, 1) for t in topics])
        assert ready.wait(10)

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            self.got[msg.topic].append(json.loads(msg.payload))

    def wait_for(self, topic: str, n: int, timeout: float = 20.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.got[topic]) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # nothing more should come
        return list(self.got[topic])

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_scores_on_the_topic_and_in_the_lake_equal_the_models_predictions_and_high_ones_alert(tmp_path):
    registry, pipe = register_anomaly_model(tmp_path)
    lake = Lake(Store(str(tmp_path / "lake")))
    base = f"skiff-test/{uuid.uuid4().hex}"
    topic, score_topic, alert_topic = f"{base}/telemetry", f"{base}/scores", f"{base}/alerts"
    spec = parse_spec({**BASE, "windows": {**WINDOWS, "alert_topic": alert_topic, "scoring": {
        "model": MODEL, "version": "latest", "topic": score_topic, "alert": {"above": 0.9}}}})
    data = stream_of(900)
    data = [(d, s, 44.0 + (i % 5) if t is not None and i % 50 == 7 else t, h)  # hot readings now and then
            for i, (d, s, t, h) in enumerate(data)]
    listener = Listener(score_topic, alert_topic)
    metrics = StreamMetrics("sensors")
    consumer = StreamConsumer(spec, lake, MqttSource(topic=topic),
                              StreamConfig(batch_rows=300, batch_seconds=0.5, max_messages=len(data), duration_s=40,
                                           session_expiry_s=120, poll_max=150),
                              client_id=f"score-{uuid.uuid4().hex[:8]}", metrics=metrics, registry=registry)
    health = HealthServer(metrics, consumer.not_ready)
    try:
        t, out = start(consumer)
        publish(lambda i: topic, [reading(*r) for r in data])
        result = finish(t, out)
        text = httpx.get(f"http://127.0.0.1:{health.port}/metrics").text
    finally:
        health.close()
    c = result.summary()["counts"]
    assert c["messages"] == len(data) == c["accepted"] + c["quarantined"] + c["duplicates"]

    # readings without a model input are quarantined with the input they miss
    no_temp = sum(1 for r in data if r[2] is None)
    assert result.reasons[MISSING_INPUT] == no_temp > 0
    missing = [q for q in quarantine_rows(lake) if q["_reason"] == MISSING_INPUT]
    assert len(missing) == no_temp
    assert all(q["_column"] == "temperature" and f"{MODEL} v1" in q["_problems"] for q in missing)

    # the lake keeps one score per stored reading, equal to the pipeline's prediction on that row
    rows = lake.read("sensors").to_pandas()
    assert len(rows) == c["accepted"]
    scores = pa.concat_tables([pq.read_table(Path(lake.store.uri(*ref.parts, SCORES_FILE)))
                               for ref in lake.all_runs("sensors")]).to_pandas()
    assert len(scores) == len(rows)
    merged = rows.merge(scores, left_on=["device_id", "ts"], right_on=["device_id", "event_time"], validate="1:1")
    assert len(merged) == len(rows)
    want = pipe.predict_proba(merged[["temperature", "humidity"]])[:, 1]
    np.testing.assert_allclose(merged["score"].to_numpy(), want, atol=1e-6)
    assert set(merged["model"]) == {MODEL} and set(merged["model_version"]) == {1}

    # the topic got the same scores, one message each
    on_topic = listener.wait_for(score_topic, len(rows))
    alerts = listener.wait_for(alert_topic, 1)
    listener.close()
    assert len(on_topic) == len(rows)
    by_key = {(m["entity"], pd.Timestamp(m["event_time"])): m["score"] for m in on_topic}
    assert len(by_key) == len(rows)
    expected = {(d, pd.Timestamp(ts)): p for d, ts, p in zip(merged["device_id"], merged["ts"], want, strict=True)}
    assert by_key.keys() == expected.keys()
    np.testing.assert_allclose([by_key[k] for k in expected], list(expected.values()), atol=1e-6)

    # every score above 0.9 raised one alert, with device, value and rule
    high = {k for k, p in expected.items() if p > 0.9}
    assert high
    score_alerts = [a for a in alerts if a["column"] == "score"]
    assert {(a["entity"], pd.Timestamp(a["event_time"])) for a in score_alerts} == high
    assert all(a["rule"] == f"{MODEL} v1 score above 0.9" and a["value"] > 0.9 and a["above"] == 0.9
               and a["dataset"] == "sensors" for a in score_alerts)

    # windows still equal pandas over the stored rows; scoring latency and engine in the metrics
    lake_rows = [(r.device_id, (r.ts.timestamp() * 1e6 - T0) / 1e6, r.temperature, r.humidity)
                 for r in rows.itertuples()]
    compare(lake_windows(lake), lake_rows, spec)
    assert f'skiff_stream_score_seconds_count{{dataset="sensors",model="{MODEL} v1"}}' in text
    assert (f'skiff_stream_scores_total{{dataset="sensors",engine="onnxruntime",model="{MODEL} v1"}} '
            f'{float(len(rows))}') in text
    assert f'skiff_stream_alerts_total{{dataset="sensors",rule="{MODEL} v1 score above 0.9"}} {float(len(high))}' in text


def test_closed_windows_are_scored_once_each_as_the_model_predicts_on_their_features(tmp_path):
    from sklearn.linear_model import LinearRegression

    from skiff.registry import ModelRegistry

    registry = ModelRegistry(Store(str(tmp_path / "registry")))
    feats = ["m1_temperature_mean", "m1_humidity_max", "m1_temperature_count"]
    rng = np.random.default_rng(5)
    x = pd.DataFrame({"m1_temperature_mean": rng.uniform(15, 35, 200), "m1_humidity_max": rng.uniform(0, 99, 200),
                      "m1_temperature_count": rng.integers(1, 40, 200)})
    lin = LinearRegression().fit(x, x.m1_temperature_mean * 3 - x.m1_humidity_max * 0.5 + x.m1_temperature_count)
    registry.register("window-load", lin, {"features": feats, "problem_type": "regression",
                                           "input_schema": {"m1_temperature_mean": "float", "m1_humidity_max": "float",
                                                            "m1_temperature_count": "integer"}})
    lake = Lake(Store(str(tmp_path / "lake")))
    base = f"skiff-test/{uuid.uuid4().hex}"
    topic, score_topic = f"{base}/telemetry", f"{base}/window-scores"
    spec = parse_spec({**BASE, "windows": {**WINDOWS, "scoring": {
        "model": "window-load", "version": 1, "score": "windows", "window": "m1", "topic": score_topic}}})
    data = stream_of(600)
    listener = Listener(score_topic)
    consumer = StreamConsumer(spec, lake, MqttSource(topic=topic),
                              StreamConfig(batch_rows=200, batch_seconds=0.5, max_messages=len(data), duration_s=40,
                                           session_expiry_s=120, poll_max=100),
                              client_id=f"wscore-{uuid.uuid4().hex[:8]}", registry=registry)
    t, out = start(consumer)
    publish(lambda i: topic, [reading(*r) for r in data])
    result = finish(t, out)
    assert MISSING_INPUT not in result.reasons  # readings are not held to a window model's inputs
    closed = pd.concat(lake_windows(lake)["m1"]).dropna(subset=feats)
    scores = pd.concat([pq.read_table(Path(lake.store.uri(*ref.parts, SCORES_FILE))).to_pandas()
                        for ref in lake.all_runs("sensors")])
    assert len(closed) > 10 and len(scores) == len(closed)
    merged = closed.merge(scores, left_on=["device_id", "window_end"], right_on=["device_id", "event_time"],
                          validate="1:1")
    assert len(merged) == len(closed) and set(merged["window"]) == {"m1"}
    np.testing.assert_allclose(merged["score"], lin.predict(merged[feats]), rtol=1e-9)
    on_topic = listener.wait_for(score_topic, len(closed))
    listener.close()
    assert len(on_topic) == len(closed) and {m["window"] for m in on_topic} == {"m1"}
    got = {(m["entity"], pd.Timestamp(m["event_time"])): m["score"] for m in on_topic}
    want = dict(zip(zip(merged["device_id"], merged["window_end"], strict=True), merged["score"], strict=True))
    assert got.keys() == want.keys()
    np.testing.assert_allclose([got[k] for k in want], list(want.values()), rtol=1e-12)
