"""Local pipeline runs started by the REST API: one at a time per server, in a background worker thread.

kfp.local changes process-wide state while it runs (the root logger's handlers, stdout), so a server
runs one local pipeline at a time; a second request while one is queued or running gets 409. Run records
live in the control-plane database (:mod:`skiff.control_plane`: SQLite under the root by default,
PostgreSQL on a cluster), so the run list survives a restart and every API replica over one database
sees the same runs; a run id is unique across them. The run's own outputs are in the lake and the
registry; the run id is the pipeline's ``run_id`` argument, which the registered model version records.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from skiff.config import Settings
from skiff.control_plane import ControlPlane, RunRecord, RunStatus
from skiff.control_plane.store import owner_id
from skiff.errors import ConfigError, ConflictError, SkiffError

__all__ = ["LocalRuns", "RunRecord", "control_plane_for"]

log = logging.getLogger("skiff.api.runs")


def control_plane_for(settings: Settings) -> ControlPlane:
    """The settings' control plane; an in-memory one (records lost on restart, logged) when the root is
    remote and no ``database_url`` is set, so an API without a database keeps serving."""
    try:
        url = settings.metadata_url
    except ConfigError:
        log.warning("no database_url with a remote root: run records are kept in memory and lost on restart; "
                    "set database_url to the cluster's PostgreSQL")
        url = "sqlite://"
    return ControlPlane.open(url)


class LocalRuns:
    """Starts local runs on one worker thread and records them in the control plane."""

    def __init__(self, settings: Settings, store: ControlPlane | None = None) -> None:
        self.settings = settings
        self.store = store or control_plane_for(settings)
        for run_id in self.store.fail_orphaned_runs():
            log.warning("run %s was left unfinished by a server that stopped; marked failed", run_id)
        self._lock = threading.Lock()
        self._active: str | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="skiff-local-run")

    def get(self, run_id: str) -> RunRecord:
        return self.store.get_run(run_id)

    def list(self, *, pipeline: str | None = None, status: str | None = None, limit: int = 100) -> list[RunRecord]:
        return self.store.list_runs(pipeline=pipeline, status=status, limit=limit)

    def start(self, pipeline: str, arguments: dict[str, Any]) -> RunRecord:
        run_id = str(arguments["run_id"])
        with self._lock:
            if self._active is not None:
                raise ConflictError(f"local run {self._active} is still in progress; one local run at a time",
                                    active_run=self._active)
            rec = self.store.add_run(run_id, pipeline, owner=owner_id())  # ConflictError on a used id
            self._active = run_id
        try:
            self._pool.submit(self._run, pipeline, arguments)
        except RuntimeError:  # shut down meanwhile: the record must not stay queued
            self._finish(run_id, status="failed", error="the server was shutting down")
            raise
        return rec

    def _finish(self, run_id: str, **changes: Any) -> None:
        from skiff.control_plane.store import utc_now

        self.store.update_run(run_id, finished_at=utc_now(), **changes)

    def _on_event(self, run_id: str) -> Callable[[str, str], None]:
        def on_event(step: str, status: str) -> None:
            self.store.set_step(run_id, step, status)
        return on_event

    def _run(self, pipeline: str, arguments: dict[str, Any]) -> None:
        from pipelines import runner
        from pipelines.definitions import get_pipeline, run_outcome
        from skiff.control_plane.store import utc_now

        run_id = str(arguments["run_id"])
        try:
            self.store.update_run(run_id, status="running", started_at=utc_now())
            local_run = runner.run_local(pipeline, arguments, runner.local_pipeline_root(self.settings),
                                         self._on_event(run_id))
            summary = get_pipeline(pipeline).summarize(local_run, self.settings)
            status: RunStatus = run_outcome(summary)
            self._finish(run_id, status=status, summary=summary, error=summary.get("error"))
        except SkiffError as e:
            self._record_failure(run_id, e.message)
        except Exception as e:  # the worker must record every outcome; the log keeps the traceback
            log.exception("local run %s failed unexpectedly", run_id)
            self._record_failure(run_id, f"{type(e).__name__}: {e}")
        finally:
            with self._lock:
                self._active = None

    def _record_failure(self, run_id: str, error: str) -> None:
        try:
            self._finish(run_id, status="failed", error=error)
        except SkiffError:  # the database is down too: the log is the only record left
            log.exception("could not record the failure of run %s: %s", run_id, error)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.store.close()
