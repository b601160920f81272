"""The control-plane store: one class over the SQL tables, and the migration that every opener runs.

:meth:`ControlPlane.open` builds the engine from a URL (``postgresql://`` uses psycopg 3, which skiff
ships) and upgrades the schema to the newest Alembic revision first. Several processes may open the same
database at once (API replicas, a ``skiff monitor run`` beside a server): the upgrade runs under a lock
that holds across processes — a PostgreSQL advisory lock keyed on the database (and search path), or an
OS file lock beside a SQLite file — so one process migrates and the others then find the schema current.
Every method is one short transaction; rows come back as the pydantic records of
:mod:`skiff.control_plane.records`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import socket
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, delete, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from skiff.config import Settings
from skiff.control_plane.models import (
    AlertRow,
    GroundTruthLabelRow,
    MonitoringResultRow,
    PerformanceResultRow,
    RetrainDecisionRow,
    RunRow,
)
from skiff.control_plane.records import (
    Alert,
    GroundTruthLabel,
    MonitoringResult,
    PerformanceResult,
    RetrainDecision,
    RunRecord,
)
from skiff.errors import ConfigError, ConflictError, NotFoundError, StorageError

__all__ = ["ControlPlane", "engine_url", "migrate", "owner_id", "utc_now", "MIGRATIONS"]

log = logging.getLogger(__name__)

#: the Alembic script folder (env.py and versions/)
MIGRATIONS = Path(__file__).resolve().parent / "migrations"

_ACTIVE = ("queued", "running")


def engine_url(url: str) -> URL:
    """The SQLAlchemy URL of a control-plane database URL (``postgresql://`` -> psycopg 3's driver)."""
    try:
        parsed = make_url(url)
    except Exception as e:  # sqlalchemy raises ArgumentError with the URL in it: keep passwords out
        raise ConfigError(f"database_url is not a SQLAlchemy URL ({type(e).__name__})") from None
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(f"database_url: the control plane supports SQLite and PostgreSQL, not "
                          f"{parsed.get_backend_name()!r}")
    return parsed


def _is_memory(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def _create_engine(url: URL) -> Engine:
    if url.get_backend_name() == "sqlite":
        if _is_memory(url):  # one connection shared by the threads, or every connection is a new database
            return create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
        assert url.database is not None
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        # timeout: a writer waits for another process's transaction instead of failing at once
        return create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
    return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10})


@contextlib.contextmanager
def _migration_lock(url: URL) -> Iterator[None]:
    from skiff.locks import DatabaseLocks, exclusive_path

    if url.get_backend_name() == "postgresql":
        shown = url.render_as_string(hide_password=True)
        with DatabaseLocks(url.render_as_string(hide_password=False)).hold(f"skiff-control-plane-migrate:{shown}"):
            yield
    elif _is_memory(url):
        yield
    else:
        assert url.database is not None
        db = Path(url.database)
        with exclusive_path(db.with_name(f".{db.name}.migrate.lock")):
            yield


def migrate(engine: Engine) -> str | None:
    """Upgrade the database to the newest revision (a no-op when it is current); returns the revision.
    Safe to call from several processes at once."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext

    alembic_log = logging.getLogger("alembic")
    if alembic_log.level == logging.NOTSET:  # its per-step INFO lines are noise on every open
        alembic_log.setLevel(logging.WARNING)
    with _migration_lock(engine.url), engine.begin() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        rev = MigrationContext.configure(conn).get_current_revision()
    return rev


def _utc(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite drops the offset: every stored time is UTC
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat(timespec="seconds")


def _ts(value: str | dt.datetime | None) -> dt.datetime | None:
    if value is None or value == "":
        return None
    parsed = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def owner_id() -> str:
    """``host:pid`` of this process, recorded on the runs it executes."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ControlPlane:
    """The control-plane tables of one database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._shown = engine.url.render_as_string(hide_password=True)
        self._steps_lock = threading.Lock()

    @classmethod
    def open(cls, url: str, *, upgrade: bool = True) -> ControlPlane:
        """Open the database at ``url``, upgrading its schema first unless ``upgrade`` is false."""
        engine = _create_engine(engine_url(url))
        store = cls(engine)
        if upgrade:
            try:
                migrate(engine)
            except SQLAlchemyError as e:
                engine.dispose()
                raise StorageError(f"control-plane database {store._shown}: migration failed "
                                   f"({type(getattr(e, 'orig', None) or e).__name__}); check database_url and "
                                   "that the database is up") from None
        return store

    @classmethod
    def from_settings(cls, settings: Settings) -> ControlPlane:
        """The settings' database: ``database_url``, else ``<root>/skiff.db`` (local roots only)."""
        return cls.open(settings.metadata_url)

    def close(self) -> None:
        self.engine.dispose()

    @contextlib.contextmanager
    def _session(self) -> Iterator[Session]:
        try:
            with self._sessions.begin() as session:
                yield session
        except (ConflictError, NotFoundError):
            raise
        except IntegrityError:
            raise
        except SQLAlchemyError as e:
            raise StorageError(f"control-plane database {self._shown}: "
                               f"{type(getattr(e, 'orig', None) or e).__name__}; check that it is up") from None

    # -- runs ------------------------------------------------------------------------------------------
    @staticmethod
    def _run(row: RunRow) -> RunRecord:
        return RunRecord(run_id=row.run_id, pipeline=row.pipeline, status=row.status,  # type: ignore[arg-type]
                         submitted_at=_utc(row.submitted_at) or "", started_at=_utc(row.started_at),
                         finished_at=_utc(row.finished_at), steps=dict(row.steps or {}), error=row.error,
                         summary=row.summary)

    def add_run(self, run_id: str, pipeline: str, *, owner: str | None = None) -> RunRecord:
        """Record a queued run; :class:`ConflictError` when the id was used already (by any process)."""
        row = RunRow(run_id=run_id, pipeline=pipeline, status="queued", submitted_at=utc_now(), steps={},
                     owner=owner)
        try:
            with self._session() as s:
                s.add(row)
        except IntegrityError:
            raise ConflictError(f"run id {run_id!r} was used already") from None
        return self._run(row)

    def get_run(self, run_id: str) -> RunRecord:
        with self._session() as s:
            row = s.get(RunRow, run_id)
            if row is None:
                raise NotFoundError(f"no run {run_id!r} in the control plane")
            return self._run(row)

    def list_runs(self, *, pipeline: str | None = None, status: str | None = None,
                  limit: int = 100) -> list[RunRecord]:
        """Runs, newest first."""
        q = select(RunRow).order_by(RunRow.submitted_at.desc(), RunRow.run_id.desc()).limit(limit)
        if pipeline is not None:
            q = q.where(RunRow.pipeline == pipeline)
        if status is not None:
            q = q.where(RunRow.status == status)
        with self._session() as s:
            return [self._run(r) for r in s.scalars(q)]

    def update_run(self, run_id: str, **changes: Any) -> RunRecord:
        """Set fields of a run (``status``, ``started_at``/``finished_at`` as ISO text or datetimes,
        ``error``, ``summary``)."""
        allowed = {"status", "started_at", "finished_at", "error", "summary", "owner"}
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"not a run field: {sorted(unknown)}")
        with self._session() as s:
            row = s.get(RunRow, run_id, with_for_update=True)
            if row is None:
                raise NotFoundError(f"no run {run_id!r} in the control plane")
            for key, value in changes.items():
                setattr(row, key, _ts(value) if key.endswith("_at") else value)
            return self._run(row)

    def set_step(self, run_id: str, step: str, status: str) -> None:
        with self._steps_lock, self._session() as s:
            row = s.get(RunRow, run_id, with_for_update=True)
            if row is None:
                raise NotFoundError(f"no run {run_id!r} in the control plane")
            row.steps = {**(row.steps or {}), step: status}  # a new dict: JSON columns track assignment

    def fail_orphaned_runs(self) -> list[str]:
        """Mark failed the queued or running runs whose owner process on this host is gone (a server that
        was stopped or killed mid-run); returns their ids. Other hosts' runs are left to their owners."""
        host = socket.gethostname()
        failed = []
        with self._session() as s:
            for row in s.scalars(select(RunRow).where(RunRow.status.in_(_ACTIVE))):
                owner_host, _, pid = (row.owner or "").rpartition(":")
                if owner_host == host and pid.isdigit() and not _pid_alive(int(pid)):
                    row.status, row.finished_at = "failed", utc_now()
                    row.error = "the server that ran it stopped before the run finished"
                    failed.append(row.run_id)
        return failed

    # -- monitoring results ----------------------------------------------------------------------------
    def save_window(self, results: Iterable[MonitoringResult]) -> int:
        """Store a window's scores, replacing the scores stored before for the same model, version and
        window (a re-run of the monitor is idempotent); returns how many were stored."""
        return self._replace_windows(MonitoringResultRow, list(results))

    def monitoring_results(self, model: str, version: int | None = None, *, since: str | None = None,
                           kind: str | None = None, limit: int = 10_000) -> list[MonitoringResult]:
        """A model's stored scores, oldest window first."""
        q = select(MonitoringResultRow).where(MonitoringResultRow.model == model)
        if version is not None:
            q = q.where(MonitoringResultRow.version == version)
        if since is not None:
            q = q.where(MonitoringResultRow.window_start >= _ts(since))
        if kind is not None:
            q = q.where(MonitoringResultRow.kind == kind)
        q = q.order_by(MonitoringResultRow.window_start, MonitoringResultRow.kind, MonitoringResultRow.feature,
                       MonitoringResultRow.metric).limit(limit)
        with self._session() as s:
            return [MonitoringResult(
                model=r.model, version=r.version, window_start=_utc(r.window_start) or "",
                window_end=_utc(r.window_end) or "", kind=r.kind, feature=r.feature,  # type: ignore[arg-type]
                metric=r.metric, value=r.value, threshold=r.threshold, drifted=r.drifted,  # type: ignore[arg-type]
                rows=r.rows, computed_at=_utc(r.computed_at) or "", details=dict(r.details or {}))
                for r in s.scalars(q)]

    def monitored_models(self) -> list[str]:
        """The models with stored scores, by name."""
        q = select(MonitoringResultRow.model).distinct().order_by(MonitoringResultRow.model)
        with self._session() as s:
            return list(s.scalars(q))

    # -- alerts and retrain decisions ------------------------------------------------------------------
    def add_alert(self, alert: Alert) -> Alert:
        data = alert.model_dump(exclude={"id"})
        data.update(fired_at=_ts(alert.fired_at) or utc_now(), resolved_at=_ts(alert.resolved_at))
        with self._session() as s:
            row = AlertRow(**data)
            s.add(row)
            s.flush()
            return alert.model_copy(update={"id": row.id, "fired_at": _utc(row.fired_at)})

    def alerts(self, model: str | None = None, *, open_only: bool = False, limit: int = 1000) -> list[Alert]:
        """Alerts, newest first."""
        q = select(AlertRow).order_by(AlertRow.fired_at.desc(), AlertRow.id.desc()).limit(limit)
        if model is not None:
            q = q.where(AlertRow.model == model)
        if open_only:
            q = q.where(AlertRow.resolved_at.is_(None))
        with self._session() as s:
            return [Alert(id=r.id, model=r.model, version=r.version, kind=r.kind,
                          severity=r.severity, message=r.message, value=r.value,  # type: ignore[arg-type]
                          threshold=r.threshold, fired_at=_utc(r.fired_at) or "", resolved_at=_utc(r.resolved_at),
                          details=dict(r.details or {})) for r in s.scalars(q)]

    def resolve_alert(self, alert_id: int) -> None:
        with self._session() as s:
            row = s.get(AlertRow, alert_id)
            if row is None:
                raise NotFoundError(f"no alert {alert_id}")
            row.resolved_at = row.resolved_at or utc_now()

    def add_retrain_decision(self, decision: RetrainDecision) -> RetrainDecision:
        data = decision.model_dump(exclude={"id"})
        data["decided_at"] = _ts(decision.decided_at) or utc_now()
        with self._session() as s:
            row = RetrainDecisionRow(**data)
            s.add(row)
            s.flush()
            return decision.model_copy(update={"id": row.id, "decided_at": _utc(row.decided_at)})

    def retrain_decisions(self, model: str, *, limit: int = 1000) -> list[RetrainDecision]:
        """A model's retrain decisions, newest first."""
        q = (select(RetrainDecisionRow).where(RetrainDecisionRow.model == model)
             .order_by(RetrainDecisionRow.decided_at.desc(), RetrainDecisionRow.id.desc()).limit(limit))
        with self._session() as s:
            return [RetrainDecision(id=r.id, model=r.model, version=r.version, decided_at=_utc(r.decided_at) or "",
                                    action=r.action, reason=r.reason, run_id=r.run_id,  # type: ignore[arg-type]
                                    details=dict(r.details or {})) for r in s.scalars(q)]

    # -- ground truth and performance ------------------------------------------------------------------
    def add_labels(self, labels: Iterable[GroundTruthLabel]) -> tuple[int, int]:
        """Store labels; a label for a (model, request id, row) that has one replaces it (a correction).
        Returns (inserted, replaced)."""
        rows = list(labels)
        now = utc_now()
        inserted = replaced = 0
        with self._session() as s:
            for lab in rows:
                existing = s.scalars(select(GroundTruthLabelRow).where(
                    GroundTruthLabelRow.model == lab.model, GroundTruthLabelRow.request_id == lab.request_id,
                    GroundTruthLabelRow.row == lab.row)).first()
                if existing is not None:
                    existing.label, existing.received_at, existing.source = lab.label, now, lab.source
                    replaced += 1
                else:
                    s.add(GroundTruthLabelRow(model=lab.model, request_id=lab.request_id, row=lab.row,
                                              label=lab.label, received_at=_ts(lab.received_at) or now,
                                              source=lab.source))
                    inserted += 1
        return inserted, replaced

    def labels(self, model: str, request_ids: Iterable[str] | None = None) -> list[GroundTruthLabel]:
        """A model's posted labels (of these request ids only, when given)."""
        q = select(GroundTruthLabelRow).where(GroundTruthLabelRow.model == model)
        if request_ids is not None:
            ids = sorted(set(request_ids))
            out: list[GroundTruthLabel] = []
            for i in range(0, len(ids), 500):  # bounded IN lists
                out += self._labels(q.where(GroundTruthLabelRow.request_id.in_(ids[i:i + 500])))
            return out
        return self._labels(q)

    def _labels(self, q: Any) -> list[GroundTruthLabel]:
        with self._session() as s:
            return [GroundTruthLabel(model=r.model, request_id=r.request_id, row=r.row, label=r.label,
                                     received_at=_utc(r.received_at) or "", source=r.source) for r in s.scalars(q)]

    def save_performance(self, results: Iterable[PerformanceResult]) -> int:
        """Store windows' performance results, replacing those stored before for the same window."""
        return self._replace_windows(PerformanceResultRow, list(results))

    def _replace_windows(self, table: Any, rows: list[MonitoringResult] | list[PerformanceResult]) -> int:
        """Store per-window results in ``table``, first deleting what is stored for the same model, version
        and window, in one transaction (a re-run of the monitor replaces its results)."""
        now = utc_now()
        with self._session() as s:
            for model, version, start, end in {(r.model, r.version, _ts(r.window_start), _ts(r.window_end))
                                               for r in rows}:
                s.execute(delete(table).where(
                    table.model == model, table.version == version,
                    table.window_start == start, table.window_end == end))
            for r in rows:
                data = r.model_dump()
                data.update(window_start=_ts(r.window_start), window_end=_ts(r.window_end),
                            computed_at=_ts(r.computed_at) or now)
                s.add(table(**data))
        return len(rows)

    def performance_results(self, model: str, version: int | None = None, *, metric: str | None = None,
                            limit: int = 10_000) -> list[PerformanceResult]:
        """A model's stored performance results, oldest window first."""
        q = select(PerformanceResultRow).where(PerformanceResultRow.model == model)
        if version is not None:
            q = q.where(PerformanceResultRow.version == version)
        if metric is not None:
            q = q.where(PerformanceResultRow.metric == metric)
        q = q.order_by(PerformanceResultRow.window_start, PerformanceResultRow.version,
                       PerformanceResultRow.metric).limit(limit)
        with self._session() as s:
            return [PerformanceResult(
                model=r.model, version=r.version, window_start=_utc(r.window_start) or "",
                window_end=_utc(r.window_end) or "", metric=r.metric, value=r.value,  # type: ignore[arg-type]
                ci_low=r.ci_low, ci_high=r.ci_high, baseline=r.baseline, floor=r.floor, decayed=r.decayed,
                labeled=r.labeled, logged=r.logged, computed_at=_utc(r.computed_at) or "",
                details=dict(r.details or {})) for r in s.scalars(q)]

    def performance_models(self) -> list[str]:
        """The models with stored performance results."""
        q = select(PerformanceResultRow.model).distinct().order_by(PerformanceResultRow.model)
        with self._session() as s:
            return list(s.scalars(q))
