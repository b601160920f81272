"""Alert delivery of skiff stream: the MQTT alert topic (real Mosquitto) and the webhook (a real HTTP server
on a thread of the test receiving the JSON POSTs); a slow endpoint never holds the stream, and alerts beyond
the webhook queue are dropped and counted."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from components.stream.logic import StreamConfig, StreamConsumer
from components.stream.ops import AlertDispatcher, StreamMetrics
from skiff.errors import ConfigError
from skiff.lake import Lake
from skiff.spec import MqttSource, parse_spec
from skiff.storage import Store
from skiff.windows import Alert
from tests.conftest import require_service
from tests.integration.test_stream_mqtt import finish, publish, start
from tests.integration.test_stream_scoring_mqtt import Listener
from tests.integration.test_stream_windows_mqtt import reading, stream_of
from tests.unit.test_stream_windows import BASE, T0, WINDOWS

pytestmark = pytest.mark.integration


class Hook:
    """A local HTTP endpoint recording the JSON bodies POSTed to it, ``delay`` seconds per request."""

    def __init__(self, delay: float = 0.0, status: int = 204) -> None:
        self.bodies: list[dict] = []
        self.paths: list[str] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(delay)
                hook.paths.append(self.path)
                hook.bodies.append(json.loads(body))
                assert self.headers["Content-Type"] == "application/json"
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/alerts?token=s3cret"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _alert(i: int) -> Alert:
    return Alert(f"dev-{i}", T0 + i, "temperature threshold above 80", "temperature", 81.0 + i, {"above": 80.0})


def test_alerts_reach_the_mqtt_topic_and_the_webhook_with_device_values_and_rule(tmp_path, monkeypatch):
    require_service("Mosquitto", 1883)
    hook = Hook()
    monkeypatch.setenv("SENSOR_ALERT_HOOK", hook.url)
    base = f"skiff-test/{uuid.uuid4().hex}"
    topic, alert_topic = f"{base}/telemetry", f"{base}/alerts"
    spec = parse_spec({**BASE, "windows": {**WINDOWS, "alert_topic": alert_topic,
                                           "alert_webhook_env": "SENSOR_ALERT_HOOK",
                                           "alerts": [{"column": "temperature", "type": "threshold", "above": 27}]}})
    lake = Lake(Store(str(tmp_path / "lake")))
    data = stream_of(600)
    listener = Listener(alert_topic)
    consumer = StreamConsumer(spec, lake, MqttSource(topic=topic),
                              StreamConfig(batch_rows=200, batch_seconds=0.5, max_messages=len(data), duration_s=40,
                                           session_expiry_s=120, poll_max=100),
                              client_id=f"alerts-{uuid.uuid4().hex[:8]}")
    try:
        t, out = start(consumer)
        publish(lambda i: topic, [reading(*r) for r in data])
        finish(t, out)
        rows = lake.read("sensors").to_pandas()
        hot = rows[rows.temperature > 27]
        expected = {(d, pd.Timestamp(ts)) for d, ts in zip(hot.device_id, hot.ts, strict=True)}
        assert expected
        on_topic = listener.wait_for(alert_topic, len(expected))
    finally:
        listener.close()
        hook.close()
    for where, got in (("topic", on_topic), ("webhook", hook.bodies)):
        keys = {(a["entity"], pd.Timestamp(a["event_time"])) for a in got}
        assert keys == expected, (where, len(keys), len(expected), sorted(expected - keys)[:3], sorted(keys - expected)[:3])
        assert len(got) == len(expected), where
        assert all(a["dataset"] == "sensors" and a["rule"] == "temperature threshold above 27"
                   and a["column"] == "temperature" and a["value"] > 27 and a["above"] == 27 for a in got)
    assert set(hook.paths) == {"/hooks/alerts?token=s3cret"}
    # the run keeps them too
    kept = pd.concat([pd.read_parquet(lake.store.uri(*ref.parts, "_alerts.parquet")) for ref in lake.all_runs("sensors")
                      if lake.store.exists(*ref.parts, "_alerts.parquet")])
    assert len(kept) == len(expected)


def test_a_slow_webhook_never_holds_the_stream_and_a_full_queue_drops_and_counts(caplog, monkeypatch):
    hook = Hook(delay=0.5)
    metrics = StreamMetrics("sensors")
    monkeypatch.setenv("SKIFF_TEST_SLOW_HOOK", hook.url)
    try:
        alerts = AlertDispatcher("sensors", metrics, webhook_env="SKIFF_TEST_SLOW_HOOK", max_queued=5)
        started = time.monotonic()
        alerts.dispatch([_alert(i) for i in range(50)])
        took = time.monotonic() - started
        assert took < 0.2, f"dispatch waited {took:.2f} s for the endpoint"
        dropped = metrics.alerts_dropped._value.get()
        assert 44 <= dropped <= 45  # one taken by the POSTing thread, five queued, the rest dropped
        alerts.close(timeout=0.8)  # about two more get through in time; what is left is dropped too
        deadline = time.monotonic() + 3
        while len(hook.bodies) + metrics.alerts_dropped._value.get() < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(hook.bodies) + metrics.alerts_dropped._value.get() == 50
        assert metrics.alerts_dropped._value.get() > dropped and len(hook.bodies) >= 1
        assert [b["entity"] for b in hook.bodies] == [f"dev-{i}" for i in range(len(hook.bodies))]  # in order
        text = metrics.render().decode()
        assert 'skiff_stream_alerts_total{dataset="sensors",rule="temperature threshold above 80"} 50.0' in text
        assert "s3cret" not in caplog.text  # the URL may hold a token: never logged
    finally:
        hook.close()


def test_webhook_errors_are_counted_and_an_unset_variable_is_a_config_error(caplog, monkeypatch):
    hook = Hook(status=500)
    monkeypatch.setenv("SKIFF_TEST_BAD_HOOK", hook.url)
    metrics = StreamMetrics("sensors")
    try:
        alerts = AlertDispatcher("sensors", metrics, webhook_env="SKIFF_TEST_BAD_HOOK")
        alerts.dispatch([_alert(1), _alert(2)])
        alerts.close()
        assert len(hook.bodies) == 2 and metrics.webhook_failed._value.get() == 2
        assert "answered 500" in caplog.text and "s3cret" not in caplog.text
    finally:
        hook.close()
    monkeypatch.delenv("SKIFF_TEST_BAD_HOOK")
    with pytest.raises(ConfigError, match="SKIFF_TEST_BAD_HOOK, which is not set"):
        AlertDispatcher("sensors", metrics, webhook_env="SKIFF_TEST_BAD_HOOK")
