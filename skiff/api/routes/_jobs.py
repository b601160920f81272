"""Background jobs the API starts that are not pipelines (an ingestion, an evaluation): one worker thread
per server, each job recorded in the control plane's run table (``pipeline`` names the kind, e.g.
``ingest:churn``), so its status is polled like a run's and survives a restart."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import FastAPI

from skiff.control_plane import ControlPlane, RunRecord
from skiff.control_plane.store import owner_id, utc_now
from skiff.errors import GateFailed, SkiffError

__all__ = ["start_job", "new_job_id"]

log = logging.getLogger("skiff.api.jobs")
_LOCK = threading.Lock()


def new_job_id(kind: str) -> str:
    return f"{kind}-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"


def _pool(app: FastAPI) -> ThreadPoolExecutor:
    with _LOCK:
        pool: ThreadPoolExecutor | None = getattr(app.state, "skiff_jobs", None)
        if pool is None:
            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="skiff-api-job")
            app.state.skiff_jobs = pool
        return pool


def start_job(app: FastAPI, store: ControlPlane, job_id: str, kind: str,
              work: Callable[[], dict[str, Any]]) -> RunRecord:
    """Record a queued job and run ``work`` in the background; its summary (or error) lands in the record:
    ``succeeded``, ``gate_failed`` (a :class:`GateFailed`, e.g. too few rows accepted) or ``failed``."""
    record = store.add_run(job_id, kind, owner=owner_id())

    def run() -> None:
        try:
            store.update_run(job_id, status="running", started_at=utc_now())
            summary = work()
            store.update_run(job_id, status="succeeded", finished_at=utc_now(), summary=summary)
        except GateFailed as e:
            store.update_run(job_id, status="gate_failed", finished_at=utc_now(), error=e.message,
                             summary=e.detail or None)
        except SkiffError as e:
            store.update_run(job_id, status="failed", finished_at=utc_now(), error=e.message)
        except Exception as e:  # every outcome is recorded; the log keeps the traceback
            log.exception("job %s failed unexpectedly", job_id)
            store.update_run(job_id, status="failed", finished_at=utc_now(), error=f"{type(e).__name__}: {e}")

    _pool(app).submit(run)
    return record
