"""The control plane on SQLite: the schema is the Alembic head and matches the models, migrations are
idempotent and safe from several processes at once, runs, monitoring results, alerts and retrain decisions
round-trip, and a run whose server died is marked failed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from skiff.config import Settings
from skiff.control_plane import Alert, ControlPlane, MonitoringResult, RetrainDecision, migrate
from skiff.control_plane.models import Base
from skiff.errors import ConfigError, ConflictError, NotFoundError
from tests.conftest import REPO


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'root' / 'skiff.db'}"


def test_open_creates_the_head_schema_and_it_matches_the_models(url):
    store = ControlPlane.open(url)
    assert set(inspect(store.engine).get_table_names()) >= {"runs", "monitoring_results", "alerts",
                                                            "retrain_decisions", "alembic_version"}
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == [], f"the models changed without an Alembic revision: {diff}"
    assert migrate(store.engine) == "0002_performance"  # a second upgrade is a no-op
    assert migrate(store.engine) == "0002_performance"


def test_settings_default_to_sqlite_under_the_root(tmp_path):
    store = ControlPlane.from_settings(Settings(root=str(tmp_path / "r")))
    assert (tmp_path / "r" / "skiff.db").is_file()
    store.close()
    with pytest.raises(ConfigError, match="database_url"):
        _ = Settings(root="s3://bucket/skiff").metadata_url
    with pytest.raises(ConfigError, match="SQLite and PostgreSQL"):
        ControlPlane.open("mysql://root@127.0.0.1/x")


def test_runs_round_trip_and_a_run_id_is_unique_across_stores(url):
    a, b = ControlPlane.open(url), ControlPlane.open(url)
    rec = a.add_run("run-1", "tabular", owner="elsewhere:1")
    assert rec.status == "queued" and rec.submitted_at.endswith("+00:00")
    a.update_run("run-1", status="running", started_at="2026-01-02T03:04:05Z")
    a.set_step("run-1", "ingest", "succeeded")
    a.set_step("run-1", "validate", "running")
    got = b.get_run("run-1")  # another store (process) over the same file sees it
    assert got.status == "running" and got.started_at == "2026-01-02T03:04:05+00:00"
    assert got.steps == {"ingest": "succeeded", "validate": "running"}
    with pytest.raises(ConflictError, match="used already"):
        b.add_run("run-1", "tabular")
    b.add_run("run-2", "images")
    b.update_run("run-2", status="failed", error="boom", summary={"error": "boom"})
    assert [r.run_id for r in a.list_runs()] == ["run-2", "run-1"]  # newest first (ties: id)
    assert [r.run_id for r in a.list_runs(pipeline="images")] == ["run-2"]
    assert [r.run_id for r in a.list_runs(status="running")] == ["run-1"]
    with pytest.raises(NotFoundError):
        a.get_run("nope")
    with pytest.raises(ValueError, match="not a run field"):
        a.update_run("run-1", pipeline="x")


def test_a_run_whose_server_died_is_marked_failed_and_a_live_one_is_not(url):
    import os
    import socket

    store = ControlPlane.open(url)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    store.add_run("orphan", "tabular", owner=f"{host}:{dead.pid}")
    store.add_run("alive", "tabular", owner=f"{host}:{os.getpid()}")
    store.add_run("remote", "tabular", owner="another-host:1")
    assert store.fail_orphaned_runs() == ["orphan"]
    assert store.get_run("orphan").status == "failed" and "stopped" in (store.get_run("orphan").error or "")
    assert store.get_run("alive").status == "queued" and store.get_run("remote").status == "queued"


def _window(feature, value, start="2026-01-01T00:00:00Z", end="2026-01-01T01:00:00Z"):
    return MonitoringResult(model="churn", version=2, window_start=start, window_end=end, kind="feature_drift",
                            feature=feature, metric="psi", value=value, threshold=0.2, drifted=value > 0.2, rows=100)


def test_monitoring_results_replace_a_window_on_rerun_alerts_and_decisions_round_trip(url):
    store = ControlPlane.open(url)
    assert store.save_window([_window("age", 0.5), _window("tenure", 0.01)]) == 2
    store.save_window([_window("age", 0.05, "2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z")])
    store.save_window([_window("age", 0.4), _window("tenure", 0.02)])  # the monitor ran again on window 1
    got = ControlPlane.open(url).monitoring_results("churn", 2)
    assert [(r.window_start, r.feature, r.value) for r in got] == [
        ("2026-01-01T00:00:00+00:00", "age", 0.4), ("2026-01-01T00:00:00+00:00", "tenure", 0.02),
        ("2026-01-01T01:00:00+00:00", "age", 0.05)]
    assert [r.drifted for r in got] == [True, False, False]
    assert store.monitoring_results("churn", 2, since="2026-01-01T01:00:00Z")[0].value == 0.05
    assert store.monitoring_results("churn", 3) == []

    alert = store.add_alert(Alert(model="churn", version=2, kind="drift", message="age drifted", value=0.4,
                                  threshold=0.2))
    assert alert.id is not None and alert.fired_at
    assert [a.message for a in store.alerts("churn", open_only=True)] == ["age drifted"]
    store.resolve_alert(alert.id)
    assert store.alerts("churn", open_only=True) == [] and store.alerts("churn")[0].resolved_at
    decision = store.add_retrain_decision(RetrainDecision(model="churn", version=2, action="skip",
                                                          reason="cool-down: last retrain 2 h ago"))
    assert store.retrain_decisions("churn") == [decision]


def test_concurrent_first_opens_from_several_processes_migrate_once(url):
    code = textwrap.dedent(f"""
        from skiff.control_plane import ControlPlane
        s = ControlPlane.open({url!r})
        s.add_run(__import__('uuid').uuid4().hex, 'tabular')
        print(len(s.list_runs(limit=1000)))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    assert len(ControlPlane.open(url).list_runs()) == 4
