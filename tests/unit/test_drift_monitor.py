"""``skiff monitor run`` end to end on the local engines: a registered version trained on a lake partition,
its traffic logged by the inference-log writer (one hour window shifted by 0.2 standard deviations in one
feature), the monitor scoring each window against a reference built from the training data and the
version's predictions, the scores stored in the control plane and read back, a re-run replacing them."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from skiff.config import Settings
from skiff.control_plane import ControlPlane
from skiff.inference_log import InferenceLogWriter, ModelLog, log_store
from skiff.lake import Lake
from skiff.monitoring.reference import CACHE_FILE, CACHE_PREFIX
from skiff.monitoring.runner import monitor_model
from skiff.registry import ModelRegistry
from skiff.spec import DatasetSpec
from skiff.storage import Store
from tests.conftest import REPO

MODEL, DATE = "accounts-churn", "2026-04-01"
SPEC = {"name": "accounts", "entity_key": "email", "target": "churned", "problem_type": "binary",
        "columns": {"email": {"type": "string", "pii": "hash"}, "usage": {"type": "float"},
                    "seats": {"type": "integer", "drift_threshold": 0.05}, "plan": {"type": "category"},
                    "churned": {"type": "string"}}}
FEATURES = ["email", "usage", "seats", "plan"]
SCHEMA = {"email": "string", "usage": "float", "seats": "integer", "plan": "category"}
KEY = b"monitor-test-key-0123456789"
H0 = dt.datetime(2026, 5, 1, 8, tzinfo=dt.UTC)


def _frame(rng, n, shift=0.0):
    usage = rng.normal(10 + 3 * shift, 3, n)
    return pd.DataFrame({"email": [f"u{i}@example.com" for i in rng.integers(0, 10**6, n)], "usage": usage,
                         "seats": rng.poisson(4, n), "plan": rng.choice(["free", "pro", "team"], n, p=[.5, .3, .2]),
                         "churned": np.where(usage + rng.normal(0, 2, n) < 8, "yes", "no")})


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("monitor") / ".skiff"
    settings = Settings(root=str(root))
    rng = np.random.default_rng(42)
    train = _frame(rng, 8000)
    lake = Lake.from_settings(settings)
    with lake.publish_run("accounts", "r1", DATE) as d:
        pq.write_table(pa.Table.from_pandas(train, preserve_index=False), d / "part-00000.parquet")
        (d / "_manifest.json").write_text(json.dumps({"finished_at": f"{DATE}T12:00:00+00:00"}))
    model = Pipeline([("prep", ColumnTransformer([("num", StandardScaler(), ["usage", "seats"]),
                                                  ("cat", OneHotEncoder(), ["plan"])])),  # email: dropped
                      ("clf", LogisticRegression())]).fit(train[FEATURES], train["churned"])
    registry = ModelRegistry.from_settings(settings)
    registry.register(MODEL, model, {"problem_type": "binary", "features": FEATURES, "input_schema": SCHEMA,
                                     "dataset": {"name": "accounts", "partitions": [DATE], "spec": SPEC}})
    spec = DatasetSpec.model_validate(SPEC)
    with InferenceLogWriter(log_store(settings), [ModelLog.from_spec(MODEL, SCHEMA, spec)], hash_key=KEY) as writer:
        for hour, shift, n in ((0, 0.0, 2000), (1, 0.0, 2000), (2, 0.0, 2000), (3, 0.2, 2000), (4, 0.0, 50)):
            traffic = _frame(rng, n, shift)
            labels = model.predict(traffic[FEATURES])
            for i, row in enumerate(traffic[FEATURES].to_dict(orient="records")):
                writer.offer(MODEL, 1, f"h{hour}-{i}", [row], [labels[i]], latency_ms=0.5,
                             when=H0 + dt.timedelta(hours=hour, seconds=i % 3000))
        assert writer.flush()
        assert writer.counters.snapshot()[MODEL]["dropped"] == 0
    return settings


def _cli(settings, *args):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("SKIFF_CONFIG", None)
    env.pop("SKIFF_DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "skiff", "--root", settings.root, "monitor", "run", *args],
                          capture_output=True, text=True, env=env, cwd=settings.root.rsplit("/", 1)[0], timeout=300)


def test_the_monitor_flags_only_the_shifted_window_and_stores_every_score(world):
    proc = _cli(world, MODEL, "--json")
    assert proc.returncode == 1, proc.stderr[-3000:] + proc.stdout[-3000:]  # a window drifted: the gate says no
    out = json.loads(proc.stdout)
    windows = out["windows"]
    assert [w["window_start"][11:13] for w in windows] == ["08", "09", "10", "11", "12"]
    assert [w["drifted"] for w in windows[:4]] == [[], [], [], ["usage"]]
    assert windows[4]["skipped"] == "50 rows, fewer than 200" and windows[4]["results"] == []
    assert out["drifted_windows"] == 1
    scored = {r["feature"] for r in windows[0]["results"]}
    assert scored == {"usage", "seats", "plan", ""}  # the hashed email is not compared; "" = predictions
    seats = next(r for r in windows[0]["results"] if r["feature"] == "seats" and r["metric"] == "psi")
    assert seats["threshold"] == 0.05  # the spec's drift_threshold

    store = ControlPlane.from_settings(world)
    stored = store.monitoring_results(MODEL, 1)
    assert len(stored) == sum(len(w["results"]) for w in windows) == 4 * 8
    assert {r.window_start for r in stored if r.drifted} == {"2026-05-01T11:00:00+00:00"}
    # the reference, cached among the artifacts (the monitor only reads the log; the log is not in the lake)
    assert Store(world.artifacts_uri).exists(CACHE_PREFIX, MODEL, "version=1", CACHE_FILE)
    assert not Store(world.lake_uri).exists("inference")
    assert (Path(world.root) / "inference" / MODEL / "version=1").is_dir()

    again = monitor_model(world, MODEL, version=1, since=H0 + dt.timedelta(hours=3))  # re-run: replaced
    assert [r.drifted for r in again] == [["usage"], []]
    assert len(store.monitoring_results(MODEL, 1)) == 4 * 8


def test_the_human_table_and_a_model_without_a_log(world):
    proc = _cli(world, MODEL, "--since", "2026-05-01T08:00", "--version", "1")
    assert proc.returncode == 1 and "usage" in proc.stdout and "1 of 5 window(s) drifted" in proc.stdout
    proc = _cli(world, "no-such-model")
    assert proc.returncode == 2 and "no inference log for model 'no-such-model'" in proc.stderr
    proc = _cli(world, MODEL, "--since", "yesterday")
    assert proc.returncode == 2 and "not an ISO date/time" in proc.stderr


def test_a_reference_published_in_the_version_folder_is_used_before_the_lake(world, tmp_path):
    from skiff.monitoring.drift import Reference
    from skiff.monitoring.reference import REFERENCE_FILE, reference_for_version, reference_from_frame

    registry = ModelRegistry.from_settings(world)
    v1 = registry.get(MODEL, 1)
    frame = _frame(np.random.default_rng(9), 3000)
    published = reference_from_frame(v1.metadata, frame, registry.load_model(MODEL, 1))
    assert set(published.features) == {"usage", "seats", "plan"} and published.prediction is not None
    assert published.prediction.categories == ("no", "yes")
    path = tmp_path / REFERENCE_FILE
    path.write_text(json.dumps(published.to_dict()))
    registry.register(MODEL, registry.load_model(MODEL, 1), {**v1.metadata.model_dump(exclude={"version", "files"})},
                      files={REFERENCE_FILE: path})
    got = reference_for_version(world, MODEL, 2)
    # the file is taken as published, numbered as the version it was published with
    assert got == dataclasses.replace(Reference.from_dict(published.to_dict()), version=2)
    assert got.features["usage"].rows == 3000


def test_the_latest_scores_are_prometheus_metrics_in_a_file_and_from_the_control_plane(world, tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    from skiff.monitoring.metrics import DriftCollector, drift_metrics

    path = tmp_path / "textfile" / "skiff_drift.prom"
    proc = _cli(world, MODEL, "--metrics-file", str(path))
    assert proc.returncode == 1, proc.stderr[-2000:]
    families = {f.name: f for f in text_string_to_metric_families(path.read_text())}
    detected = {(s.labels["feature"], s.labels["metric"]): s.value for s in families["skiff_drift_detected"].samples}
    # the latest scored window (11:00; 12:00 had too few rows) is the shifted one: usage drifted, nothing else
    assert detected[("usage", "psi")] == 1.0
    assert {k for k, v in detected.items() if v} == {("usage", "psi")}
    assert ("prediction", "psi") in detected
    scores = {(s.labels["feature"], s.labels["metric"]): s.value for s in families["skiff_drift_score"].samples}
    thresholds = {(s.labels["feature"], s.labels["metric"]): s.value
                  for s in families["skiff_drift_threshold"].samples}
    assert scores[("usage", "psi")] > thresholds[("usage", "psi")] and thresholds[("seats", "psi")] == 0.05
    (end,) = families["skiff_drift_window_end_timestamp_seconds"].samples
    assert end.labels == {"model": MODEL, "version": "1"}
    assert end.value == (H0 + dt.timedelta(hours=4)).timestamp()
    assert not list(path.parent.glob(".*.tmp")), "the file was written whole"

    # the API's scrape reads the same from the control plane
    collected = list(DriftCollector(ControlPlane.from_settings(world)).collect())
    assert [f.samples for f in collected[:4]] == [f.samples for f in drift_metrics(
        ControlPlane.from_settings(world).monitoring_results(MODEL))]
    assert any(s.labels["feature"] == "usage" and s.value == 1.0 for s in collected[2].samples)
    assert all(not f.samples for f in collected[4:])  # no labels: the performance families are empty
