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
from skiff.control_plane import Alert, ControlPlane, MonitoringResult
from skiff.control_plane.store import utc_now
from skiff.errors import NotFoundError
from skiff.inference_log import log_partitions, log_store, read_log
from skiff.monitoring.drift import DEFAULT_ALPHA, Reference, score_window
from skiff.monitoring.reference import reference_for_version
from skiff.monitoring.retrain import Evidence

__all__ = ["WindowReport", "monitor_model", "window_columns", "record_alerts", "evidence"]


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


def record_alerts(store: ControlPlane, model: str, drift: list[WindowReport],
                  performance: list[Any] | None = None) -> list[Alert]:
    """Raise an alert (control plane) for each drifted window and each decayed one
    (:class:`skiff.monitoring.decay.WindowPerformance`) that has none yet; returns the new ones."""
    seen = {(a.kind, a.version, a.details.get("window_start")) for a in store.alerts(model)}
    new: list[Alert] = []
    for w in drift:
        if w.drifted and ("drift", w.version, w.window_start) not in seen:
            top = max((r for r in w.results if r.drifted and r.metric == "psi"), key=lambda r: r.value, default=None)
            new.append(Alert(model=model, version=w.version, kind="drift", severity="warning",
                             message=f"{model} version {w.version}: {', '.join(w.drifted)} drifted in the window "
                             f"from {w.window_start}", value=top.value if top else None,
                             threshold=top.threshold if top else None,
                             details={"window_start": w.window_start, "window_end": w.window_end,
                                      "features": w.drifted}))
    for p in performance or []:
        for r in p.results:
            if r.decayed and ("accuracy_below_floor", p.version, p.window_start) not in seen:
                new.append(Alert(model=model, version=p.version, kind="accuracy_below_floor", severity="critical",
                                 message=f"{model} version {p.version}: {r.metric} {r.value:.3f} (95% interval "
                                 f"{r.ci_low:.3f}-{r.ci_high:.3f}) past its floor {r.floor:.3f} in the window "
                                 f"from {p.window_start}", value=r.value, threshold=r.floor,
                                 details={"window_start": p.window_start, "window_end": p.window_end,
                                          "metric": r.metric, "labeled": r.labeled}))
                seen.add(("accuracy_below_floor", p.version, p.window_start))
    return [store.add_alert(a) for a in new]


def evidence(store: ControlPlane, model: str) -> Evidence:
    """The retrain policy's evidence (:class:`skiff.monitoring.retrain.Evidence`) from every stored window
    of ``model``: drifted windows and windows below their performance floor."""
    drifted: dict[tuple[str, int], set[str]] = {}
    for r in store.monitoring_results(model):
        if r.drifted and r.metric == "psi":
            drifted.setdefault((r.window_end, r.version), set()).add(r.feature or "prediction")
    decayed: dict[tuple[str, int], set[str]] = {}
    for p in store.performance_results(model):
        if p.decayed:
            decayed.setdefault((p.window_end, p.version), set()).add(p.metric)
    return Evidence(drift=[(end, v, sorted(f)) for (end, v), f in sorted(drifted.items())],
                    decay=[(end, v, sorted(m)) for (end, v), m in sorted(decayed.items())])
