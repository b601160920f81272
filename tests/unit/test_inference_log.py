"""The inference log: counts reconcile with the sampling rate, a full queue drops (counted) instead of
blocking, files are hour partitions pyarrow reads with the contract's schema, PII is hashed or dropped."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import threading
import time

import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from skiff.errors import ConfigError, UsageError
from skiff.inference_log import (
    InferenceLogWriter,
    ModelLog,
    hash_key_from_env,
    log_partitions,
    log_schema,
    read_log,
)
from skiff.spec import DatasetSpec
from skiff.storage import Store

SCHEMA = {"email": "string", "age": "integer", "plan": "category", "spend": "float", "ssn": "string"}
KEY = b"k" * 32
T0 = dt.datetime(2026, 5, 1, 10, 59, 59, tzinfo=dt.UTC)


def _cfg(rate=1.0):
    return ModelLog("churn", SCHEMA, sample_rate=rate, pii={"email": "hash", "ssn": "drop"})


def _row(i):
    return {"email": f"user{i % 7}@example.com", "age": 20 + i % 50, "plan": "pro" if i % 3 else "basic",
            "spend": i * 1.5, "ssn": "123-45-6789"}


def test_counts_reconcile_with_the_sampling_rate_and_every_logged_row_is_in_the_files(tmp_path):
    store = Store(str(tmp_path / "inference"))
    with InferenceLogWriter(store, [_cfg(0.3)], hash_key=KEY, seed=7, flush_rows=500) as w:
        for i in range(5000):
            w.offer("churn", 2, f"req-{i}", [_row(i)], ["yes"], probabilities=[0.8], latency_ms=1.0,
                    when=T0 + dt.timedelta(seconds=i % 2))  # straddles an hour boundary
        w.offer("churn", 2, "err-1", [_row(1)], [None], status=500, error="boom", force=True, when=T0)
        assert w.flush(timeout=30)
        c = w.counters.snapshot()["churn"]
    assert c["offered"] == 5001
    assert c["offered"] == c["unsampled"] + c["dropped"] + c["accepted"]
    assert c["accepted"] == c["logged"] + c["failed"] + c["pending"] and c["pending"] == 0 and c["failed"] == 0
    assert 0.27 < (c["accepted"] - 1) / 5000 < 0.33  # the rate holds (fixed seed)
    hours = log_partitions(store, "churn")
    assert [h.hour for _, h in hours] == [10, 11] and {v for v, _ in hours} == {2}
    tables = [read_log(store, "churn", 2, h) for _, h in hours]
    assert sum(t.num_rows for t in tables) == c["rows_written"] == c["logged"]
    forced = [r for t in tables for r in t.to_pylist() if r["request_id"] == "err-1"]
    assert forced and forced[0]["sampled"] is False and forced[0]["status"] == 500 and forced[0]["error"] == "boom"
    assert all(r["sampled"] and r["sample_rate"] == 0.3 for t in tables for r in t.to_pylist()
               if r["request_id"] != "err-1")


def test_files_follow_the_schema_pii_is_hashed_or_dropped_and_hive_readers_see_partitions(tmp_path):
    store = Store(str(tmp_path / "inference"))
    with InferenceLogWriter(store, [_cfg()], hash_key=KEY) as w:
        w.offer("churn", 3, "r1", [_row(1), _row(2)], ["yes", "no"], probabilities=[0.9, 0.2], latency_ms=2.5,
                when=T0)
    files = sorted((tmp_path / "inference" / "churn" / "version=3" / "date=2026-05-01" / "hour=10")
                   .glob("*.parquet"))
    assert len(files) == 1 and not list(files[0].parent.glob(".tmp-*"))
    table = pq.read_table(files[0])
    assert table.schema.equals(log_schema(SCHEMA, {"email": "hash", "ssn": "drop"}), check_metadata=False)
    rows = table.to_pylist()
    assert [r["row"] for r in rows] == [0, 1] and rows[1]["outputs"] == {"prediction": "no", "probability": 0.2}
    inputs = rows[0]["inputs"]
    assert "ssn" not in inputs and inputs["age"] == 21 and inputs["plan"] == "pro"
    assert inputs["email"] == hmac.new(KEY, b"user1@example.com", hashlib.sha256).hexdigest()
    assert b"user1@example.com" not in files[0].read_bytes() and b"123-45-6789" not in files[0].read_bytes()
    ds = pads.dataset(str(tmp_path / "inference" / "churn"), format="parquet", partitioning="hive")
    assert ds.to_table().num_rows == 2


def test_a_full_queue_drops_and_counts_without_blocking_the_caller(tmp_path):
    store = Store(str(tmp_path / "inference"))
    gate = threading.Event()
    w = InferenceLogWriter(store, [_cfg()], hash_key=KEY, queue_size=10, flush_rows=1)
    real_write = w.store.write_bytes

    def slow_write(data, *parts):  # a stalled object store: the writer thread is stuck
        gate.wait(30)
        return real_write(data, *parts)

    w.store.write_bytes = slow_write  # type: ignore[method-assign]
    try:
        started = time.perf_counter()
        worst = 0.0
        for i in range(2000):
            t = time.perf_counter()
            w.offer("churn", 1, f"r{i}", [_row(i)], ["yes"], when=T0)
            worst = max(worst, time.perf_counter() - t)
        elapsed = time.perf_counter() - started
        c = w.counters.snapshot()["churn"]
        # accepted: at most the queue (10) twice — the batch the writer drained before it stalled, and the
        # queue refilled behind it — and a couple offered while it was draining
        assert c["dropped"] >= 2000 - 22 and c["accepted"] + c["dropped"] == 2000
        assert worst < 0.05 and elapsed < 2.0, (worst, elapsed)  # never waited for the stuck writer
    finally:
        gate.set()
        w.close()
    c = w.counters.snapshot()["churn"]
    assert c["logged"] == c["accepted"] and c["pending"] == 0
    assert c["offered"] == c["unsampled"] + c["dropped"] + c["logged"]


def test_bad_values_become_null_and_are_counted_and_a_failed_write_is_counted(tmp_path):
    store = Store(str(tmp_path / "inference"))
    with InferenceLogWriter(store, [ModelLog("m", {"age": "integer"})]) as w:
        w.offer("m", 1, "r", [{"age": "not a number"}, {"age": 5}], ["a", "b"], when=T0)
        assert w.flush()
        (tmp_path / "blocker").write_text("")  # a file where the log folder should be: writes fail
        w.store = Store(str(tmp_path / "blocker"))
        w.offer("m", 1, "r2", [{"age": 1}], ["a"], when=T0)
        assert w.flush()
    c = w.counters.snapshot()["m"]
    assert c["invalid_values"] == 1 and c["failed"] == 1 and c["logged"] == 1
    assert read_log(store, "m", 1, T0).column("inputs").to_pylist() == [{"age": None}, {"age": 5}]


def test_configuration_errors_are_clear():
    with pytest.raises(ConfigError, match="SKIFF_INFERENCE_LOG_KEY"):
        InferenceLogWriter(Store("/tmp/unused-inference-log"), [_cfg()])
    with pytest.raises(ConfigError, match="at least 16"):
        hash_key_from_env({"SKIFF_INFERENCE_LOG_KEY": "short"})
    assert hash_key_from_env({}) is None
    with pytest.raises(UsageError, match="between 0 and 1"):
        ModelLog("m", {"a": "float"}, sample_rate=1.5)
    with pytest.raises(UsageError, match="not inputs"):
        ModelLog("m", {"a": "float"}, pii={"b": "drop"})
    with pytest.raises(UsageError, match="no inference log"):
        InferenceLogWriter(Store("/tmp/unused-inference-log"), []).offer("x", 1, "r", [], [])


def test_the_spec_marks_pii_and_the_fingerprint_ignores_the_serving_fields(tmp_path):
    from skiff.spec import spec_fingerprint

    raw = {"name": "people", "entity_key": "id", "target": "churned", "problem_type": "binary",
           "columns": {"id": {"type": "string"}, "email": {"type": "string", "pii": "hash"},
                       "ssn": {"type": "string", "pii": "drop"}, "age": {"type": "integer"},
                       "churned": {"type": "boolean"}}}
    spec = DatasetSpec.model_validate(raw)
    cfg = ModelLog.from_spec("people", {"email": "string", "ssn": "string", "age": "integer"}, spec)
    assert cfg.pii == {"email": "hash", "ssn": "drop"} and cfg.prediction_type == "string"
    plain = {**raw, "columns": {k: {"type": v["type"]} for k, v in raw["columns"].items()}}
    assert spec_fingerprint(spec) == spec_fingerprint(DatasetSpec.model_validate(plain))


def test_counters_export_as_prometheus_metrics_and_a_version_gives_its_log(tmp_path):
    from prometheus_client import CollectorRegistry, generate_latest

    from skiff.inference_log import model_log_for_version
    from skiff.registry import VersionMetadata

    meta = VersionMetadata(name="people", version=4, problem_type="regression", input_schema={"email": "string",
                           "age": "integer"}, dataset={"spec": {"name": "people", "entity_key": "email",
                           "columns": {"email": {"type": "string", "pii": "hash"}, "age": {"type": "integer"},
                                       "spend": {"type": "float"}}, "target": "spend", "problem_type": "regression"}})
    cfg = model_log_for_version(meta, sample_rate=0.5)
    assert (cfg.model, cfg.pii, cfg.prediction_type, cfg.sample_rate) == ("people", {"email": "hash"}, "float", 0.5)
    registry = CollectorRegistry()
    with InferenceLogWriter(Store(str(tmp_path / "inference")), [cfg], hash_key=KEY, seed=1) as w:
        registry.register(w.counters.collector())
        for i in range(100):
            w.offer("people", 4, f"r{i}", [{"email": "a@b.c", "age": i}], [float(i)], when=T0)
        assert w.flush()
        text = generate_latest(registry).decode()
        c = w.counters.snapshot()["people"]
    assert f'skiff_inference_log_offered_total{{model="people"}} {float(c["offered"])}' in text
    assert f'skiff_inference_log_logged_total{{model="people"}} {float(c["logged"])}' in text
    assert 'skiff_inference_log_pending{model="people"} 0.0' in text and c["logged"] + c["unsampled"] == 100


def test_the_log_is_its_own_prefix_of_the_root_not_the_lake(tmp_path):
    from skiff import layout
    from skiff.config import Settings
    from skiff.inference_log import log_store, partition_parts

    settings = Settings(root=str(tmp_path / "root"))
    store = log_store(settings)
    assert store.uri() == str(tmp_path / "root" / layout.INFERENCE)
    assert not store.uri().startswith(settings.lake_uri)
    # serving writes this prefix and no other one; the monitor (a pipeline) reads it
    assert layout.ACCESS["serving"]["write"] == (layout.INFERENCE,)
    assert layout.INFERENCE in layout.ACCESS["pipeline"]["read"]
    assert layout.INFERENCE not in layout.ACCESS["pipeline"]["write"]
    assert partition_parts("churn", 2, dt.datetime(2026, 5, 1, 10, 30, tzinfo=dt.UTC)) == (
        "churn", "version=2", "date=2026-05-01", "hour=10")
