"""``skiff monitor run``'s work: score each logged window of a model against its version's reference and
store the scores in the control plane.

A window is one hour partition of the inference log (:mod:`skiff.inference_log`) of one version. Windows
with fewer than ``min_rows`` rows are reported as skipped (too few rows to tell drift from noise), not
scored. Re-running over the same windows replaces their stored scores.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from skiff.config import Settings
from skiff.control_plane import ControlPlane, MonitoringResult
from skiff.control_plane.store import utc_now
from skiff.errors import NotFoundError
from skiff.inference_log import log_partitions, log_store, read_log
from skiff.monitoring.drift import DEFAULT_ALPHA, Reference, score_window
from skiff.monitoring.reference import reference_for_version

__all__ = ["WindowReport", "monitor_model", "window_columns"]


@dataclass
class WindowReport:
    """One window's outcome."""

    version: int
    window_start: str
    window_end: str
    rows: int
    skipped: str | None = None
    results: list[MonitoringResult] = field(default_factory=list)

    @property
    def drifted(self) -> list[str]:
        """The features (``prediction`` for the predictions) with a drifted score."""
        return sorted({r.feature or "prediction" for r in self.results if r.drifted})

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "window_start": self.window_start, "window_end": self.window_end,
                "rows": self.rows, "skipped": self.skipped, "drifted": self.drifted,
                "results": [r.model_dump() for r in self.results]}


def window_columns(table: Any) -> tuple[dict[str, Any], list[Any]]:
    """A log table's inputs (column -> values) and predictions."""
    inputs = table.column("inputs").combine_chunks()
    columns = {f.name: inputs.field(i).to_numpy(zero_copy_only=False) for i, f in enumerate(inputs.type)}
    predictions = table.column("outputs").combine_chunks().field("prediction").to_pylist()
    return columns, predictions


def monitor_model(settings: Settings, model: str, *, version: int | None = None, since: dt.datetime | None = None,
                  min_rows: int = 200, alpha: float = DEFAULT_ALPHA, store: ControlPlane | None = None,
                  references: Callable[[int], Reference] | None = None) -> list[WindowReport]:
    """Score every logged window of ``model`` (one version's, with ``version``; from ``since`` on) and store
    the scores; ``references`` maps a version to its reference (default: :func:`reference_for_version`)."""
    logs = log_store(settings)
    partitions = [(v, h) for v, h in log_partitions(logs, model, version) if since is None or h >= since]
    if not partitions:
        raise NotFoundError(f"no inference log for model {model!r}"
                            + (f" version {version}" if version is not None else "")
                            + (f" since {since.isoformat()}" if since else "") + f" in {logs.uri()}")
    lookup = references or (lambda v: reference_for_version(settings, model, v))
    refs: dict[int, Reference] = {}
    store = store or ControlPlane.from_settings(settings)
    reports = []
    for v, hour in partitions:
        start, end = hour, hour + dt.timedelta(hours=1)
        table = read_log(logs, model, v, hour)
        report = WindowReport(v, start.isoformat(), end.isoformat(), table.num_rows)
        if table.num_rows < min_rows:
            report.skipped = f"{table.num_rows} rows, fewer than {min_rows}"
            reports.append(report)
            continue
        if v not in refs:
            refs[v] = lookup(v)
        inputs, predictions = window_columns(table)
        computed = utc_now().isoformat()
        for kind, s in score_window(refs[v], inputs, predictions, alpha=alpha):
            report.results.append(MonitoringResult(
                model=model, version=v, window_start=report.window_start, window_end=report.window_end, kind=kind,
                feature=s.feature, metric=s.metric, value=s.value, threshold=s.threshold, drifted=s.drifted,
                rows=s.rows, computed_at=computed, details=s.details))
        store.save_window(report.results)
        reports.append(report)
    return reports
