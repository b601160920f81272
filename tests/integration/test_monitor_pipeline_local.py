"""The skiff-monitor pipeline (what the recurring run starts on a cluster) under kfp.local: its step runs
``skiff monitor run`` on a model's logged windows, returns the drifted-window count and leaves the scores
in the control plane; a model without a log fails the step with the command's error."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier

from skiff.config import Settings
from skiff.control_plane import ControlPlane
from skiff.inference_log import InferenceLogWriter, ModelLog, log_store
from skiff.monitoring.reference import CACHE_FILE, CACHE_PREFIX, reference_from_frame
from skiff.registry import ModelRegistry
from skiff.storage import Store

pytestmark = [pytest.mark.integration]

MODEL = "acct"
SCHEMA = {"usage": "float"}


def _world(root: str) -> Settings:
    settings = Settings(root=root)
    registry = ModelRegistry.from_settings(settings)
    registry.register(MODEL, DummyClassifier().fit([[0], [1]], ["no", "yes"]),
                      {"problem_type": "binary", "classes": ["no", "yes"], "features": ["usage"],
                       "input_schema": SCHEMA, "metrics": {"accuracy": 0.9}})
    rng = np.random.default_rng(5)
    meta = registry.get(MODEL, 1).metadata
    ref = reference_from_frame(meta, pd.DataFrame({"usage": rng.normal(10, 3, 4000)}))
    Store(settings.artifacts_uri).write_json(ref.to_dict(), CACHE_PREFIX, MODEL, "version=1", CACHE_FILE)
    now = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    with InferenceLogWriter(log_store(settings), [ModelLog(MODEL, SCHEMA)]) as writer:
        for hour, shift in ((-2, 0.0), (-1, 3.0)):  # the last hour's usage moved by one standard deviation
            for i, usage in enumerate(rng.normal(10 + shift, 3, 400)):
                writer.offer(MODEL, 1, f"h{hour}-{i}", [{"usage": float(usage)}], ["no"], probabilities=[0.2],
                             when=now + dt.timedelta(hours=hour, seconds=i))
        assert writer.flush()
    return settings


def test_the_monitor_pipeline_scores_the_logged_windows_under_kfp_local(tmp_path, monkeypatch):
    from kfp import local

    from pipelines.monitor import monitor

    root = str(tmp_path / ".skiff")
    monkeypatch.setenv("SKIFF_ROOT", root)
    monkeypatch.chdir(tmp_path)
    settings = _world(root)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "runs"),
               raise_on_error=True)
    task = monitor(model=MODEL, lookback_hours=6, min_rows=100)
    assert task.outputs["drifted_windows"] == 1 and task.outputs["decayed_windows"] == 0
    stored = ControlPlane.from_settings(settings).monitoring_results(MODEL, 1)
    windows = {r.window_start for r in stored}
    assert len(windows) == 2
    drifted = {r.window_start for r in stored if r.drifted and r.feature == "usage"}
    assert len(drifted) == 1 and max(windows) in drifted
    with pytest.raises(RuntimeError, match="monitor-op"):  # no log: the step fails, the run with it
        monitor(model="absent", lookback_hours=6)
