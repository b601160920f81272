"""Performance decay: labels posted after the prediction, and per-window performance results.

Revision ID: 0002_performance
Revises: 0001_initial
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_performance"
down_revision: str | None = "0001_initial"
branch_labels: str | None = None
depends_on: str | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "ground_truth_labels",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(100), nullable=False),
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("row", sa.Integer, nullable=False),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("received_at", _TS, nullable=False),
        sa.Column("source", sa.String(40), nullable=False),
        sa.UniqueConstraint("model", "request_id", "row", name="uq_ground_truth_labels_request_row"),
    )
    op.create_index("ix_ground_truth_labels_model", "ground_truth_labels", ["model"])
    op.create_table(
        "performance_results",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("window_start", _TS, nullable=False),
        sa.Column("window_end", _TS, nullable=False),
        sa.Column("metric", sa.String(20), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("ci_low", sa.Float, nullable=False),
        sa.Column("ci_high", sa.Float, nullable=False),
        sa.Column("baseline", sa.Float, nullable=True),
        sa.Column("floor", sa.Float, nullable=True),
        sa.Column("decayed", sa.Boolean, nullable=False),
        sa.Column("labeled", sa.Integer, nullable=False),
        sa.Column("logged", sa.Integer, nullable=False),
        sa.Column("computed_at", _TS, nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
        sa.UniqueConstraint("model", "version", "window_start", "window_end", "metric",
                            name="uq_performance_results_window_metric"),
    )
    op.create_index("ix_performance_results_model_version_window", "performance_results",
                    ["model", "version", "window_start"])


def downgrade() -> None:
    op.drop_table("performance_results")
    op.drop_table("ground_truth_labels")
