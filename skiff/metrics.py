"""The metrics skiff reports, shared by cross-validation (train) and the held-out evaluation.

One definition per metric, so a CV mean and a test-set value of the same name measure the same thing.

* binary: ``accuracy``, ``precision``, ``recall``, ``f1`` (positive class, at a decision threshold),
  ``roc_auc``, ``pr_auc`` (average precision);
* multiclass: ``accuracy``, ``precision_macro``, ``recall_macro``, ``f1_macro``, ``f1_weighted``,
  ``roc_auc`` (one-vs-rest, macro), ``pr_auc`` (one-vs-rest average precision, macro);
* regression: ``rmse``, ``mae``, ``r2``.

Binary decisions are ``proba >= threshold`` for the positive class.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn import metrics as skm
from sklearn.preprocessing import label_binarize

__all__ = [
    "CLASSIFICATION_METRICS",
    "MULTICLASS_METRICS",
    "REGRESSION_METRICS",
    "LOWER_IS_BETTER",
    "THRESHOLD_METRICS",
    "metric_names",
    "default_scoring",
    "higher_is_better",
    "binary_metrics",
    "multiclass_metrics",
    "regression_metrics",
    "score_metrics",
    "best_threshold",
    "decision_metric",
]

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc")
MULTICLASS_METRICS = (
    "accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "f1_weighted",
    "roc_auc",
    "pr_auc",
)
REGRESSION_METRICS = ("rmse", "mae", "r2")
#: Error metrics: a smaller value is a better model.
LOWER_IS_BETTER = frozenset({"rmse", "mae", "mse", "log_loss", "brier", "mape"})
#: Metrics a binary decision threshold can be tuned for.
THRESHOLD_METRICS = ("f1", "f2", "balanced_accuracy", "mcc", "accuracy")


def metric_names(problem_type: str) -> tuple[str, ...]:
    """The metrics cross-validation reports (and a search may score by) for a problem type."""
    return {
        "binary": CLASSIFICATION_METRICS,
        "multiclass": MULTICLASS_METRICS,
        "regression": REGRESSION_METRICS,
    }[problem_type]


def default_scoring(problem_type: str) -> str:
    """The metric that picks a model when none is configured."""
    return {"binary": "roc_auc", "multiclass": "f1_macro", "regression": "rmse"}[problem_type]


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


def _safe(fn: Callable[..., float], *args: Any, **kwargs: Any) -> float:
    """A metric that is undefined on this sample (e.g. one class only) is NaN, not an exception."""
    try:
        return float(fn(*args, **kwargs))
    except ValueError:
        return math.nan


def binary_metrics(
    y_true: np.ndarray, proba_pos: np.ndarray, positive: Any, threshold: float = 0.5
) -> dict[str, float]:
    """Metrics of a binary classifier from its positive-class probabilities."""
    truth = np.asarray(y_true) == positive
    pred = np.asarray(proba_pos) >= threshold
    return {
        "accuracy": float(skm.accuracy_score(truth, pred)),
        "precision": float(skm.precision_score(truth, pred, zero_division=0)),
        "recall": float(skm.recall_score(truth, pred, zero_division=0)),
        "f1": float(skm.f1_score(truth, pred, zero_division=0)),
        "roc_auc": _safe(skm.roc_auc_score, truth, proba_pos),
        "pr_auc": _safe(skm.average_precision_score, truth, proba_pos),
    }


def multiclass_metrics(y_true: np.ndarray, proba: np.ndarray, classes: Sequence[Any]) -> dict[str, float]:
    """Metrics of a multiclass classifier from its class probabilities (columns in ``classes`` order)."""
    classes = list(classes)
    y_true = np.asarray(y_true)
    pred = np.asarray(classes)[np.argmax(proba, axis=1)]
    truth = y_true
    present = [i for i, c in enumerate(classes) if np.any(y_true == c)]
    onehot = label_binarize(y_true, classes=classes)
    # AUCs over the classes present in this sample; absent ones have no positives to rank.
    roc = [_safe(skm.roc_auc_score, onehot[:, i], proba[:, i]) for i in present]
    ap = [_safe(skm.average_precision_score, onehot[:, i], proba[:, i]) for i in present]
    return {
        "accuracy": float(skm.accuracy_score(truth, pred)),
        "precision_macro": float(
            skm.precision_score(truth, pred, labels=classes, average="macro", zero_division=0)
        ),
        "recall_macro": float(
            skm.recall_score(truth, pred, labels=classes, average="macro", zero_division=0)
        ),
        "f1_macro": float(skm.f1_score(truth, pred, labels=classes, average="macro", zero_division=0)),
        "f1_weighted": float(skm.f1_score(truth, pred, labels=classes, average="weighted", zero_division=0)),
        "roc_auc": float(np.nanmean(roc)) if roc and not np.all(np.isnan(roc)) else math.nan,
        "pr_auc": float(np.nanmean(ap)) if ap and not np.all(np.isnan(ap)) else math.nan,
    }


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    return {
        "rmse": float(skm.root_mean_squared_error(y_true, y_pred)),
        "mae": float(skm.mean_absolute_error(y_true, y_pred)),
        "r2": _safe(skm.r2_score, y_true, y_pred),
    }


def score_metrics(
    problem_type: str,
    y_true: np.ndarray,
    output: np.ndarray,
    classes: Sequence[Any] | None = None,
    positive: Any = None,
    threshold: float = 0.5,
) -> dict[str, float]:
    """Dispatch on the problem type; ``output`` is probabilities (classification) or predictions."""
    if problem_type == "regression":
        return regression_metrics(y_true, output)
    assert classes is not None
    if problem_type == "binary":
        pos_col = list(classes).index(positive)
        return binary_metrics(y_true, output[:, pos_col], positive, threshold)
    return multiclass_metrics(y_true, output, classes)


def best_threshold(truth: np.ndarray, proba_pos: np.ndarray, metric: str = "f1") -> tuple[float, float]:
    """The decision threshold that maximises ``metric`` on (out-of-fold) probabilities.

    Every distinct probability is a candidate cut; the threshold returned is the midpoint between the
    chosen cut and the next lower distinct probability, so the decisions on these rows are exactly
    the optimal ones and unseen rows are not decided by a tie with a training score. Returns
    ``(threshold, metric value at it)``.
    """
    if metric not in THRESHOLD_METRICS:
        raise ValueError(f"unknown threshold metric {metric!r}; valid: {', '.join(THRESHOLD_METRICS)}")
    truth = np.asarray(truth, dtype=bool)
    proba_pos = np.asarray(proba_pos, dtype=float)
    order = np.argsort(-proba_pos, kind="mergesort")
    scores, hits = proba_pos[order], truth[order]
    # last index of each run of equal scores: predicting positive for all rows up to it
    cut = np.r_[np.nonzero(np.diff(scores))[0], len(scores) - 1]
    tp = np.cumsum(hits)[cut].astype(float)
    fp = (cut + 1) - tp
    pos, n = float(truth.sum()), float(len(truth))
    fn, tn = pos - tp, (n - pos) - fp
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric in ("f1", "f2"):
            b2 = 1.0 if metric == "f1" else 4.0
            value = (1 + b2) * tp / ((1 + b2) * tp + b2 * fn + fp)
        elif metric == "balanced_accuracy":
            value = 0.5 * (tp / (tp + fn) + tn / (tn + fp))
        elif metric == "accuracy":
            value = (tp + tn) / n
        else:  # mcc
            value = (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    value = np.nan_to_num(value, nan=-np.inf)
    k = int(np.argmax(value))
    upper = scores[cut[k]]
    lower = scores[cut[k + 1]] if k + 1 < len(cut) else max(upper - 1e-6, 0.0)
    return float((upper + lower) / 2.0), float(value[k])


def decision_metric(truth: np.ndarray, pred: np.ndarray, metric: str) -> float:
    """One of :data:`THRESHOLD_METRICS` for boolean truths and decisions."""
    truth, pred = np.asarray(truth, dtype=bool), np.asarray(pred, dtype=bool)
    if metric == "f1":
        return float(skm.f1_score(truth, pred, zero_division=0))
    if metric == "f2":
        return float(skm.fbeta_score(truth, pred, beta=2, zero_division=0))
    if metric == "balanced_accuracy":
        return float(skm.balanced_accuracy_score(truth, pred))
    if metric == "mcc":
        return float(skm.matthews_corrcoef(truth, pred))
    if metric == "accuracy":
        return float(skm.accuracy_score(truth, pred))
    raise ValueError(f"unknown threshold metric {metric!r}; valid: {', '.join(THRESHOLD_METRICS)}")
