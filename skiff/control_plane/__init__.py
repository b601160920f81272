"""The durable control plane: run records, monitoring results, alerts and retrain decisions in SQL.

SQLite under the skiff root by default (``<root>/skiff.db``), PostgreSQL on a cluster (``database_url``),
through SQLAlchemy 2; the schema is Alembic's (``migrations/``), upgraded when a store opens, once at a
time across processes (a PostgreSQL advisory lock, a file lock next to a SQLite file).
"""

from skiff.control_plane.records import (
    Alert,
    GroundTruthLabel,
    MonitoringResult,
    PerformanceResult,
    RetrainDecision,
    RunRecord,
    RunStatus,
)
from skiff.control_plane.store import ControlPlane, engine_url, migrate

__all__ = ["ControlPlane", "RunRecord", "RunStatus", "MonitoringResult", "Alert", "RetrainDecision", "migrate",
           "engine_url", "GroundTruthLabel", "PerformanceResult"]
