"""Benchmark: `skiff stream` with windows and online push against a bare paho subscriber on the same broker.

    .venv/bin/python bench/stream.py            # 200,000 readings
    .venv/bin/python bench/stream.py --n 20000  # a quick run
    .venv/bin/python bench/stream.py --n 20000 --with-scoring  # and a registered model scoring each reading

In one run, on a private Mosquitto (started here with ``max_queued_messages 0``, so a consumer slower
than the publisher makes the broker queue instead of dropping; stock Mosquitto drops beyond 1,000):

1. the **floor**: a publisher process sends N readings at QoS 1 and a bare paho subscriber (QoS 1, no
   parsing) only counts them; its rate is messages over the time from the first to the last arrival;
2. the **stream**: the same N readings (realistic JSON, with a few not-JSON, out-of-range, late and
   duplicate ones) through ``StreamConsumer`` with the spec's windows (1-minute tumbling
   mean/min/max/count/last, 15-minute sliding trend), lake runs, and the Feast online store (SQLite):
   closed windows through their push sources, each device's latest reading into the dataset's view.
   The sustained rate is messages over the time from the first arrival to the last run committed.
   Latency publish -> online store: for every latest reading written online, the wall time after the
   write minus the time the publisher stamped into the reading (``sent``, a non-feature column).

It prints both rates, their ratio, p50/p99 latency, and reconciles published = stored + quarantined +
duplicates from the lake's manifests. ``--with-scoring`` adds scoring on arrival (``windows.scoring``): a
logistic regression on temperature and humidity, registered with its exact ONNX export, scores every stored
reading in the consumer and publishes each score to a topic (QoS 1); it prints the scores kept in the lake
(one per stored reading) and the median time to score one poll.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SPEC = {
    "name": "benchsensors",
    "entity_key": "device_id",
    "event_timestamp": "ts",
    "columns": {
        "device_id": {"type": "string", "required": True, "missing": "reject"},
        "ts": {"type": "datetime", "required": True, "missing": "reject"},
        "temperature": {"type": "float", "min": -50, "max": 150},
        "humidity": {"type": "float", "min": 0, "max": 100},
        "status": {"type": "category", "allowed": ["ok", "warn", "fail"]},
        "sent": {"type": "float", "feature": False, "description": "publisher's wall clock (latency probe)"},
    },
    "windows": {
        "allowed_lateness": "30s",
        "define": [
            {"name": "m1", "size": "1m", "columns": ["temperature", "humidity"],
             "aggregations": ["mean", "min", "max", "count", "last"]},
            {"name": "m15", "type": "sliding", "size": "15m", "slide": "1m", "columns": ["temperature"],
             "aggregations": ["trend", "mean"]},
        ],
    },
}
START = dt.datetime(2026, 11, 25, tzinfo=dt.UTC).timestamp()


def payload(i: int, devices: int) -> bytes:
    """Reading i: device i % devices, one reading per device per second of event time."""
    if i % 5000 == 4999:
        return b'{"device_id": "broken", "ts": '  # not JSON
    sec = i // devices
    if i % 2000 == 1999:
        sec -= 1800  # 30 minutes behind: its windows have closed (late)
    j = i - 1 if i % 3000 == 2999 else i  # a redelivered reading (same device and time)
    dev = f"dev-{j % devices:04d}"
    ts = dt.datetime.fromtimestamp(START + (j // devices if j != i else sec), dt.UTC).isoformat()
    temp = 200.0 if i % 4000 == 3999 else round(20 + 5 * np.sin(i / 1000) + (i % 7) * 0.1, 3)
    return json.dumps({"device_id": dev, "ts": ts, "temperature": temp, "humidity": 40 + i % 30,
                       "status": "ok", "sent": time.time()}).encode()


def publisher(port: int, topic: str, n: int, devices: int) -> None:
    import paho.mqtt.client as mqtt

    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{uuid.uuid4().hex[:6]}",
                      protocol=mqtt.MQTTv5)
    pub.max_inflight_messages_set(1000)
    pub.max_queued_messages_set(1000)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    last = None
    for i in range(n):
        p = payload(i, devices)
        while True:
            info = pub.publish(f"{topic}/dev{i % devices}", p, qos=1)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                last = info
                break
            time.sleep(0.0005)
    if last is not None:
        last.wait_for_publish(120)
    time.sleep(0.5)
    pub.disconnect()
    pub.loop_stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_broker(folder: Path, port: int) -> subprocess.Popen[bytes]:
    conf = folder / "mosquitto.conf"
    user = "user root\n" if os.geteuid() == 0 else ""
    conf.write_text(f"{user}listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "max_queued_messages 0\nmax_inflight_messages 0\n")
    exe = shutil.which("mosquitto")
    if exe is None:
        sys.exit("mosquitto not found: the benchmark starts a private broker")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            if time.monotonic() > deadline:
                sys.exit("private mosquitto did not start")
            time.sleep(0.05)


def floor(port: int, n: int, devices: int) -> float:
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    topic = f"bench/{uuid.uuid4().hex[:8]}"
    got = {"n": 0, "first": 0.0, "last": 0.0}
    done = threading.Event()

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        if not got["n"]:
            got["first"] = now
        got["n"] += 1
        got["last"] = now
        if got["n"] >= n:
            done.set()

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-floor-{uuid.uuid4().hex[:6]}",
                      protocol=mqtt.MQTTv5)
    sub.on_message = on_message
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.ReceiveMaximum = 20_000
    sub.connect("127.0.0.1", port, properties=props)
    sub.subscribe(f"{topic}/#", qos=1)
    sub.loop_start()
    time.sleep(0.5)
    p = mp.get_context("spawn").Process(target=publisher, args=(port, topic, n, devices))
    p.start()
    done.wait(600)
    p.join()
    sub.disconnect()
    sub.loop_stop()
    return got["n"] / max(got["last"] - got["first"], 1e-9)


class LatencyProbe:
    """The online writer, timed: publish (the reading's `sent`) to written in the online store."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.latencies: list[float] = []
        self.writes = 0

    def write(self, latest, closed):  # type: ignore[no-untyped-def]
        took = self.inner.write(latest, closed)  # type: ignore[attr-defined]
        now = time.time()
        if latest.num_rows:
            self.latencies += [now - s for s in latest.column("sent").to_pylist() if s is not None]
        self.writes += 1
        return took


def register_model(root: Path) -> object:
    """A small anomaly model on temperature and humidity, registered with its exact ONNX export."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from skiff.onnx_export import export_onnx
    from skiff.registry import ModelRegistry
    from skiff.storage import Store

    rng = np.random.default_rng(0)
    x = pd.DataFrame({"temperature": rng.uniform(10, 35, 600), "humidity": rng.uniform(30, 80, 600)})
    y = (x.temperature + 0.1 * x.humidity + rng.normal(0, 1, 600)) > 29
    pipe = Pipeline([("sc", StandardScaler()), ("est", LogisticRegression())]).fit(x, y)
    schema = {"temperature": "float", "humidity": "float"}
    info = export_onnx(pipe, x[400:], root / "model.onnx", input_schema=schema, features=list(schema))
    registry = ModelRegistry(Store(str(root / "registry")))
    registry.register("bench-anomaly", pipe, {"features": list(schema), "input_schema": schema,
                                              "problem_type": "binary", "classes": [False, True],
                                              "extra": {"onnx": info}},
                      files={"model.onnx": root / "model.onnx"} if info["exact"] else {})
    return registry


def stream(port: int, n: int, devices: int, root: Path, with_features: bool,
           with_scoring: bool = False) -> dict[str, float]:
    from components.features.logic import apply_definitions
    from components.stream.logic import StreamConfig, StreamConsumer
    from skiff.feature_store import feature_sources, open_store
    from skiff.lake import Lake
    from skiff.spec import MqttSource, parse_spec
    from skiff.storage import Store
    from skiff.stream_features import FeastStreamWriter

    topic = f"bench/{uuid.uuid4().hex[:8]}"
    registry = None
    if with_scoring:
        registry = register_model(root)
        spec = parse_spec({**SPEC, "windows": {**SPEC["windows"], "scoring": {  # type: ignore[dict-item]
            "model": "bench-anomaly", "topic": f"{topic}-scores/all"}}})
    else:
        spec = parse_spec(SPEC)
    lake = Lake(Store(str(root / "lake")))
    probe = None
    if with_features:
        t0 = time.monotonic()
        store = open_store(REPO / "feature_repo", root / "feast", feature_sources(lake).uri())
        apply_definitions(store, spec, feature_sources(lake).uri())
        probe = LatencyProbe(FeastStreamWriter(store, spec, lake))
        print(f"  feast store opened and applied in {time.monotonic() - t0:.1f} s (once per process)")
    consumer = StreamConsumer(spec, lake, MqttSource(topic=f"{topic}/#", port=port),
                              StreamConfig(batch_rows=10_000, batch_seconds=2.0, max_messages=n, duration_s=900,
                                           session_expiry_s=600),
                              client_id=f"bench-{uuid.uuid4().hex[:6]}", online=probe,
                              registry=registry)  # type: ignore[arg-type]
    first: list[float] = []
    orig = consumer._on_message

    def on_message(*a):  # type: ignore[no-untyped-def]
        if not first:
            first.append(time.monotonic())
        orig(*a)

    consumer._on_message = on_message  # type: ignore[method-assign]
    out: dict[str, object] = {}
    t = threading.Thread(target=lambda: out.setdefault("r", consumer.run()), daemon=True)
    t.start()
    while not consumer._subscribed.is_set():
        time.sleep(0.02)
    p = mp.get_context("spawn").Process(target=publisher, args=(port, topic, n, devices))
    p.start()
    t.join(900)
    p.join()
    ended = time.monotonic()
    result = out["r"]
    c = result.counts  # type: ignore[attr-defined]
    stored = quarantined = dups = 0
    for ref in lake.all_runs(spec.name):
        m = lake.manifest(ref).counts
        assert m is not None
        stored, quarantined, dups = stored + m.accepted, quarantined + m.quarantined, dups + m.duplicates
    lat = np.array(probe.latencies) if probe is not None and probe.latencies else np.array([np.nan])
    scores = score_mean = 0.0
    if with_scoring:
        import pyarrow.parquet as pq

        from components.stream.score import SCORES_FILE

        scores = float(sum(pq.read_metadata(lake.store.uri(*ref.parts, SCORES_FILE)).num_rows
                           for ref in lake.all_runs(spec.name)))
        h = next(iter(consumer.metrics.score_seconds.collect())).samples
        count = next(x.value for x in h if x.name.endswith("_count"))
        total = next(x.value for x in h if x.name.endswith("_sum"))
        score_mean = total / count if count else 0.0
    return {"rate": c["messages"] / (ended - first[0]), "messages": c["messages"], "stored": stored,
            "quarantined": quarantined, "duplicates": dups, "p50": float(np.nanpercentile(lat, 50)),
            "p99": float(np.nanpercentile(lat, 99)), "late": result.reasons.get("late", 0),  # type: ignore[attr-defined]
            "runs": len(result.runs), "probes": int(np.isfinite(lat).sum()),  # type: ignore[attr-defined]
            "scores": scores, "score_mean": score_mean}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000, help="readings to publish")
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--no-features", action="store_true", help="skip the Feast online push")
    ap.add_argument("--with-scoring", action="store_true", help="score each stored reading with a registered "
                    "model (ONNX) and publish the scores")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory(prefix="skiff-bench-stream-") as tmp:
        root = Path(tmp)
        port = free_port()
        broker = start_broker(root, port)
        try:
            print(f"{args.n:,} readings, {args.devices} devices, QoS 1, private mosquitto :{port}")
            base = floor(port, args.n, args.devices)
            print(f"floor (bare paho subscriber, counting only): {base:,.0f} msg/s")
            r = stream(port, args.n, args.devices, root, not args.no_features, args.with_scoring)
        finally:
            broker.terminate()
            broker.wait(10)
    what = f"cleansing + windows + lake + {'online push' if not args.no_features else 'no push'}"
    what += " + scoring" if args.with_scoring else ""
    print(f"skiff stream ({what}): "
          f"{r['rate']:,.0f} msg/s sustained, {int(r['runs'])} runs")
    print(f"ratio stream / floor: {r['rate'] / base:.2f}x   (target >= 0.30x, >= 5,000 msg/s)")
    print(f"publish -> online store: p50 {r['p50'] * 1000:.0f} ms, p99 {r['p99'] * 1000:.0f} ms over "
          f"{int(r['probes']):,} latest-reading writes   (target p99 < 1 s)")
    total = r["stored"] + r["quarantined"] + r["duplicates"]
    # a message is one record here (no arrays), so published = stored + quarantined + duplicates
    ok = total == args.n == r["messages"]
    if args.with_scoring:
        print(f"scores in the lake: {int(r['scores']):,} (one per stored reading: "
              f"{'ok' if r['scores'] == r['stored'] else 'MISMATCH'}), {r['score_mean'] * 1000:.1f} ms to score "
              "a poll (mean)")
        ok = ok and r["scores"] == r["stored"]
    print(f"reconcile: published {args.n:,} = stored {int(r['stored']):,} + quarantined {int(r['quarantined']):,} "
          f"(late {int(r['late']):,}) + duplicates {int(r['duplicates']):,} = {int(total):,}: {'ok' if ok else 'MISMATCH'}")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
