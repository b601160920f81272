"""The HTML report of a monitoring window, for people without Grafana: one self-contained page per scored
window (no script, no external file: the charts are matplotlib PNGs inlined as ``data:`` URIs).

A page shows the window's drift per feature (PSI against its threshold, drifted features marked), the
prediction distribution of the window against the validation-time one (the reference's bins), and the
version's performance on labeled traffic over its windows (each metric with its 95% interval and floor).
Every value shown comes from the control plane and the inference log; names from data are HTML-escaped.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from skiff.config import Settings
from skiff.control_plane import ControlPlane, MonitoringResult, PerformanceResult
from skiff.errors import NotFoundError, UsageError

__all__ = ["render_window_report", "window_report", "write_reports", "REPORT_CSP"]

#: what the API sends with a report: nothing but inline styles and data: images
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width: float, height: float) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def _drift_chart(scores: list[MonitoringResult]) -> str | None:
    psi = sorted((r for r in scores if r.metric == "psi"), key=lambda r: r.value)
    if not psi:
        return None
    fig, ax = _figure(7, 0.35 * len(psi) + 1.2)
    names = [r.feature or "prediction" for r in psi]
    ax.barh(names, [r.value for r in psi], color=["#c0392b" if r.drifted else "#5d8aa8" for r in psi])
    for i, r in enumerate(psi):
        if r.threshold is not None:
            ax.plot([r.threshold, r.threshold], [i - 0.4, i + 0.4], color="black", linewidth=1)
    ax.set_xlabel("PSI (bar) and its threshold (line); red: drifted")
    return _png(fig)


def _prediction_chart(reference: Any, predictions: list[Any]) -> str | None:
    if reference is None or not predictions:
        return None
    ref = np.asarray(reference.counts, dtype=float)
    win = reference.bin_counts(predictions).astype(float)
    if ref.sum() == 0 or win.sum() == 0:
        return None
    if reference.kind == "categorical":
        labels = [*reference.categories, "other", "missing"]
    else:
        edges = list(reference.edges)
        labels = ([f"<= {edges[0]:.3g}"] + [f"<= {e:.3g}" for e in edges[1:]] + [f"> {edges[-1]:.3g}"]
                  if edges else ["all"]) + ["missing"]
    x = np.arange(len(labels))
    fig, ax = _figure(7, 2.8)
    ax.bar(x - 0.2, ref / ref.sum(), 0.4, label="validation time", color="#95a5a6")
    ax.bar(x + 0.2, win / win.sum(), 0.4, label="this window", color="#2c7fb8")
    ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("share")
    ax.legend()
    return _png(fig)


def _performance_chart(results: list[PerformanceResult]) -> str | None:
    if not results:
        return None
    fig, ax = _figure(7, 2.8)
    for metric in sorted({r.metric for r in results}):
        rows = sorted((r for r in results if r.metric == metric), key=lambda r: r.window_start)
        xs = [dt.datetime.fromisoformat(r.window_start) for r in rows]
        vals = np.asarray([r.value for r in rows])
        err = np.asarray([[r.value - r.ci_low for r in rows], [r.ci_high - r.value for r in rows]])
        ax.errorbar(xs, vals, yerr=np.clip(err, 0, None), marker="o", capsize=3, label=metric)
        floors = [r.floor for r in rows if r.floor is not None]
        if floors:
            ax.axhline(floors[-1], linestyle="--", linewidth=1, color="#c0392b")
    ax.set_ylabel("value, 95% interval; dashed: floor")
    ax.legend()
    fig.autofmt_xdate()
    return _png(fig)


def _img(src: str | None, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="{src}">' if src else f"<p><em>{html.escape(alt)}: no data</em></p>"


def render_window_report(model: str, version: int, window_start: str, window_end: str,
                         scores: list[MonitoringResult], performance: list[PerformanceResult], *,
                         prediction_reference: Any = None, predictions: list[Any] | None = None) -> str:
    """One window's page (``performance``: the version's results over all its windows)."""
    e = html.escape
    drifted = sorted({r.feature or "prediction" for r in scores if r.drifted})
    rows = "".join(
        f"<tr><td>{e(r.feature or 'prediction')}</td><td>{e(r.metric)}</td><td>{r.value:.4f}</td>"
        f"<td>{'' if r.threshold is None else f'{r.threshold:.4g}'}</td><td>{'yes' if r.drifted else ''}</td>"
        f"<td>{r.rows}</td></tr>" for r in sorted(scores, key=lambda r: (r.feature, r.metric)))
    here = [p for p in performance if p.window_start == window_start]
    perf_rows = "".join(
        f"<tr><td>{e(p.metric)}</td><td>{p.value:.4f}</td><td>{p.ci_low:.4f} – {p.ci_high:.4f}</td>"
        f"<td>{'' if p.baseline is None else f'{p.baseline:.4f}'}</td>"
        f"<td>{'' if p.floor is None else f'{p.floor:.4f}'}</td><td>{'yes' if p.decayed else ''}</td>"
        f"<td>{p.labeled} of {p.logged}</td></tr>" for p in here)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(model)} v{version} {e(window_start)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:60em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}}.bad{{color:#c0392b}}</style></head><body>
<h1>{e(model)} version {version}</h1>
<p>Window {e(window_start)} – {e(window_end)} (UTC).
<span class="{'bad' if drifted else ''}">Drifted: {e(', '.join(drifted) or 'none')}.</span></p>
<h2>Drift per feature</h2>{_img(_drift_chart(scores), "PSI per feature")}
<table><tr><th>feature</th><th>metric</th><th>value</th><th>threshold</th><th>drifted</th><th>rows</th></tr>
{rows}</table>
<h2>Prediction distribution</h2>{_img(_prediction_chart(prediction_reference, predictions or []),
                                       "predictions against validation time")}
<h2>Performance on labeled traffic</h2>{_img(_performance_chart(performance), "performance over windows")}
<table><tr><th>metric</th><th>value</th><th>95% interval</th><th>test value</th><th>floor</th><th>below floor</th>
<th>labeled</th></tr>{perf_rows or '<tr><td colspan="7">no labels for this window</td></tr>'}</table>
</body></html>
"""


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".html.tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def window_report(settings: Settings, model: str, version: int, window_start: str, *,
                  store: ControlPlane) -> str:
    """The page of one stored window (:class:`NotFoundError` when it was not scored)."""
    from skiff.inference_log import log_store, read_log
    from skiff.monitoring.reference import reference_for_version
    from skiff.monitoring.runner import window_columns

    scores = [r for r in store.monitoring_results(model, version) if r.window_start == window_start]
    performance = store.performance_results(model, version)
    if not scores and not any(p.window_start == window_start for p in performance):
        raise NotFoundError(f"no monitored window of {model} version {version} starting {window_start}")
    end = (scores[0].window_end if scores else
           next(p.window_end for p in performance if p.window_start == window_start))
    predictions: list[Any] = []
    reference = None
    try:
        table = read_log(log_store(settings), model, version, dt.datetime.fromisoformat(window_start))
        _, predictions = window_columns(table)
        reference = reference_for_version(settings, model, version).prediction
    except (NotFoundError, UsageError):
        pass
    return render_window_report(model, version, window_start, end, scores, performance,
                                prediction_reference=reference, predictions=predictions)


def write_reports(settings: Settings, model: str, out_dir: str | Path, *, store: ControlPlane,
                  version: int | None = None) -> Path:
    """Write ``<out_dir>/<model>/v<version>-<window start>.html`` for every stored window; returns the folder."""
    windows = sorted({(r.version, r.window_start) for r in store.monitoring_results(model, version)} |
                     {(p.version, p.window_start) for p in store.performance_results(model, version)})
    folder = Path(out_dir) / model
    for v, start in windows:
        stamp = dt.datetime.fromisoformat(start).strftime("%Y%m%dT%H%M")
        _write_atomic(folder / f"v{v}-{stamp}.html", window_report(settings, model, v, start, store=store))
    return folder
