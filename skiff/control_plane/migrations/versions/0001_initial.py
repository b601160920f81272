"""The first control-plane schema: runs, monitoring results, alerts, retrain decisions.

Revision ID: 0001_initial
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(200), primary_key=True),
        sa.Column("pipeline", sa.String(100), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("submitted_at", _TS, nullable=False),
        sa.Column("started_at", _TS, nullable=True),
        sa.Column("finished_at", _TS, nullable=True),
        sa.Column("steps", sa.JSON, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("summary", sa.JSON, nullable=True),
        sa.Column("owner", sa.String(300), nullable=True),
    )
    op.create_index("ix_runs_pipeline", "runs", ["pipeline"])
    op.create_index("ix_runs_status", "runs", ["status"])
    op.create_index("ix_runs_submitted_at", "runs", ["submitted_at"])
    op.create_table(
        "monitoring_results",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("window_start", _TS, nullable=False),
        sa.Column("window_end", _TS, nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("feature", sa.String(200), nullable=False),
        sa.Column("metric", sa.String(20), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("threshold", sa.Float, nullable=True),
        sa.Column("drifted", sa.Boolean, nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("computed_at", _TS, nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
        sa.UniqueConstraint("model", "version", "window_start", "window_end", "kind", "feature", "metric",
                            name="uq_monitoring_results_window_score"),
    )
    op.create_index("ix_monitoring_results_model_version_window", "monitoring_results",
                    ["model", "version", "window_start"])
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("severity", sa.String(20), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("threshold", sa.Float, nullable=True),
        sa.Column("fired_at", _TS, nullable=False),
        sa.Column("resolved_at", _TS, nullable=True),
        sa.Column("details", sa.JSON, nullable=False),
    )
    op.create_index("ix_alerts_model_version_fired", "alerts", ["model", "version", "fired_at"])
    op.create_table(
        "retrain_decisions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("decided_at", _TS, nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("run_id", sa.String(200), nullable=True),
        sa.Column("details", sa.JSON, nullable=False),
    )
    op.create_index("ix_retrain_decisions_model_decided", "retrain_decisions", ["model", "decided_at"])


def downgrade() -> None:
    for table in ("retrain_decisions", "alerts", "monitoring_results", "runs"):
        op.drop_table(table)
