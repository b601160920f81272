"""Evaluation of a trained skiff model on held-out rows, its report, and the champion/challenger gate.

``evaluate`` scores a fitted pipeline on the test split with the same metric definitions as
cross-validation (:mod:`skiff.metrics`) plus curves, a confusion matrix and calibration;
``report`` writes PNG charts and one self-contained HTML page; ``champion_metrics`` re-scores the
registered champion on the challenger's own test split, so ``gate`` — which decides whether a challenger
replaces the champion — compares both models on the same rows.
"""

from __future__ import annotations

import base64
import html
import logging
import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve
from threadpoolctl import threadpool_limits

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

from skiff.errors import InputError, UsageError
from skiff.metrics import (
    binary_metrics,
    default_scoring,
    multiclass_metrics,
    regression_metrics,
)
from skiff.metrics import higher_is_better as _metric_higher_is_better
from skiff.modeling import positive_label, target_array
from skiff.registry import ModelRegistry
from skiff.spec import DatasetSpec

__all__ = [
    "EvalResult",
    "GateDecision",
    "StepEvaluation",
    "evaluate",
    "evaluate_step",
    "champion_metrics",
    "finite_metrics",
    "gate_metric_for",
    "report",
    "gate",
]

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    """Held-out metrics of one model. ``metrics`` holds only finite-or-NaN floats (log-ready)."""

    problem_type: str
    metrics: dict[str, float]
    n: int
    threshold: float | None = None
    classes: list[Any] | None = None
    positive_class: Any = None
    #: rows = true class, columns = predicted class, in ``classes`` order
    confusion_matrix: list[list[int]] | None = None
    #: per class label (binary: the positive class only): {"fpr", "tpr", "thresholds"}
    roc_curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    #: per class label: {"precision", "recall", "thresholds"}
    pr_curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    #: binary: {"prob_pred", "prob_true", "count"} per non-empty bin of predicted probability
    calibration: dict[str, list[float]] | None = None
    #: regression: mean, std, median, p05, p95, max_abs of (actual - predicted)
    residuals: dict[str, float] | None = None
    y_true: np.ndarray | None = field(default=None, repr=False)
    y_pred: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN becomes null); leaves out the per-row arrays."""

        def clean(v: Any) -> Any:
            if isinstance(v, dict):
                return {str(k): clean(x) for k, x in v.items()}
            if isinstance(v, (list, tuple)):
                return [clean(x) for x in v]
            if isinstance(v, np.generic):
                v = v.item()
            if isinstance(v, float) and not math.isfinite(v):
                return None
            return v

        out: dict[str, Any] = clean(
            {
                "problem_type": self.problem_type,
                "n": self.n,
                "metrics": self.metrics,
                "threshold": self.threshold,
                "classes": self.classes,
                "positive_class": self.positive_class,
                "confusion_matrix": self.confusion_matrix,
                "roc_curves": self.roc_curves,
                "pr_curves": self.pr_curves,
                "calibration": self.calibration,
                "residuals": self.residuals,
            }
        )
        return out


def _thin(curve: dict[str, np.ndarray], limit: int = 400) -> dict[str, list[float]]:
    """At most ``limit`` points per curve (evenly spaced indexes, ends kept), as plain floats."""
    n = len(next(iter(curve.values())))
    idx = np.unique(np.linspace(0, n - 1, min(n, limit)).round().astype(int)) if n else np.array([], int)
    out = {}
    for k, v in curve.items():
        v = np.asarray(v, dtype=float)
        # roc_curve's first threshold is +inf: keep the point, store a finite 1.0 (above any probability)
        v = np.where(np.isinf(v), 1.0, v)
        out[k] = [float(x) for x in (v[idx] if len(v) == n else v)]
    return out


def evaluate(
    model: Any,
    X_test: pd.DataFrame,
    y_test: pd.Series | np.ndarray,
    spec: DatasetSpec,
    threshold: float | None = None,
    n_threads: int = 1,
) -> EvalResult:
    """Score ``model`` on ``X_test``/``y_test``. Binary decisions use ``threshold`` (0.5 if None).

    Predictions run with at most ``n_threads`` OpenMP/BLAS threads.
    """
    with threadpool_limits(limits=n_threads):
        return _evaluate(model, X_test, y_test, spec, threshold)


def _evaluate(
    model: Any,
    X_test: pd.DataFrame,
    y_test: pd.Series | np.ndarray,
    spec: DatasetSpec,
    threshold: float | None,
) -> EvalResult:
    problem = spec.problem_type
    if problem is None or spec.target is None:
        raise UsageError(f"dataset spec {spec.name!r} has no target/problem_type: nothing to evaluate")
    y_series = y_test if isinstance(y_test, pd.Series) else pd.Series(np.asarray(y_test))
    if len(y_series) != len(X_test):
        raise InputError(f"X_test has {len(X_test)} rows but y_test has {len(y_series)}")
    keep = y_series.notna().to_numpy()
    if not keep.any():
        raise InputError(f"no test row has a value in target {spec.target!r}")
    X = X_test[keep]
    y = target_array(y_series[keep], spec)

    if problem == "regression":
        pred = np.asarray(model.predict(X), dtype=float)
        resid = y - pred
        return EvalResult(
            problem_type=problem,
            metrics={**regression_metrics(y, pred), "n": float(len(y))},
            n=len(y),
            residuals={
                "mean": float(resid.mean()),
                "std": float(resid.std()),
                "median": float(np.median(resid)),
                "p05": float(np.quantile(resid, 0.05)),
                "p95": float(np.quantile(resid, 0.95)),
                "max_abs": float(np.abs(resid).max()),
            },
            y_true=y,
            y_pred=pred,
        )

    classes = list(model.classes_)
    proba = np.asarray(model.predict_proba(X), dtype=float)
    unknown = sorted({str(v) for v in pd.unique(y)} - {str(c) for c in classes})
    if unknown:
        raise InputError(
            f"target {spec.target!r} has label(s) the model never saw: {', '.join(unknown)}",
            column=spec.target,
        )
    onehot = np.column_stack([y == c for c in classes]).astype(int)
    roc_curves: dict[str, dict[str, list[float]]] = {}
    pr_curves: dict[str, dict[str, list[float]]] = {}

    if problem == "binary":
        pos = positive_label(classes, spec)
        neg = next(c for c in classes if c != pos)
        t = 0.5 if threshold is None else float(threshold)
        p_pos = proba[:, classes.index(pos)]
        truth = y == pos
        m = binary_metrics(y, p_pos, pos, t)
        m["brier"] = float(skm.brier_score_loss(truth, p_pos))
        m["log_loss"] = float(skm.log_loss(truth, p_pos, labels=[False, True]))
        m["threshold"] = t
        m["n"] = float(len(y))
        pred = np.where(p_pos >= t, pos, neg)
        order = [neg, pos]
        cm = skm.confusion_matrix(y, pred, labels=order)
        if truth.any() and (~truth).any():
            fpr, tpr, thr = skm.roc_curve(truth, p_pos)
            roc_curves[str(pos)] = _thin({"fpr": fpr, "tpr": tpr, "thresholds": thr})
            prec, rec, pthr = skm.precision_recall_curve(truth, p_pos)
            pr_curves[str(pos)] = _thin({"precision": prec[:-1], "recall": rec[:-1], "thresholds": pthr})
        prob_true, prob_pred = calibration_curve(truth, p_pos, n_bins=10, strategy="uniform")
        counts = np.histogram(p_pos, bins=np.linspace(0, 1, 11))[0]
        calibration: dict[str, list[float]] = {
            "prob_pred": [float(v) for v in prob_pred],
            "prob_true": [float(v) for v in prob_true],
            "count": [int(c) for c in counts if c > 0],
        }
        return EvalResult(
            problem_type=problem,
            metrics=m,
            n=len(y),
            threshold=t,
            classes=order,
            positive_class=pos,
            confusion_matrix=cm.tolist(),
            roc_curves=roc_curves,
            pr_curves=pr_curves,
            calibration=calibration,
            y_true=y,
            y_pred=p_pos,
        )

    m = multiclass_metrics(y, proba, classes)
    pred = np.asarray(classes)[np.argmax(proba, axis=1)]
    m["precision_weighted"] = float(
        skm.precision_score(y, pred, labels=classes, average="weighted", zero_division=0)
    )
    m["recall_weighted"] = float(
        skm.recall_score(y, pred, labels=classes, average="weighted", zero_division=0)
    )
    m["brier"] = float(np.mean(np.sum((proba - onehot) ** 2, axis=1)))
    m["log_loss"] = float(skm.log_loss(onehot, proba))
    m["n"] = float(len(y))
    cm = skm.confusion_matrix(y, pred, labels=classes)
    for i, c in enumerate(classes):
        if 0 < onehot[:, i].sum() < len(y):
            fpr, tpr, thr = skm.roc_curve(onehot[:, i], proba[:, i])
            roc_curves[str(c)] = _thin({"fpr": fpr, "tpr": tpr, "thresholds": thr})
            prec, rec, pthr = skm.precision_recall_curve(onehot[:, i], proba[:, i])
            pr_curves[str(c)] = _thin({"precision": prec[:-1], "recall": rec[:-1], "thresholds": pthr})
    return EvalResult(
        problem_type=problem,
        metrics=m,
        n=len(y),
        classes=classes,
        confusion_matrix=cm.tolist(),
        roc_curves=roc_curves,
        pr_curves=pr_curves,
        y_true=y,
        y_pred=proba,
    )


# --------------------------------------------------------------------------------------------------
# report


def champion_metrics(registry: ModelRegistry, name: str, test: pd.DataFrame, spec: DatasetSpec) -> dict[str, float]:
    """The current champion's metrics on ``test`` ({} when there is no champion)."""
    champ = registry.champion_version(name)
    if champ is None or champ not in registry.version_numbers(name):
        return {}
    mv = registry.get(name, champ)
    model = registry.load_model(name, champ)
    features = mv.metadata.features or spec.feature_columns
    missing = [c for c in features if c not in test.columns]
    if missing:
        log.warning("champion %s v%s needs columns %s the new data lacks: it cannot be compared; "
                    "treating it as beaten", name, champ, missing)
        return {}
    result = evaluate(model, test[features], test[spec.target], spec, mv.metadata.threshold)
    return finite_metrics(result.metrics)


def _figure(width: float = 5.0, height: float = 4.0) -> tuple[Figure, Axes]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def _plots(result: EvalResult, out: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    if result.problem_type == "regression":
        y, p = result.y_true, result.y_pred
        assert y is not None and p is not None  # a regression result keeps both
        fig, ax = _figure()
        ax.scatter(y, p, s=6, alpha=0.4)
        lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
        ax.plot([lo, hi], [lo, hi], "k--", linewidth=1, label="perfect")
        ax.set(
            xlabel="actual", ylabel="predicted", title=f"Predicted vs actual (R² {result.metrics['r2']:.3f})"
        )
        ax.legend(loc="upper left")
        files["predicted_vs_actual"] = _save(fig, out / "predicted_vs_actual.png")
        fig, ax = _figure()
        ax.scatter(p, y - p, s=6, alpha=0.4)
        ax.axhline(0, color="k", linestyle="--", linewidth=1)
        ax.set(xlabel="predicted", ylabel="actual − predicted", title="Residuals")
        files["residuals"] = _save(fig, out / "residuals.png")
        return files

    if result.roc_curves:
        fig, ax = _figure()
        for label, c in result.roc_curves.items():
            ax.plot(c["fpr"], c["tpr"], label=label if len(result.roc_curves) > 1 else None)
        ax.plot([0, 1], [0, 1], "k--", linewidth=1)
        ax.set(
            xlabel="false positive rate",
            ylabel="true positive rate",
            title=f"ROC (AUC {result.metrics['roc_auc']:.3f})",
        )
        if len(result.roc_curves) > 1:
            ax.legend(loc="lower right", fontsize="small")
        files["roc"] = _save(fig, out / "roc.png")
        fig, ax = _figure()
        for label, c in result.pr_curves.items():
            ax.plot(c["recall"], c["precision"], label=label if len(result.pr_curves) > 1 else None)
        ax.set(
            xlabel="recall",
            ylabel="precision",
            title=f"Precision-recall (AP {result.metrics['pr_auc']:.3f})",
            ylim=(0, 1.02),
        )
        if len(result.pr_curves) > 1:
            ax.legend(loc="lower left", fontsize="small")
        files["pr"] = _save(fig, out / "pr.png")

    cm = np.asarray(result.confusion_matrix)
    labels = [str(c) for c in result.classes or []]
    fig, ax = _figure(4.5 + 0.3 * len(labels), 4.0 + 0.3 * len(labels))
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
    title = "Confusion matrix" + (
        f" (threshold {result.threshold:.3f})" if result.threshold is not None else ""
    )
    ax.set(xlabel="predicted", ylabel="actual", title=title)
    files["confusion_matrix"] = _save(fig, out / "confusion_matrix.png")

    if result.calibration is not None:
        fig, ax = _figure()
        ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfectly calibrated")
        ax.plot(result.calibration["prob_pred"], result.calibration["prob_true"], "o-", label="model")
        ax.set(
            xlabel="mean predicted probability",
            ylabel="observed frequency",
            title=f"Calibration (Brier {result.metrics['brier']:.3f})",
        )
        ax.legend(loc="upper left")
        files["calibration"] = _save(fig, out / "calibration.png")
    return files


def _table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, float_format=lambda v: f"{v:.4f}", border=0, classes="t", na_rep="–")


def report(
    result: EvalResult,
    out_dir: str | Path,
    cv_table: pd.DataFrame | None = None,
    title: str = "skiff model evaluation",
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write the charts (PNG) and ``report.html`` (self-contained: images embedded as base64) into
    ``out_dir``; returns name → path, with ``html`` for the page."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = _plots(result, out)

    metrics = pd.DataFrame([{"metric": k, "value": v} for k, v in result.metrics.items() if k != "n"])
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{html.escape(result.problem_type)} · {result.n} test rows"
        + (f" · decision threshold {result.threshold:.4f}" if result.threshold is not None else "")
        + (
            f" · positive class {html.escape(str(result.positive_class))}"
            if result.positive_class is not None
            else ""
        )
        + "</p>",
    ]
    if extra:
        rows = pd.DataFrame([{"": k, "value": str(v)} for k, v in extra.items()])
        parts += ["<h2>Model</h2>", _table(rows)]
    parts += ["<h2>Held-out metrics</h2>", _table(metrics)]
    if result.confusion_matrix is not None:
        labels = [str(c) for c in result.classes or []]
        cm = pd.DataFrame(result.confusion_matrix, columns=[f"pred {c}" for c in labels])
        cm.insert(0, "actual", labels)
        parts += ["<h2>Confusion matrix</h2>", _table(cm)]
    if result.residuals is not None:
        parts += ["<h2>Residuals (actual − predicted)</h2>", _table(pd.DataFrame([result.residuals]))]
    if cv_table is not None:
        parts += ["<h2>Cross-validation (training split)</h2>", _table(cv_table)]
    parts.append("<h2>Charts</h2>")
    for name, path in files.items():
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts.append(
            f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(name.replace('_', ' '))}</figcaption></figure>"
        )
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}"
        "table.t{border-collapse:collapse;margin:.5em 0}"
        "table.t td,table.t th{padding:.25em .7em;border-bottom:1px solid #ddd;text-align:right}"
        "figure{display:inline-block;margin:.5em}img{max-width:32em}"
        "</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )
    page_path = out / "report.html"
    page_path.write_text(page, encoding="utf-8")
    return {**files, "html": page_path}


# --------------------------------------------------------------------------------------------------
# gate


@dataclass(frozen=True)
class GateDecision:
    """Whether the challenger replaces the champion, and why.

    ``delta`` is challenger − champion; ``improvement`` is the same in the metric's better direction
    (positive means the challenger is better), None without a champion.
    """

    promote: bool
    reason: str
    metric: str
    challenger: float | None
    champion: float | None
    delta: float | None
    improvement: float | None
    margin: float
    higher_is_better: bool

    def record(self) -> dict[str, Any]:
        """The decision as a registered version records it (``metadata.gate``): the metric compared, both
        values, the margin, the improvement and the verdict (NaN written as None: JSON has no NaN)."""

        def num(v: float | None) -> float | None:
            return None if v is None or not math.isfinite(v) else float(v)

        return {"metric": self.metric, "challenger": num(self.challenger), "champion": num(self.champion),
                "delta": num(self.delta), "improvement": num(self.improvement), "margin": float(self.margin),
                "higher_is_better": self.higher_is_better, "promote": self.promote, "reason": self.reason}


def gate(
    challenger_metrics: Mapping[str, float],
    champion_metrics: Mapping[str, float] | None,
    metric: str,
    margin: float = 0.0,
    higher_is_better: bool | None = None,
) -> GateDecision:
    """Promote the challenger when there is no champion, or when it beats the champion on ``metric``
    by more than nothing and at least ``margin`` (in the metric's units). Error metrics (rmse, mae,
    log_loss, brier, ...) are lower-is-better unless ``higher_is_better`` says otherwise. A challenger
    whose metric is missing or NaN is a UsageError / not promoted."""
    if margin < 0:
        raise UsageError(f"gate margin must be >= 0, got {margin}")
    hib = _metric_higher_is_better(metric) if higher_is_better is None else higher_is_better
    if metric not in challenger_metrics:
        raise UsageError(
            f"gate metric {metric!r} is not among the challenger's metrics: {', '.join(sorted(challenger_metrics))}"
        )
    chal = _num(challenger_metrics[metric])
    if not champion_metrics:
        return GateDecision(
            True,
            f"no champion yet: challenger {metric}={_fmt(chal)} promoted",
            metric,
            chal,
            None,
            None,
            None,
            margin,
            hib,
        )
    if metric not in champion_metrics:
        raise UsageError(
            f"gate metric {metric!r} is not among the champion's metrics: {', '.join(sorted(champion_metrics))}"
        )
    champ = _num(champion_metrics[metric])
    if math.isnan(chal):
        return GateDecision(
            False,
            f"challenger {metric} is undefined (NaN): kept the champion",
            metric,
            chal,
            champ,
            None,
            None,
            margin,
            hib,
        )
    if math.isnan(champ):
        return GateDecision(
            True,
            f"champion {metric} is undefined (NaN): challenger {metric}={_fmt(chal)} promoted",
            metric,
            chal,
            champ,
            None,
            None,
            margin,
            hib,
        )
    delta = chal - champ
    improvement = delta if hib else -delta
    better = "higher" if hib else "lower"
    # a margin is met within float rounding: 0.85 - 0.84 must count as beating by 0.01
    promote = improvement > 0 and improvement >= margin - 1e-12
    verdict = "promoted" if promote else "kept the champion"
    reason = (
        f"challenger {metric}={_fmt(chal)} vs champion {_fmt(champ)} ({better} is better): "
        f"improvement {improvement:+.4g}, margin {margin:g}: {verdict}"
    )
    return GateDecision(promote, reason, metric, chal, champ, delta, improvement, margin, hib)


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError) as e:
        raise UsageError(f"gate: metric value {v!r} is not a number") from e


def _fmt(v: float) -> str:
    return f"{v:,.1f}" if math.isfinite(v) and abs(v) >= 1000 else f"{v:.4g}"


# --------------------------------------------------------------------------------------------------
# the step: what the KFP component does, as one plain function


def finite_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The metrics a KFP Metrics artifact and a version record can hold: finite floats only."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, float) and math.isfinite(v)}


def gate_metric_for(metric: str, info: Mapping[str, Any], problem_type: str) -> str:
    """The metric the gate compares: the pipeline's ``metric``; empty, the scoring metric training chose
    the model by (recorded in its folder); unrecorded, the problem type's default."""
    return metric or info.get("scoring") or default_scoring(problem_type)


@dataclass(frozen=True)
class StepEvaluation:
    """What the evaluate step produced: the held-out result, the champion's metrics on the same rows, the
    gate's decision and the report page."""

    result: EvalResult
    champion: dict[str, float]
    decision: GateDecision
    report_html: str

    @property
    def test_metrics(self) -> dict[str, float]:
        """The challenger's held-out metrics that are finite (what the step logs and returns)."""
        return finite_metrics(self.result.metrics)

    @property
    def roc_curve(self) -> dict[str, list[float]] | None:
        """The ROC curve a KFP ClassificationMetrics artifact shows (binary problems only)."""
        if self.result.problem_type != "binary" or not self.result.roc_curves:
            return None
        return next(iter(self.result.roc_curves.values()))

    def report_metadata(self) -> dict[str, Any]:
        """The report artifact's metadata; the register step records its ``gate`` (the metric and values
        the gate compared)."""
        d = self.decision
        return {"gate_metric": d.metric, "promote": d.promote, "reason": d.reason, "gate": d.record()}


def evaluate_step(
    model_dir: str | Path,
    test_data: str | Path,
    spec: DatasetSpec,
    *,
    metric: str = "",
    margin: float = 0.0,
    registry_uri: str = "",
    model_name: str = "",
    champion_metrics_given: Mapping[str, float] | None = None,
) -> StepEvaluation:
    """Score the model folder on the test split (Parquet), re-score the champion and apply the gate.

    With a ``registry_uri`` (a folder or fsspec URI, opened with the settings' storage options) the
    champion is the registry's champion of ``model_name`` (default: the dataset name), re-scored on the
    same rows; without one, ``champion_metrics_given`` are taken as given (none:
    no champion, the challenger is promoted). ``metric`` as in :func:`gate_metric_for`.
    """
    from skiff.config import load_settings
    from skiff.modeling import load_model
    from skiff.storage import Store

    pipeline, info, cv = load_model(model_dir)
    frame = pd.read_parquet(test_data)
    features = info.get("feature_columns") or spec.feature_columns
    result = evaluate(pipeline, frame[features], frame[spec.target], spec, info.get("threshold"))
    if registry_uri:
        registry = ModelRegistry(Store(registry_uri, load_settings().storage_options))
        champion = champion_metrics(registry, model_name or spec.name, frame, spec)
    else:
        champion = dict(champion_metrics_given or {})
    decision = gate(result.metrics, champion, gate_metric_for(metric, info, result.problem_type), margin)
    with tempfile.TemporaryDirectory() as tmp:
        files = report(
            result,
            tmp,
            cv_table=cv,
            title=f"{spec.name}: {info.get('estimator', 'model')} on {result.n} held-out rows",
            extra={"estimator": info.get("estimator"), "params": info.get("params"), "gate": decision.reason},
        )
        page = files["html"].read_text(encoding="utf-8")
    return StepEvaluation(result, champion, decision, page)
