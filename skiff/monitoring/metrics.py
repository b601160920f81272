"""Drift scores as Prometheus metrics: the latest scored window of each model version, per feature.

Families (labels ``model``, ``version``, ``feature`` — ``prediction`` for the prediction distribution —
and ``metric``: ``psi``, ``linf`` or ``js``):

* ``skiff_drift_score``: the score of the latest window;
* ``skiff_drift_threshold``: the threshold it was compared with (the spec's ``drift_threshold`` for PSI);
* ``skiff_drift_detected``: 1 when that score drifted (above its threshold and, for PSI, significant);
* ``skiff_drift_window_end_timestamp_seconds`` (labels ``model``, ``version``): the end of that window,
  so an alert can tell stale scores (the monitor stopped) from fresh ones.

Performance on labeled traffic (:mod:`skiff.monitoring.decay`), the latest window with labels of each
model version (labels ``model``, ``version``, ``metric``: ``accuracy``, ``roc_auc`` or ``rmse``):

* ``skiff_model_performance``, ``skiff_model_performance_ci_lower`` / ``_ci_upper`` (its 95% interval);
* ``skiff_model_performance_floor``: the floor (RMSE: ceiling) from the version's test metric;
* ``skiff_model_performance_baseline``: the version's test metric itself;
* ``skiff_model_performance_below_floor``: 1 when the whole interval is past the floor (the alert's
  condition, ``SkiffModelAccuracyBelowFloor``);
* ``skiff_model_performance_labeled_rows``: how many labeled rows the window had.

They are computed from the control plane at scrape time (:class:`DriftCollector`, served by the REST
API's ``/api/v1/metrics``: the monitor is a batch job, gone before Prometheus would scrape it, and every
API replica reads the same database), or written once as a text file (:func:`write_metrics_file`,
``skiff monitor run --metrics-file``: node-exporter's textfile collector, or a laptop).
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from skiff.control_plane import ControlPlane, MonitoringResult, PerformanceResult

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = ["latest_windows", "drift_metrics", "performance_metrics", "DriftCollector", "exposition",
           "write_metrics_file"]


def latest_windows(results: Iterable[MonitoringResult]) -> list[MonitoringResult]:
    """Of each (model, version), the scores of its latest window only."""
    latest: dict[tuple[str, int], str] = {}
    rows = list(results)
    for r in rows:
        key = (r.model, r.version)
        latest[key] = max(latest.get(key, ""), r.window_start)
    return [r for r in rows if r.window_start == latest[(r.model, r.version)]]


def _epoch(iso: str) -> float:
    when = dt.datetime.fromisoformat(iso)
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()


def drift_metrics(results: Iterable[MonitoringResult]) -> list[Metric]:
    """The metric families of the latest window of each model version in ``results``."""
    from prometheus_client.core import GaugeMetricFamily

    labels = ["model", "version", "feature", "metric"]
    score = GaugeMetricFamily("skiff_drift_score", "Drift score of the latest monitored window", labels=labels)
    threshold = GaugeMetricFamily("skiff_drift_threshold", "Threshold the drift score is compared with",
                                  labels=labels)
    detected = GaugeMetricFamily("skiff_drift_detected", "1 when the latest window's score drifted", labels=labels)
    window = GaugeMetricFamily("skiff_drift_window_end_timestamp_seconds",
                               "End of the latest monitored window (Unix time)", labels=["model", "version"])
    ends: dict[tuple[str, str], float] = {}
    for r in latest_windows(results):
        values = [r.model, str(r.version), r.feature or "prediction", r.metric]
        score.add_metric(values, r.value)
        if r.threshold is not None:
            threshold.add_metric(values, r.threshold)
        detected.add_metric(values, 1.0 if r.drifted else 0.0)
        ends[(r.model, str(r.version))] = _epoch(r.window_end)
    for key, end in sorted(ends.items()):
        window.add_metric(list(key), end)
    return [score, threshold, detected, window]


def performance_metrics(results: Iterable[PerformanceResult]) -> list[Metric]:
    """The performance families of the latest labeled window of each model version in ``results``."""
    from prometheus_client.core import GaugeMetricFamily

    labels = ["model", "version", "metric"]
    fams = {name: GaugeMetricFamily(f"skiff_model_performance{name}", doc, labels=labels) for name, doc in (
        ("", "Performance of the latest labeled window"),
        ("_ci_lower", "Lower bound of its 95% interval"), ("_ci_upper", "Upper bound of its 95% interval"),
        ("_floor", "Floor (RMSE: ceiling) from the version's test metric"),
        ("_baseline", "The version's held-out test value of the metric"),
        ("_below_floor", "1 when the whole interval is past the floor"),
        ("_labeled_rows", "Labeled rows of the latest window"))}
    latest: dict[tuple[str, int, str], PerformanceResult] = {}
    for r in results:
        key = (r.model, r.version, r.metric)
        if key not in latest or r.window_start > latest[key].window_start:
            latest[key] = r
    for (model, version, metric), r in sorted(latest.items()):
        values = [model, str(version), metric]
        fams[""].add_metric(values, r.value)
        fams["_ci_lower"].add_metric(values, r.ci_low)
        fams["_ci_upper"].add_metric(values, r.ci_high)
        if r.floor is not None:
            fams["_floor"].add_metric(values, r.floor)
        if r.baseline is not None:
            fams["_baseline"].add_metric(values, r.baseline)
        fams["_below_floor"].add_metric(values, 1.0 if r.decayed else 0.0)
        fams["_labeled_rows"].add_metric(values, float(r.labeled))
    return list(fams.values())


class DriftCollector:
    """A Prometheus collector reading the latest drift scores of ``models`` (default: every model with
    scores) from the control plane on each scrape."""

    def __init__(self, control_plane: ControlPlane, models: Sequence[str] | None = None) -> None:
        self.control_plane = control_plane
        self.models = models

    def collect(self) -> Iterator[Metric]:
        models = self.models if self.models is not None else self.control_plane.monitored_models()
        results = [r for m in models for r in self.control_plane.monitoring_results(m)]
        yield from drift_metrics(results)
        perf_models = self.models if self.models is not None else self.control_plane.performance_models()
        yield from performance_metrics(r for m in perf_models for r in self.control_plane.performance_results(m))


def exposition(results: Iterable[MonitoringResult], performance: Iterable[PerformanceResult] = ()) -> bytes:
    """The Prometheus text exposition of :func:`drift_metrics` and :func:`performance_metrics`."""
    from prometheus_client import CollectorRegistry, generate_latest

    families = drift_metrics(results) + performance_metrics(performance)

    class _Fixed:
        def collect(self) -> Iterator[Metric]:
            yield from families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed())
    return generate_latest(registry)


def write_metrics_file(path: str | Path, results: Iterable[MonitoringResult],
                       performance: Iterable[PerformanceResult] = ()) -> Path:
    """Write :func:`exposition` to ``path`` whole (a temporary file in the same folder, renamed: the
    textfile collector never reads half a file)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".prom.tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(exposition(results, performance))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
