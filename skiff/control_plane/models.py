"""The control-plane tables (SQLAlchemy 2 declarative models).

The schema is owned by the Alembic revisions in ``migrations/versions``; these models describe the head
revision and ``tests/unit/test_control_plane.py`` checks that the two agree, so a model change without a
revision fails there. Times are stored as timezone-aware UTC timestamps (SQLite keeps them naive; the
store reads them back as UTC).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["Base", "RunRow", "MonitoringResultRow", "AlertRow", "RetrainDecisionRow", "GroundTruthLabelRow",
           "PerformanceResultRow"]


class Base(DeclarativeBase):
    pass


class RunRow(Base):
    """A pipeline run the control plane started (the REST API's local runs)."""

    __tablename__ = "runs"

    run_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    pipeline: Mapped[str] = mapped_column(String(100), index=True)
    status: Mapped[str] = mapped_column(String(20), index=True)
    submitted_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    steps: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: ``host:pid`` of the server process that runs it: a run whose owner died is marked failed
    owner: Mapped[str | None] = mapped_column(String(300))


class MonitoringResultRow(Base):
    """One score of one monitoring window: a feature's drift, or the prediction distribution's shift."""

    __tablename__ = "monitoring_results"
    __table_args__ = (
        UniqueConstraint("model", "version", "window_start", "window_end", "kind", "feature", "metric",
                         name="uq_monitoring_results_window_score"),
        Index("ix_monitoring_results_model_version_window", "model", "version", "window_start"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer)
    window_start: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    window_end: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    #: ``feature_drift`` or ``prediction_drift``
    kind: Mapped[str] = mapped_column(String(40))
    #: the feature, or ``""`` for a score of the whole window (the prediction distribution)
    feature: Mapped[str] = mapped_column(String(200), default="")
    #: ``psi``, ``linf`` or ``js``
    metric: Mapped[str] = mapped_column(String(20))
    value: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    drifted: Mapped[bool] = mapped_column(Boolean)
    rows: Mapped[int] = mapped_column(Integer)
    computed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class AlertRow(Base):
    """An alert the monitor raised (drift above a threshold, accuracy below a floor ...)."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_model_version_fired", "model", "version", "fired_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(100))
    version: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(40))
    severity: Mapped[str] = mapped_column(String(20))
    message: Mapped[str] = mapped_column(Text)
    value: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    fired_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class RetrainDecisionRow(Base):
    """What the retrain policy decided for a model, and why (a started run, a cool-down, no trigger)."""

    __tablename__ = "retrain_decisions"
    __table_args__ = (Index("ix_retrain_decisions_model_decided", "model", "decided_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(100))
    version: Mapped[int | None] = mapped_column(Integer)
    decided_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    #: ``retrain`` or ``skip`` (the decision), then a retrain's steps: ``challenger``, ``promote``,
    #: ``no_promote``, ``failed``
    action: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text)
    run_id: Mapped[str | None] = mapped_column(String(200))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class GroundTruthLabelRow(Base):
    """A label that arrived after the prediction (posted through the REST API): joined to the inference log
    on request id and row by the decay monitor (:mod:`skiff.monitoring.decay`)."""

    __tablename__ = "ground_truth_labels"
    __table_args__ = (UniqueConstraint("model", "request_id", "row", name="uq_ground_truth_labels_request_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(100), index=True)
    request_id: Mapped[str] = mapped_column(String(200))
    row: Mapped[int] = mapped_column(Integer, default=0)
    #: the label as text (class labels) or a number's text (regression)
    label: Mapped[str] = mapped_column(Text)
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    source: Mapped[str] = mapped_column(String(40), default="api")


class PerformanceResultRow(Base):
    """One performance metric (accuracy, ROC-AUC, RMSE) of one window of a version's labeled traffic."""

    __tablename__ = "performance_results"
    __table_args__ = (
        UniqueConstraint("model", "version", "window_start", "window_end", "metric",
                         name="uq_performance_results_window_metric"),
        Index("ix_performance_results_model_version_window", "model", "version", "window_start"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer)
    window_start: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    window_end: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    #: ``accuracy``, ``roc_auc`` or ``rmse``
    metric: Mapped[str] = mapped_column(String(20))
    value: Mapped[float] = mapped_column(Float)
    ci_low: Mapped[float] = mapped_column(Float)
    ci_high: Mapped[float] = mapped_column(Float)
    #: the version's held-out test value of the metric (None when its metadata has none)
    baseline: Mapped[float | None] = mapped_column(Float)
    #: the floor (a ceiling for RMSE) the window is held to
    floor: Mapped[float | None] = mapped_column(Float)
    decayed: Mapped[bool] = mapped_column(Boolean)
    labeled: Mapped[int] = mapped_column(Integer)
    logged: Mapped[int] = mapped_column(Integer)
    computed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
