"""skiff stream with windows against the real Mosquitto: late readings quarantined, window results equal to
pandas over the lake's rows, metrics and readiness served, and a kill -9 resumed without double counting."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from components.stream.logic import StreamConfig, StreamConsumer
from components.stream.ops import HealthServer, StreamMetrics
from skiff.lake import QUARANTINE, Lake
from skiff.spec import MqttSource, parse_spec
from skiff.storage import Store
from tests.conftest import require_service
from tests.integration.test_stream_mqtt import finish, publish, start
from tests.unit.test_stream_windows import BASE, T0, WINDOWS, compare

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _mosquitto():
    require_service("Mosquitto", 1883)


def reading(dev: str, sec: float, temp: float | None, hum: int | None) -> bytes:
    ts = dt.datetime.fromtimestamp(T0 / 1e6 + sec, dt.UTC).isoformat().replace("+00:00", "Z")
    return json.dumps({"device_id": dev, "ts": ts, "temperature": temp, "humidity": hum}).encode()


def stream_of(n: int) -> list[tuple[str, float, float | None, int | None]]:
    """Readings of three devices every 2 s, neighbours swapped now and then (out of order, in time), every
    97th one 150 s behind (late: its window closed), every 41st without a temperature."""
    out = []
    for i in range(n):
        dev, sec = "abc"[i % 3], (i // 3) * 2.0
        if i % 97 == 96:
            sec -= 151  # odd: no other reading of the device has this time
        out.append((dev, sec, None if i % 41 == 0 else 20.0 + (i % 17) * 0.5, i % 100))
    for i in range(5, n - 1, 13):
        out[i], out[i + 1] = out[i + 1], out[i]
    return out


def lake_windows(lake: Lake):
    closed: dict[str, list] = {}
    for ref in lake.all_runs("sensors"):
        folder = Path(lake.store.uri(*ref.parts))
        for w in ("m1", "m5"):
            t = pq.read_table(folder / f"_window_{w}.parquet")
            if t.num_rows:
                closed.setdefault(w, []).append(t.to_pandas())
    return closed


def lake_rows(lake: Lake):
    t = lake.read("sensors").to_pylist()
    return [(r["device_id"], (r["ts"].timestamp() * 1e6 - T0) / 1e6, r["temperature"], r["humidity"]) for r in t]


def quarantine_rows(lake: Lake):
    return [row for ref in lake.all_runs("sensors")
            for row in pq.read_table(Path(lake.store.uri(*ref.parts, QUARANTINE))).to_pylist()]


def test_windows_over_mqtt_equal_pandas_over_the_lake_rows_and_late_ones_are_quarantined(tmp_path):
    lake = Lake(Store(str(tmp_path / "lake")))
    topic = f"skiff-test/{uuid.uuid4().hex}/telemetry"
    spec = parse_spec({**BASE, "windows": WINDOWS})
    data = stream_of(1800)
    metrics = StreamMetrics("sensors")
    consumer = StreamConsumer(spec, lake, MqttSource(topic=topic),
                              StreamConfig(batch_rows=500, batch_seconds=0.5, max_messages=len(data),
                                           duration_s=40, session_expiry_s=120, poll_max=200),
                              client_id=f"win-{uuid.uuid4().hex[:8]}", metrics=metrics)
    health = HealthServer(metrics, consumer.not_ready)
    try:
        assert httpx.get(f"http://127.0.0.1:{health.port}/readyz").status_code == 503  # not connected yet
        t, out = start(consumer)
        ready = httpx.get(f"http://127.0.0.1:{health.port}/readyz")
        assert ready.status_code == 200 and ready.json() == {"ready": True}
        publish(lambda i: topic, [reading(*r) for r in data])
        result = finish(t, out)
        text = httpx.get(f"http://127.0.0.1:{health.port}/metrics").text
    finally:
        health.close()
    s = result.summary()["counts"]
    assert s["messages"] == len(data) == s["accepted"] + s["quarantined"] + s["duplicates"]
    late = [r for r in quarantine_rows(lake) if r["_reason"] == "late"]
    assert len(late) == s["quarantined"] >= len(data) // 97 - 1
    assert all(r["_window"] in ("m1", "m5") and "closed" in r["_problems"] and r["_topic"] == topic for r in late)
    rows = lake_rows(lake)
    assert len(rows) == s["accepted"]
    compare(lake_windows(lake), rows, spec)
    assert 'skiff_stream_quarantined_total{dataset="sensors",reason="late"}' in text
    assert f'skiff_stream_messages_total{{dataset="sensors"}} {float(len(data))}' in text
    assert "skiff_stream_window_close_delay_seconds_count" in text


def _cli(tmp_path: Path, spec_file: Path, *args: str) -> tuple[subprocess.Popen, list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from skiff.cli import main; sys.exit(main())",
         "--root", str(tmp_path / "root"), "stream", "--spec", str(spec_file), *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()
    return proc, lines


def _wait_for(proc: subprocess.Popen, lines: list[str], word: str) -> None:
    deadline = time.monotonic() + 30
    while not any(word in line for line in lines):
        assert proc.poll() is None, "".join(lines)
        assert time.monotonic() < deadline, "".join(lines)
        time.sleep(0.05)


def test_kill_9_with_windows_open_resumes_from_the_checkpoint_without_double_counting(tmp_path):
    topic = f"skiff-test/{uuid.uuid4().hex}/telemetry"
    spec_file = tmp_path / "sensors.yaml"
    spec_file.write_text(json.dumps({**BASE, "windows": WINDOWS}))
    cid = f"kill-{uuid.uuid4().hex[:6]}"
    lake = Lake(Store(str(tmp_path / "root" / "lake")))
    args = ("--topic", topic, "--client-id", cid, "--batch-rows", "300", "--batch-seconds", "0.3",
            "--session-expiry", "300", "--json", "--duration", "60")
    data = stream_of(1500)
    first, first_log = _cli(tmp_path, spec_file, *args)
    _wait_for(first, first_log, "consuming")
    publish(lambda i: topic, [reading(*r) for r in data[:900]])
    time.sleep(0.4)
    first.send_signal(signal.SIGKILL)  # mid-stream: windows open, a run maybe half written
    first.wait(10)
    publish(lambda i: topic, [reading(*r) for r in data[900:]])  # queued for the session meanwhile
    second, second_log = _cli(tmp_path, spec_file, *args)
    _wait_for(second, second_log, "consuming")
    assert any("resumed" in line and "windows" in line for line in second_log), "".join(second_log)
    deadline = time.monotonic() + 40
    got = 0
    while got < len(data):
        assert second.poll() is None and time.monotonic() < deadline, f"{got} of {len(data)} stored"
        time.sleep(0.5)
        got = sum(lake.manifest(r).counts.messages or 0 for r in lake.all_runs("sensors"))
    second.send_signal(signal.SIGTERM)
    assert second.wait(20) == 0, "".join(second_log)
    rows = lake_rows(lake)
    spec = parse_spec({**BASE, "windows": WINDOWS})
    # a message redelivered after the kill is stored once (or counted as a duplicate), never windowed twice
    keys = [(r[0], r[1]) for r in rows]
    assert len(keys) == len(set(keys))
    compare(lake_windows(lake), rows, spec)
