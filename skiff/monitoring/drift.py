"""Serving drift: a window of logged inputs (or predictions) against a reference taken from training time.

Every feature of the reference has **fixed bins from the training data** — numeric: the training
deciles' cut points (plus a bin for missing values); categorical: the training categories (the most
frequent 50, the rest and unseen values in one "other" bin, plus missing) — so every window is
binned the same way and scores are comparable across windows. Per feature and window:

* **PSI** (population stability index), ``sum((w - r) * ln(w / r))`` over the bins, with empty bins
  smoothed (``1e-4``). It decides drift, together with a significance test so that a small window's noise
  is not an alarm: a feature drifts when PSI is above its threshold **and** a two-sample chi-square test
  of the binned counts (reference vs window) gives p below ``alpha`` (default 0.001, per feature and
  window). The default PSI threshold, 0.02, catches a mean shift of 0.2 standard deviations of a normal
  feature (PSI ≈ 0.04) in a window of 2,000 rows while PSI's sampling noise there is about
  ``(bins - 1) / rows`` ≈ 0.005; the classic rule of thumb (0.1 moderate, 0.2 major) is a coarser
  setting of the same knob. A spec column's ``drift_threshold`` overrides it.
* **L-infinity distance** for categorical features (the largest change of one category's share: TFDV's
  skew comparator) and **Jensen-Shannon divergence** (base 2, on the bins) for numeric ones (TFDV's drift
  comparator), reported with their own thresholds (default 0.1 each, as ``skiff validate``).

The prediction distribution is scored the same way against the predictions at validation time
(``kind="prediction_drift"``, feature ``""``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from skiff.errors import UsageError

__all__ = ["BinnedFeature", "Reference", "FeatureScore", "bin_feature", "score_feature", "score_window",
           "DEFAULT_PSI_THRESHOLD", "DEFAULT_DISTANCE_THRESHOLD", "DEFAULT_ALPHA", "MISSING", "OTHER"]

DEFAULT_PSI_THRESHOLD = 0.02
DEFAULT_DISTANCE_THRESHOLD = 0.1
DEFAULT_ALPHA = 0.001
MISSING = "__missing__"
OTHER = "__other__"
_SMOOTH = 1e-4
_NUMERIC = ("integer", "float", "datetime")


@dataclass(frozen=True)
class BinnedFeature:
    """A feature's fixed bins and its reference counts per bin (the last bin counts missing values)."""

    name: str
    kind: Literal["numeric", "categorical"]
    counts: tuple[int, ...]
    #: numeric: interior cut points (bins are (-inf, e0], (e0, e1], ..., (e_last, inf), then missing)
    edges: tuple[float, ...] = ()
    #: categorical: the categories (then "other", then missing)
    categories: tuple[str, ...] = ()
    threshold: float = DEFAULT_PSI_THRESHOLD

    @property
    def rows(self) -> int:
        return int(sum(self.counts))

    def bin_counts(self, values: Sequence[Any] | np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.int64]]:
        """How many of ``values`` fall in each bin."""
        if self.kind == "numeric":
            x = _as_float(values)
            missing = np.isnan(x)
            idx = np.searchsorted(np.asarray(self.edges, dtype=float), x[~missing], side="left")
            counts = np.bincount(idx, minlength=len(self.edges) + 1)
            return np.append(counts, int(missing.sum())).astype(np.int64)
        index = {c: i for i, c in enumerate(self.categories)}
        counts = np.zeros(len(self.categories) + 2, dtype=np.int64)
        for v in values:
            if _is_missing(v):
                counts[-1] += 1
            else:
                counts[index.get(str(v), len(self.categories))] += 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "counts": list(self.counts), "edges": list(self.edges),
                "categories": list(self.categories), "threshold": self.threshold}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BinnedFeature:
        return cls(name=str(data["name"]), kind=data["kind"], counts=tuple(int(c) for c in data["counts"]),
                   edges=tuple(float(e) for e in data.get("edges", ())),
                   categories=tuple(str(c) for c in data.get("categories", ())),
                   threshold=float(data.get("threshold", DEFAULT_PSI_THRESHOLD)))


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _as_float(values: Sequence[Any] | np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float64]]:
    arr = np.asarray(values)
    if np.issubdtype(arr.dtype, np.datetime64):
        out = arr.astype("datetime64[us]").astype(np.int64).astype(float) / 1e6
        out[np.isnat(arr)] = np.nan
        return out
    try:
        return arr.astype(float)
    except (TypeError, ValueError):  # objects: None, text that is not a number -> missing
        out = np.full(len(arr), np.nan)
        for i, v in enumerate(arr):
            with contextlib.suppress(TypeError, ValueError, OverflowError):
                if isinstance(v, dt.datetime):  # pandas Timestamps (a tz-aware column) and datetimes: epoch s
                    out[i] = (v if v.tzinfo else v.replace(tzinfo=dt.UTC)).timestamp()
                elif not _is_missing(v) and not (isinstance(v, float) and math.isnan(v)):
                    out[i] = float(v)
        return out


def bin_feature(name: str, values: Sequence[Any] | np.ndarray[Any, Any], spec_type: str, *, bins: int = 10,
                max_categories: int = 50, threshold: float | None = None) -> BinnedFeature:
    """The fixed bins of a feature from its training values, with the training counts."""
    if bins < 2:
        raise UsageError("drift bins must be at least 2")
    limit = DEFAULT_PSI_THRESHOLD if threshold is None else threshold
    if spec_type in _NUMERIC:
        x = _as_float(values)
        present = x[~np.isnan(x)]
        if present.size == 0:
            edges: tuple[float, ...] = ()
        else:
            qs = np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1])
            edges = tuple(float(e) for e in np.unique(qs))
        ref = BinnedFeature(name, "numeric", (), edges=edges, threshold=limit)
    else:
        freq: dict[str, int] = {}
        for v in values:
            if not _is_missing(v):
                freq[str(v)] = freq.get(str(v), 0) + 1
        top = sorted(freq, key=lambda c: (-freq[c], c))[:max_categories]
        ref = BinnedFeature(name, "categorical", (), categories=tuple(sorted(top)), threshold=limit)
    counts = tuple(int(c) for c in ref.bin_counts(values))
    return BinnedFeature(ref.name, ref.kind, counts, ref.edges, ref.categories, ref.threshold)


@dataclass(frozen=True)
class FeatureScore:
    """One metric of one feature in one window."""

    feature: str
    metric: Literal["psi", "linf", "js"]
    value: float
    threshold: float
    drifted: bool
    rows: int
    details: dict[str, Any] = field(default_factory=dict)


def _shares(counts: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float64]]:
    total = counts.sum()
    return counts / total if total else np.zeros(len(counts))


def _chi_square_p(ref: np.ndarray[Any, Any], win: np.ndarray[Any, Any]) -> float:
    from scipy.stats import chi2

    table = np.vstack([ref, win]).astype(float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 1.0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    stat = float(((table - expected) ** 2 / expected).sum())
    return float(chi2.sf(stat, table.shape[1] - 1))


def score_feature(ref: BinnedFeature, values: Sequence[Any] | np.ndarray[Any, Any], *,
                  alpha: float = DEFAULT_ALPHA,
                  distance_threshold: float = DEFAULT_DISTANCE_THRESHOLD) -> list[FeatureScore]:
    """PSI and the kind's distance (L-infinity or Jensen-Shannon) of a window's values against ``ref``."""
    win = ref.bin_counts(values)
    rows = int(win.sum())
    if rows == 0 or ref.rows == 0:
        return []
    r, w = _shares(np.asarray(ref.counts)), _shares(win)
    rs, ws = np.clip(r, _SMOOTH, None), np.clip(w, _SMOOTH, None)
    psi = float(np.sum((ws - rs) * np.log(ws / rs)))
    p = _chi_square_p(np.asarray(ref.counts), win)
    details = {"p_value": p, "alpha": alpha, "window_missing": int(win[-1]),
               "reference_rows": ref.rows}
    scores = [FeatureScore(ref.name, "psi", psi, ref.threshold, psi > ref.threshold and p < alpha, rows, details)]
    if ref.kind == "categorical":
        linf = float(np.max(np.abs(w - r)))
        scores.append(FeatureScore(ref.name, "linf", linf, distance_threshold, linf > distance_threshold, rows))
    else:
        m = (r + w) / 2
        js = 0.5 * float(np.sum(r[r > 0] * np.log2(r[r > 0] / m[r > 0]))) + \
            0.5 * float(np.sum(w[w > 0] * np.log2(w[w > 0] / m[w > 0])))
        scores.append(FeatureScore(ref.name, "js", js, distance_threshold, js > distance_threshold, rows))
    return scores


@dataclass(frozen=True)
class Reference:
    """What a window is compared with: the training-time bins of each feature and of the predictions."""

    model: str
    version: int
    features: dict[str, BinnedFeature]
    prediction: BinnedFeature | None = None
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version,
                "features": {n: f.to_dict() for n, f in self.features.items()},
                "prediction": self.prediction.to_dict() if self.prediction else None, "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Reference:
        pred = data.get("prediction")
        return cls(model=str(data["model"]), version=int(data["version"]),
                   features={n: BinnedFeature.from_dict(f) for n, f in data["features"].items()},
                   prediction=BinnedFeature.from_dict(pred) if pred else None,
                   notes=tuple(data.get("notes", ())))

    @classmethod
    def build(cls, model: str, version: int, training: Mapping[str, Sequence[Any] | np.ndarray[Any, Any]],
              input_schema: Mapping[str, str], *, predictions: Sequence[Any] | None = None,
              prediction_type: str = "string", thresholds: Mapping[str, float] | None = None,
              bins: int = 10, notes: Sequence[str] = ()) -> Reference:
        """Bins of every input column of ``training`` (column -> values) and of the validation-time
        ``predictions``; ``thresholds`` are per-feature PSI thresholds (the spec's)."""
        thresholds = thresholds or {}
        features = {name: bin_feature(name, training[name], spec_type, bins=bins, threshold=thresholds.get(name))
                    for name, spec_type in input_schema.items() if name in training}
        pred = (bin_feature("", predictions, prediction_type, bins=bins) if predictions is not None else None)
        return cls(model, version, features, pred, tuple(notes))


def score_window(reference: Reference, inputs: Mapping[str, Sequence[Any] | np.ndarray[Any, Any]],
                 predictions: Sequence[Any] | None = None, *, alpha: float = DEFAULT_ALPHA,
                 distance_threshold: float = DEFAULT_DISTANCE_THRESHOLD
                 ) -> list[tuple[Literal["feature_drift", "prediction_drift"], FeatureScore]]:
    """Every score of one window: each reference feature present in ``inputs``, then the predictions."""
    out: list[tuple[Literal["feature_drift", "prediction_drift"], FeatureScore]] = []
    for name, ref in reference.features.items():
        if name in inputs:
            out += [("feature_drift", s) for s in score_feature(ref, inputs[name], alpha=alpha,
                                                                 distance_threshold=distance_threshold)]
    if reference.prediction is not None and predictions is not None:
        out += [("prediction_drift", s) for s in score_feature(reference.prediction, predictions, alpha=alpha,
                                                                distance_threshold=distance_threshold)]
    return out
