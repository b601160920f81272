"""The REST API's run list lives in the control plane: it survives a restart of the real server, two
servers over one database list the same runs, and a run its server left unfinished is marked failed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import httpx
import pytest

from skiff.api.auth import ADMIN_ENV, READ_ENV, hash_token
from skiff.control_plane import ControlPlane
from tests.conftest import REPO, wait_until_ready

TOKEN = "control-plane-test-token"
H = {"Authorization": f"Bearer {TOKEN}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Server:
    """The real ``skiff api`` in a process of its own; ``database_url`` None: SQLite under ``root``."""

    def __init__(self, root, cwd, database_url=None):
        self.port = _free_port()
        env = {**os.environ, ADMIN_ENV: hash_token(TOKEN), READ_ENV: "", "SKIFF_ROOT": str(root),
               "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        env.pop("SKIFF_DATABASE_URL", None)
        if database_url:
            env["SKIFF_DATABASE_URL"] = database_url
        self.proc = subprocess.Popen([sys.executable, "-m", "skiff", "api", "--port", str(self.port), "--no-docs"],
                                     env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.base = f"http://127.0.0.1:{self.port}/api/v1"
        wait_until_ready(f"http://127.0.0.1:{self.port}/healthz", self.proc, timeout=60)

    def runs(self, **params):
        resp = httpx.get(f"{self.base}/pipelines/runs", params=params, headers=H, timeout=10)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def stop(self):
        self.proc.terminate()
        return self.proc.communicate(timeout=15)[0]


@pytest.fixture
def root(tmp_path):
    return tmp_path / "root"


def test_the_run_list_survives_a_restart_and_is_shared_by_two_servers(root, tmp_path):
    store = ControlPlane.open(f"sqlite:///{root / 'skiff.db'}")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    # a run a server (this test process, alive) is running, and one whose server was killed mid-run
    store.add_run("run-live", "tabular", owner=f"{socket.gethostname()}:{os.getpid()}")
    store.update_run("run-live", status="running", started_at="2026-01-01T00:00:00Z")
    store.add_run("run-orphan", "tabular", owner=f"{socket.gethostname()}:{dead.pid}")

    first = _Server(root, tmp_path)
    try:
        runs = {r["run_id"]: r for r in first.runs()}
        assert runs["run-live"]["status"] == "running"
        assert runs["run-orphan"]["status"] == "failed" and "stopped" in runs["run-orphan"]["error"]
        second = _Server(root, tmp_path)  # a second replica over the same database
        try:
            store.add_run("run-new", "images")
            assert [r["run_id"] for r in second.runs(pipeline="images")] == ["run-new"]
            assert [r["run_id"] for r in first.runs(pipeline="images")] == ["run-new"]
            got = httpx.get(f"{second.base}/pipelines/runs/run-live", headers=H, timeout=10).json()
            assert got["status"] == "running" and got["started_at"] == "2026-01-01T00:00:00+00:00"
        finally:
            second.stop()
    finally:
        first.stop()

    again = _Server(root, tmp_path)  # the restarted server still lists every run
    try:
        assert {r["run_id"] for r in again.runs()} == {"run-live", "run-orphan", "run-new"}
        assert [r["run_id"] for r in again.runs(status="failed")] == ["run-orphan"]
        assert httpx.get(f"{again.base}/pipelines/runs?limit=0", headers=H).status_code == 422
        assert httpx.get(f"{again.base}/pipelines/runs/nope", headers=H).status_code == 404
    finally:
        again.stop()


def test_a_remote_root_without_a_database_keeps_runs_in_memory_and_says_so(caplog):
    from skiff.api.runs import control_plane_for
    from skiff.config import Settings

    store = control_plane_for(Settings(root="s3://bucket/skiff"))
    assert store.engine.url.database in (None, "")
    store.add_run("r", "tabular")
    assert [r.run_id for r in store.list_runs()] == ["r"]
    assert "kept in memory and lost on restart" in caplog.text
