"""skiff stream against the real Mosquitto on 127.0.0.1:1883, with a paho publisher in the test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pyarrow.parquet as pq
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from components.stream.logic import StreamConfig, StreamConsumer
from skiff.errors import StorageError
from skiff.lake import MANIFEST, QUARANTINE, Lake
from skiff.spec import MqttSource, parse_spec
from skiff.storage import Store
from tests.conftest import require_service, service_up

SPEC = {
    "name": "sensors",
    "entity_key": "device_id",
    "event_timestamp": "ts",
    "columns": {
        "device_id": {"type": "string", "required": True, "missing": "reject"},
        "ts": {"type": "datetime", "required": True, "missing": "reject"},
        "temperature": {"type": "float", "min": -50, "max": 150},
        "humidity": {"type": "float", "min": 0, "max": 100},
        "status": {"type": "category", "allowed": ["ok", "warn", "fail"]},
    },
}


@pytest.fixture(autouse=True)
def _mosquitto():
    require_service("Mosquitto", 1883)


@pytest.fixture
def lake(tmp_path):
    return Lake(Store(str(tmp_path / "lake")))


def ts_of(i: int) -> str:
    return f"2026-11-25T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z"


def good(i: int, device: str = "dev-0") -> bytes:
    # a unique (device, ts) per i below 860,000: i % 10,000 seconds after midnight, device per 10,000
    return json.dumps({"device_id": f"{device}-{i // 10_000}", "ts": ts_of(i % 10_000),
                       "temperature": 20.0 + i % 10, "humidity": 50.0, "status": "ok"}).encode()


def publish(topic_for, payloads: list[bytes], timeout: float = 30.0, port: int = 1883) -> None:
    """Publish at QoS 1 with capped in-flight/queued messages and wait for every PUBACK."""
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}",
                      protocol=mqtt.MQTTv5)
    pub.max_inflight_messages_set(1000)
    pub.max_queued_messages_set(1000)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    try:
        infos = []
        deadline = time.monotonic() + timeout
        for i, p in enumerate(payloads):
            while True:
                info = pub.publish(topic_for(i), p, qos=1)
                if info.rc == mqtt.MQTT_ERR_SUCCESS:
                    break
                assert info.rc == mqtt.MQTT_ERR_QUEUE_SIZE, info.rc
                assert time.monotonic() < deadline, "publisher queue stayed full"
                time.sleep(0.005)
            infos.append(info)
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            assert info.is_published()
    finally:
        pub.disconnect()
        pub.loop_stop()


def start(consumer: StreamConsumer) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def go():
        try:
            out["result"] = consumer.run()
        except BaseException as e:  # noqa: BLE001 - surfaced by the test
            out["error"] = e

    t = threading.Thread(target=go, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not consumer._subscribed.is_set() and "error" not in out:
        assert time.monotonic() < deadline, "consumer did not subscribe"
        time.sleep(0.02)
    return t, out


def finish(t: threading.Thread, out: dict, timeout: float = 30.0):
    t.join(timeout)
    assert not t.is_alive(), "consumer did not stop in time"
    if "error" in out:
        raise out["error"]
    return out["result"]


def lake_counts(lake: Lake, dataset: str = "sensors") -> tuple[int, int, int, int]:
    """accepted rows in the lake, quarantined rows, duplicates and messages, from the files and manifests."""
    accepted = quarantined = dups = msgs = 0
    for ref in lake.all_runs(dataset):
        folder = Path(lake.store.uri(*ref.parts))
        m = json.loads((folder / MANIFEST).read_text())
        accepted += pq.read_metadata(folder / "part-00000.parquet").num_rows
        quarantined += pq.read_metadata(folder / QUARANTINE).num_rows
        dups += m["counts"]["duplicates"]
        msgs += m["counts"]["messages"]
    return accepted, quarantined, dups, msgs


class _ThreadRecording(StreamConsumer):
    """Records which threads receive messages and which write the lake."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.threads: dict[str, set[str]] = {"receive": set(), "publish": set()}

    def _on_message(self, *a) -> None:
        self.threads["receive"].add(threading.current_thread().name)
        super()._on_message(*a)

    def _flush(self, buf) -> None:
        self.threads["publish"].add(threading.current_thread().name)
        super()._flush(buf)


def test_every_message_reaches_the_lake_in_atomic_runs_with_bad_ones_quarantined(lake):
    base = f"skiff-test/{uuid.uuid4().hex}"
    spec = parse_spec({**SPEC, "sources": [{"type": "mqtt", "topic": f"{base}/+/telemetry"}]})
    n = 3000
    payloads = [good(i) for i in range(n)]
    bad = {
        100: (b"{not json", "malformed_message"),
        200: (b"[1, 2]", "not_an_object"),  # two records, both rejected
        300: (json.dumps({"device_id": "x", "ts": ts_of(1), "temperature": "hot"}).encode(), "not_a_number"),
        400: (json.dumps({"device_id": "y", "ts": ts_of(2), "temperature": 999}).encode(), "above_max"),
        500: (json.dumps({"device_id": "z", "ts": ts_of(3), "humidity": -5}).encode(), "below_min"),
        600: (json.dumps({"ts": ts_of(4)}).encode(), "missing_column"),
        700: (b'"just a string"', "not_an_object"),
    }
    for i, (p, _) in bad.items():
        payloads[i] = p
    payloads[800] = payloads[801]  # a duplicate reading (same device and timestamp)
    payloads[900] = json.dumps([json.loads(good(90_000)), json.loads(good(90_001))]).encode()  # array of two
    records = n + 1 + 1  # the [1, 2] message and the array message hold two records each

    consumer = _ThreadRecording(spec, lake, spec.sources[0],
                                StreamConfig(batch_rows=1000, batch_seconds=30, max_messages=n, session_expiry_s=120),
                                client_id=f"it-{uuid.uuid4().hex[:8]}")
    t, out = start(consumer)
    publish(lambda i: f"{base}/dev{i % 7}/telemetry", payloads)
    result = finish(t, out)

    s = result.summary()
    # Parquet is written on the writer thread, never on paho's network thread
    assert consumer.threads["publish"] == {"skiff-stream-writer"}
    assert consumer.threads["receive"] and "skiff-stream-writer" not in consumer.threads["receive"]
    assert s["counts"]["messages"] == n
    assert s["counts"]["read"] == records == s["counts"]["accepted"] + s["counts"]["quarantined"] + s["counts"]["duplicates"]
    assert s["counts"]["duplicates"] == 1
    assert s["counts"]["quarantined"] == 8
    for _, reason in bad.values():
        assert s["quarantine_reasons"].get(reason, 0) >= 1, reason
    # several atomic runs, each committed, each manifest reconciling
    refs = lake.all_runs("sensors")
    assert len(refs) >= 3 and sorted(r.run_id for r in refs) == sorted(s["runs"])
    for ref in refs:
        m = lake.manifest(ref)
        c = m.counts
        assert c.read == c.accepted + c.quarantined + c.duplicates and c.read <= 1000
        # the stream's manifest is the ingestion one: fingerprint, hashes and times filled in
        assert m.fingerprint and m.spec_hash and m.content_hash and m.files[0].sha256
        assert m.started_at <= m.finished_at and m.sources[0]["type"] == "mqtt"
    accepted, quarantined, dups, msgs = lake_counts(lake)
    assert (accepted, quarantined, dups, msgs) == (s["counts"]["accepted"], 8, 1, n)
    assert accepted + quarantined + dups == records
    # the quarantine says where each bad record came from and why
    q = pq.read_table([Path(lake.store.uri(*r.parts, QUARANTINE)) for r in refs][0:1]).schema.names
    assert {"_topic", "_message", "_mid", "_reason", "_problems"} <= set(q)
    rows = [row for r in refs for row in pq.read_table(lake.store.uri(*r.parts, QUARANTINE)).to_pylist()]
    not_json = [r for r in rows if r["_reason"] == "malformed_message"]
    assert len(not_json) == 1 and not_json[0]["_topic"] == f"{base}/dev{100 % 7}/telemetry"
    assert not_json[0]["_message"] is not None and "not JSON" in not_json[0]["_problems"]
    hot = [r for r in rows if r["_reason"] == "not_a_number"]
    assert hot[0]["temperature"] == "hot" and hot[0]["_column"] == "temperature"
    # typed rows in the lake
    table = lake.read("sensors")
    assert table.num_rows == accepted
    assert str(table.schema.field("ts").type) == "timestamp[us, tz=UTC]"


def test_persistent_session_gets_messages_published_while_the_consumer_was_down(lake):
    topic = f"skiff-test/{uuid.uuid4().hex}/telemetry"
    source = MqttSource(topic=topic)
    spec = parse_spec({**SPEC})
    cid = f"persist-{uuid.uuid4().hex[:8]}"
    cfg = StreamConfig(batch_rows=500, batch_seconds=0.5, duration_s=30, session_expiry_s=120)

    first = StreamConsumer(spec, lake, source, cfg.model_copy(update={"max_messages": 200}), client_id=cid)
    t, out = start(first)
    publish(lambda i: topic, [good(i) for i in range(200)])
    r1 = finish(t, out)
    assert r1.counts["messages"] == 200
    # the consumer is gone; the broker queues for its session (stay below stock Mosquitto's 1000 limit)
    publish(lambda i: topic, [good(i) for i in range(200, 900)])
    second = StreamConsumer(spec, lake, source, cfg.model_copy(update={"max_messages": 700}), client_id=cid)
    t, out = start(second)
    r2 = finish(t, out)
    assert r2.counts["messages"] == 700
    accepted, quarantined, dups, msgs = lake_counts(lake)
    assert (accepted, quarantined, dups, msgs) == (900, 0, 0, 900)
    ids = lake.read("sensors", columns=["device_id", "ts"]).to_pylist()
    assert len({(r["device_id"], r["ts"]) for r in ids}) == 900
    # run ids continue the consumer's sequence
    runs = sorted(r.run_id for r in lake.all_runs("sensors"))
    assert runs[0].startswith(cid) and runs == [f"{cid}-{k:08d}" for k in range(1, len(runs) + 1)]


def test_shared_subscription_splits_one_stream_exactly_once(lake):
    base = f"skiff-test/{uuid.uuid4().hex}"
    group = uuid.uuid4().hex[:8]
    source = MqttSource(topic=f"$share/{group}/{base}/+/telemetry")
    spec = parse_spec(SPEC)
    n = 2000
    cfg = StreamConfig(batch_rows=400, batch_seconds=0.5, duration_s=40, session_expiry_s=120)
    consumers = [StreamConsumer(spec, lake, source, cfg, client_id=f"share-{k}-{uuid.uuid4().hex[:6]}")
                 for k in range(2)]
    started = [start(c) for c in consumers]
    publish(lambda i: f"{base}/dev{i % 5}/telemetry", [good(i) for i in range(n)])
    deadline = time.monotonic() + 30
    while sum(c.received for c in consumers) < n:
        assert time.monotonic() < deadline, f"only {sum(c.received for c in consumers)} of {n} arrived"
        time.sleep(0.05)
    for c in consumers:
        c.stop()
    results = [finish(t, out) for t, out in started]
    got = [r.counts["messages"] for r in results]
    assert sum(got) == n and all(g > 0 for g in got), got
    accepted, quarantined, dups, msgs = lake_counts(lake)
    assert (accepted, quarantined, dups, msgs) == (n, 0, 0, n)
    keys = lake.read("sensors", columns=["device_id", "ts"]).to_pylist()
    assert len({(k["device_id"], k["ts"]) for k in keys}) == n  # every message stored exactly once


def test_messages_of_a_run_that_failed_to_publish_are_delivered_again(lake, tmp_path):
    """Acknowledgement waits for the commit: a consumer whose lake write fails leaves its messages with
    the broker, and the next consumer with the same client id receives them."""
    topic = f"skiff-test/{uuid.uuid4().hex}/telemetry"
    source = MqttSource(topic=topic)
    spec = parse_spec(SPEC)
    cid = f"redeliver-{uuid.uuid4().hex[:8]}"
    (tmp_path / "not-a-folder").write_text("")
    broken = Lake(Store(str(tmp_path / "not-a-folder" / "lake")))
    cfg = StreamConfig(batch_rows=100, batch_seconds=0.5, duration_s=15, max_messages=300,
                       session_expiry_s=120)
    first = StreamConsumer(spec, broken, source, cfg, client_id=cid)
    t, out = start(first)
    publish(lambda i: topic, [good(i) for i in range(300)])
    with pytest.raises(StorageError, match="unacknowledged"):
        finish(t, out)
    assert first.result.runs == []
    second = StreamConsumer(spec, lake, source, cfg, client_id=cid)
    t, out = start(second)
    r2 = finish(t, out)
    assert r2.counts["messages"] == 300 and r2.counts["accepted"] == 300
    assert lake_counts(lake) == (300, 0, 0, 300)


def test_a_reconnect_to_the_session_does_not_store_redelivered_messages_twice(lake):
    """Another connection with the same client id takes the session over (the broker drops ours); paho
    reconnects, the resumed session delivers the unacknowledged messages again, and each is stored once."""
    topic = f"skiff-test/{uuid.uuid4().hex}/telemetry"
    source = MqttSource(topic=topic)
    spec = parse_spec(SPEC)
    cid = f"takeover-{uuid.uuid4().hex[:8]}"
    cfg = StreamConfig(batch_rows=10_000, batch_seconds=60, duration_s=30, session_expiry_s=120)
    consumer = StreamConsumer(spec, lake, source, cfg, client_id=cid)
    t, out = start(consumer)
    publish(lambda i: topic, [good(i) for i in range(300)])
    deadline = time.monotonic() + 10
    while consumer.received < 300:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    connections = consumer._connection
    kicker = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5, manual_ack=True)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 120  # keep the session when the kicker leaves
    kicker.connect("127.0.0.1", 1883, clean_start=False, properties=props)  # never acknowledges anything
    kicker.loop_start()
    time.sleep(0.3)
    kicker.disconnect()
    kicker.loop_stop()
    deadline = time.monotonic() + 15
    while consumer._connection == connections or consumer.received < 300:
        assert time.monotonic() < deadline, "the consumer did not reconnect and get its messages again"
        time.sleep(0.05)
    time.sleep(0.3)  # let any further redelivery arrive
    consumer.stop()
    result = finish(t, out)
    assert result.counts["messages"] == 300 and result.counts["duplicates"] == 0
    assert lake_counts(lake) == (300, 0, 0, 300)
    # everything was acknowledged: the session holds nothing more
    again = StreamConsumer(spec, lake, source, cfg.model_copy(update={"duration_s": 1.5}), client_id=cid)
    t, out = start(again)
    assert finish(t, out).counts["messages"] == 0


def _cli(tmp_path: Path, *args: str, timeout: float = 40) -> subprocess.Popen:
    spec_file = tmp_path / "sensors.yaml"
    spec_file.write_text(json.dumps(SPEC))
    return subprocess.Popen(
        [sys.executable, "-c", "import sys; from skiff.cli import main; sys.exit(main())",
         "--root", str(tmp_path / "root"), "stream", "--spec", str(spec_file), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])


def test_cli_max_messages_ends_with_a_summary(tmp_path):
    topic = f"skiff-test/{uuid.uuid4().hex}/telemetry"
    proc = _cli(tmp_path, "--topic", topic, "--max-messages", "300", "--batch-rows", "100",
                "--client-id", f"cli-{uuid.uuid4().hex[:6]}", "--duration", "30", "--session-expiry", "120", "--json")
    deadline = time.monotonic() + 20
    root = tmp_path / "root"
    # publish once the consumer has subscribed: retry until its first run appears
    while True:
        publish(lambda i: topic, [good(i) for i in range(300)])
        try:
            out, err = proc.communicate(timeout=3)
            break
        except subprocess.TimeoutExpired:
            assert time.monotonic() < deadline, "skiff stream did not stop"
    assert proc.returncode == 0, err
    s = json.loads(out)
    assert s["counts"]["messages"] == 300
    assert s["counts"]["accepted"] + s["counts"]["duplicates"] + s["counts"]["quarantined"] == 300
    assert len(s["runs"]) >= 3 and len(s["partitions"]) == 1
    assert Lake(Store(str(root / "lake"))).all_runs("sensors")


def test_cli_unreachable_broker_is_a_clear_error(tmp_path):
    spec = {**SPEC, "sources": [{"type": "mqtt", "topic": "x/y", "port": 1}]}
    spec_file = tmp_path / "sensors.yaml"
    spec_file.write_text(json.dumps(spec))
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from skiff.cli import main; sys.exit(main())",
         "--root", str(tmp_path / "root"), "stream", "--spec", str(spec_file), "--max-messages", "1"],
        capture_output=True, text=True, timeout=30, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 2, proc.stderr
    assert "MQTT broker 127.0.0.1:1" in proc.stderr and "unreachable" in proc.stderr


def test_cli_sigterm_flushes_the_buffer_and_exits_cleanly(tmp_path):
    import signal

    topic = f"skiff-test/{uuid.uuid4().hex}/telemetry"
    proc = _cli(tmp_path, "--topic", topic, "--batch-rows", "10000", "--batch-seconds", "60", "--duration", "40",
                "--client-id", f"term-{uuid.uuid4().hex[:6]}", "--session-expiry", "120", "--json")
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    deadline = time.monotonic() + 20
    while not any("consuming" in line for line in lines):
        assert proc.poll() is None, "".join(lines)
        assert time.monotonic() < deadline, "skiff stream did not subscribe"
        time.sleep(0.05)
    publish(lambda i: topic, [good(i) for i in range(500)])
    time.sleep(1.0)  # delivery to the consumer (well under a second for 500 messages here)
    proc.send_signal(signal.SIGTERM)
    out = proc.stdout.read()
    assert proc.wait(timeout=20) == 0, "".join(lines)
    s = json.loads(out)
    assert s["counts"]["messages"] == 500 and s["counts"]["accepted"] == 500
    assert len(s["runs"]) == 1  # nothing was due before the stop: the stop published the buffer
    assert Lake(Store(str(tmp_path / "root" / "lake"))).read("sensors").num_rows == 500


def test_cli_subscribes_to_each_topic_given_and_stores_every_message_once(tmp_path):
    """Two --topic filters on one consumer: the messages of both reach the lake once each, those of a topic
    matching neither never arrive, and the summary and run manifests name both filters."""
    base = f"skiff-test/{uuid.uuid4().hex}"
    filters = [f"{base}/site-a/+/telemetry", f"{base}/site-b/#"]
    proc = _cli(tmp_path, "--topic", filters[0], "--topic", filters[1], "--batch-rows", "50", "--batch-seconds",
                "0.3", "--duration", "40", "--client-id", f"multi-{uuid.uuid4().hex[:6]}", "--session-expiry", "120",
                "--json")
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    deadline = time.monotonic() + 20
    while not any("consuming" in line for line in lines):
        assert proc.poll() is None, "".join(lines)
        assert time.monotonic() < deadline, "skiff stream did not subscribe"
        time.sleep(0.05)
    assert any(filters[0] in line and filters[1] in line for line in lines if "consuming" in line), lines
    topics = [f"{base}/site-a/d{i % 3}/telemetry" if i % 3 else f"{base}/site-b/d{i % 2}/x/y" for i in range(300)]
    publish(lambda i: topics[i], [good(i) for i in range(300)])
    publish(lambda i: f"{base}/site-c/d0/telemetry", [good(1000 + i) for i in range(20)])  # neither filter
    lake = Lake(Store(str(tmp_path / "root" / "lake")))
    while lake_counts(lake)[3] < 300:
        assert time.monotonic() < deadline + 20, lake_counts(lake)
        time.sleep(0.1)
    time.sleep(0.5)  # anything more (a message of neither filter, a second copy) would arrive meanwhile
    proc.terminate()
    out = proc.stdout.read()
    assert proc.wait(timeout=20) == 0, "".join(lines)
    s = json.loads(out)
    assert s["topics"] == filters
    assert s["counts"]["messages"] == 300 and s["counts"]["accepted"] == 300 and s["counts"]["duplicates"] == 0
    assert lake_counts(lake) == (300, 0, 0, 300)
    stored = lake.read("sensors")
    assert stored.num_rows == 300
    assert len(set(zip(stored.column("device_id").to_pylist(), stored.column("ts").to_pylist(), strict=True))) == 300
    manifests = [json.loads((Path(lake.store.uri(*ref.parts)) / MANIFEST).read_text()) for ref in lake.all_runs("sensors")]
    assert {m["sources"][0]["topic"] for m in manifests} == {", ".join(filters)}


def test_cli_refuses_topic_filters_that_overlap(tmp_path):
    proc = _cli(tmp_path, "--topic", "s/site-a/+", "--topic", "s/+/d1", "--max-messages", "1")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2, err
    assert "'s/site-a/+' and 's/+/d1' overlap" in " ".join(err.split()), err


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_broker(folder: Path, port: int, persistence: bool) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "mosquitto.conf"
    # started as root, mosquitto switches to its own user, who cannot write the test's folder
    user = "user root\n" if os.geteuid() == 0 else ""
    conf.write_text(f"{user}listener {port} 127.0.0.1\nallow_anonymous true\npersistence {str(persistence).lower()}\n"
                    f"persistence_location {folder}/\nmax_queued_messages 5000\n")
    proc = subprocess.Popen([shutil.which("mosquitto"), "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not service_up(port):
        assert proc.poll() is None and time.monotonic() < deadline, "private mosquitto did not start"
        time.sleep(0.05)
    return proc


def _stop_broker(proc: subprocess.Popen) -> None:
    proc.terminate()  # SIGTERM: mosquitto writes its persistence file on the way out
    proc.wait(timeout=10)


@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="no mosquitto binary to start a private broker")
@pytest.mark.parametrize("persistence", [True, False])
def test_queued_messages_survive_a_broker_restart_only_with_persistence(lake, tmp_path, persistence):
    """A private broker (not the shared one) restarted while the consumer is away: with
    `persistence true` the session and its queued messages survive; without it they are gone. 1,500
    messages are queued, above stock Mosquitto's limit, so the broker runs with max_queued_messages 5000."""
    port = _free_port()
    folder = tmp_path / "broker"
    topic = f"skiff-test/{uuid.uuid4().hex}/telemetry"
    source = MqttSource(topic=topic, port=port)
    spec = parse_spec(SPEC)
    cid = f"restart-{uuid.uuid4().hex[:8]}"
    cfg = StreamConfig(batch_rows=1000, batch_seconds=0.5, duration_s=1.5, session_expiry_s=600)
    broker = _start_broker(folder, port, persistence)
    try:
        first = StreamConsumer(spec, lake, source, cfg, client_id=cid)
        t, out = start(first)  # subscribed: the broker holds the session from here on
        first.stop()
        assert finish(t, out).counts["messages"] == 0
        publish(lambda i: topic, [good(i) for i in range(1500)], port=port)  # queued while away
        _stop_broker(broker)
        broker = _start_broker(folder, port, persistence)
        again = StreamConsumer(spec, lake, source, cfg.model_copy(update={"max_messages": 1500}), client_id=cid)
        t, out = start(again)
        got = finish(t, out).counts["messages"]
    finally:
        _stop_broker(broker)
    assert got == (1500 if persistence else 0)
    assert lake_counts(lake)[0] == got
