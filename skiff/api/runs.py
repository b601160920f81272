"""Local pipeline runs started by the REST API: one at a time, in a background worker thread.

kfp.local changes process-wide state while it runs (the root logger's handlers, stdout), so the
server runs one local pipeline at a time; a second request while one is queued or running gets 409.
Run records live in memory (the run's own outputs are in the lake and the registry); the run id is
the pipeline's ``run_id`` argument, which the registered model version records.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from skiff.config import Settings
from skiff.errors import ConflictError, NotFoundError, SkiffError

__all__ = ["LocalRuns", "RunRecord"]

log = logging.getLogger("skiff.api.runs")

RunStatus = Literal["queued", "running", "succeeded", "failed", "gate_failed"]


class RunRecord(BaseModel):
    """A local run as the API reports it; ``summary`` is set when it has finished."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    pipeline: str
    status: RunStatus
    submitted_at: str
    started_at: str | None = None
    finished_at: str | None = None
    steps: dict[str, str] = {}
    error: str | None = None
    summary: dict[str, Any] | None = None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class LocalRuns:
    """Starts local runs on one worker thread and keeps their records."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._records: dict[str, RunRecord] = {}
        self._active: str | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="skiff-local-run")

    def get(self, run_id: str) -> RunRecord:
        with self._lock:
            rec = self._records.get(run_id)
            if rec is None:
                raise NotFoundError(f"no local run {run_id!r} on this server")
            return rec.model_copy(deep=True)

    def start(self, pipeline: str, arguments: dict[str, Any]) -> RunRecord:
        run_id = str(arguments["run_id"])
        with self._lock:
            if self._active is not None:
                raise ConflictError(f"local run {self._active} is still in progress; one local run at a time",
                                    active_run=self._active)
            if run_id in self._records:
                raise ConflictError(f"run id {run_id!r} was used already")
            rec = RunRecord(run_id=run_id, pipeline=pipeline, status="queued", submitted_at=_now())
            self._records[run_id] = rec
            self._active = run_id
        self._pool.submit(self._run, pipeline, arguments)
        return rec.model_copy(deep=True)

    def _update(self, run_id: str, **changes: Any) -> None:
        with self._lock:
            rec = self._records[run_id]
            self._records[run_id] = rec.model_copy(update=changes)

    def _on_event(self, run_id: str) -> Callable[[str, str], None]:
        def on_event(step: str, status: str) -> None:
            with self._lock:
                self._records[run_id].steps[step] = status
        return on_event

    def _run(self, pipeline: str, arguments: dict[str, Any]) -> None:
        from pipelines import runner
        from pipelines.definitions import get_pipeline, run_outcome

        run_id = str(arguments["run_id"])
        self._update(run_id, status="running", started_at=_now())
        try:
            local_run = runner.run_local(pipeline, arguments, runner.local_pipeline_root(self.settings),
                                         self._on_event(run_id))
            summary = get_pipeline(pipeline).summarize(local_run, self.settings)
            status: RunStatus = run_outcome(summary)
            self._update(run_id, status=status, finished_at=_now(), summary=summary,
                         error=summary.get("error"))
        except SkiffError as e:
            self._update(run_id, status="failed", finished_at=_now(), error=e.message)
        except Exception as e:  # the worker must record every outcome; the log keeps the traceback
            log.exception("local run %s failed unexpectedly", run_id)
            self._update(run_id, status="failed", finished_at=_now(), error=f"{type(e).__name__}: {e}")
        finally:
            with self._lock:
                self._active = None

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
