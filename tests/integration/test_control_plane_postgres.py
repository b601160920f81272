"""The control plane on the real PostgreSQL: several processes migrate one fresh schema at once (the
advisory lock makes one of them do it), and runs, monitoring results and alerts round-trip. Each test run
works in a schema of its own (``search_path``), dropped at the end."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid

import pytest
from sqlalchemy import create_engine, inspect, text

from skiff.control_plane import Alert, ControlPlane, MonitoringResult
from skiff.errors import ConflictError
from tests.conftest import REPO, require_service

pytestmark = pytest.mark.integration

PG = "postgresql+psycopg://root@127.0.0.1:5432/test"


@pytest.fixture
def url():
    require_service("PostgreSQL", 5432)
    schema = f"skiff_cp_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"postgresql://root@127.0.0.1:5432/test?options=-csearch_path%3D{schema}", schema
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_concurrent_processes_migrate_a_fresh_schema_once_and_share_the_runs(url):
    db, schema = url
    code = textwrap.dedent(f"""
        import uuid
        from skiff.control_plane import ControlPlane
        s = ControlPlane.open({db!r})
        s.add_run(uuid.uuid4().hex, 'tabular')
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    store = ControlPlane.open(db)
    assert len(store.list_runs()) == 4
    tables = set(inspect(store.engine).get_table_names(schema=schema))
    assert {"runs", "monitoring_results", "alerts", "retrain_decisions", "alembic_version"} <= tables
    with store.engine.connect() as conn:
        assert conn.execute(text(f'SELECT version_num FROM "{schema}".alembic_version')).scalars().all() == \
            ["0002_performance"]
    store.close()


def test_runs_results_and_alerts_round_trip_on_postgresql(url):
    db, _ = url
    a, b = ControlPlane.open(db), ControlPlane.open(db)
    a.add_run("pg-run", "tabular", owner="h:1")
    a.set_step("pg-run", "ingest", "succeeded")
    a.update_run("pg-run", status="succeeded", finished_at="2026-03-04T05:06:07+00:00", summary={"version": 3})
    got = b.get_run("pg-run")
    assert (got.status, got.steps, got.summary, got.finished_at) == (
        "succeeded", {"ingest": "succeeded"}, {"version": 3}, "2026-03-04T05:06:07+00:00")
    result = MonitoringResult(model="churn", version=1, window_start="2026-01-01T00:00:00Z",
                              window_end="2026-01-01T01:00:00Z", kind="prediction_drift", metric="js", value=0.01,
                              threshold=0.1, drifted=False, rows=2000, details={"bins": 10})
    a.save_window([result])
    a.save_window([result])
    stored = b.monitoring_results("churn")
    assert len(stored) == 1 and stored[0].details == {"bins": 10} and stored[0].window_start.endswith("+00:00")
    b.add_alert(Alert(model="churn", version=1, kind="drift", message="m"))
    assert [x.message for x in a.alerts("churn")] == ["m"]
    a.close()
    b.close()


def test_two_real_api_servers_over_postgresql_share_the_run_list_and_it_survives_a_restart(url, tmp_path):
    from tests.unit.test_control_plane_api import _Server

    db, _ = url
    store = ControlPlane.open(db)
    store.add_run("pg-1", "tabular", owner="gone-host:1")
    with pytest.raises(ConflictError, match="used already"):
        store.add_run("pg-1", "tabular")
    first = _Server(tmp_path / "root", tmp_path, database_url=db)
    try:
        second = _Server(tmp_path / "root", tmp_path, database_url=db)
        try:
            store.add_run("pg-2", "images")
            assert [r["run_id"] for r in first.runs()] == [r["run_id"] for r in second.runs()] == ["pg-2", "pg-1"]
        finally:
            second.stop()
    finally:
        first.stop()
    again = _Server(tmp_path / "root", tmp_path, database_url=db)
    try:
        assert {r["run_id"] for r in again.runs()} == {"pg-1", "pg-2"}
    finally:
        again.stop()
    assert not (tmp_path / "root" / "skiff.db").exists()  # nothing went to SQLite
    store.close()
