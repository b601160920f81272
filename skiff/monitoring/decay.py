"""Performance decay: labels that arrive after the predictions, joined to the inference log, scored per
version and window against the version's held-out test metrics.

**Where labels come from** (:func:`gather_labels`):

* posted through the REST API (``POST /api/v1/models/{name}/labels``) into the control plane's
  ``ground_truth_labels`` table: one label per ``request_id`` and ``row`` (the row of a batch request,
  0 for a single instance); a label posted again replaces the earlier one (a correction);
* a **labels dataset** in the lake, ingested like any other dataset through its spec (file, table, MQTT
  ...): its rows carry either ``request_id`` (and optionally ``row``) or the model's **entity key** and
  the spec's **event timestamp**, plus the spec's **target** column as the label.

**The join** (:func:`join_labels`): on ``(request_id, row)`` when the label has a request id; otherwise
on the entity and time: each label is matched to the latest logged prediction of the same entity at or
before the label's event time, at most ``tolerance`` earlier (``pandas.merge_asof``). An entity column the
log stores hashed (``pii: hash``) cannot be joined on (its values are keyed hashes): that join is
refused with a clear error. Rows without a label are not scored; ``labeled`` and ``logged`` of every
result say how many had one.

**Metrics** (:func:`score_labeled`), each with a 95% interval:

* classifiers: ``accuracy`` (the logged prediction equals the label) with the **Wilson score interval**;
  binary ones with a logged probability also ``roc_auc`` of the **positive class** with a **percentile
  bootstrap** interval (fixed seed, so a re-run gives the same interval). The positive class is the
  version's own (:func:`positive_class`: the one training used, i.e. the spec's ``positive_class``), never
  assumed to be ``1`` or ``True``; labels are read as the version's classes whatever their spelling
  (:func:`canonical_labels`: ``"yes"`` for a boolean target whose spec spells true so);
* regression: ``rmse`` with a percentile bootstrap interval.

**The floor**: the version's test value of the metric (its registry metadata) minus ``tolerance``
(accuracy, ROC-AUC; default 0.05), or times ``1 + rmse_tolerance`` for RMSE (a ceiling; default 0.2).
A window has **decayed** when its whole interval is past the floor: the upper bound below it (the lower
bound above the RMSE ceiling), so a small window's noise is not an alarm. Windows with fewer than
``min_labels`` labeled rows are skipped.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from skiff.config import Settings
from skiff.control_plane import ControlPlane, PerformanceResult
from skiff.control_plane.store import utc_now
from skiff.errors import NotFoundError, UsageError
from skiff.inference_log import log_partitions, log_store, read_log

if TYPE_CHECKING:
    import pandas as pd

    from skiff.registry import VersionMetadata

__all__ = ["DecayThresholds", "WindowPerformance", "wilson_interval", "bootstrap_interval", "score_labeled",
           "gather_labels", "join_labels", "monitor_performance", "log_frame", "positive_class", "canonical_labels",
           "DEFAULT_TOLERANCE",
           "DEFAULT_RMSE_TOLERANCE", "DEFAULT_MIN_LABELS"]

DEFAULT_TOLERANCE = 0.05
DEFAULT_RMSE_TOLERANCE = 0.2
DEFAULT_MIN_LABELS = 30
_Z95 = 1.959963984540054
_BOOTSTRAP = 400


def wilson_interval(successes: int, n: int, z: float = _Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% by default); (0, 1) when ``n`` is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_interval(stat: Callable[[np.ndarray[Any, Any]], float], n: int, *, resamples: int = _BOOTSTRAP,
                       seed: int = 0) -> tuple[float, float]:
    """A percentile bootstrap 95% interval of ``stat(indices)`` over resampled row indices (fixed seed);
    resamples where the statistic is undefined (NaN: one class only) are left out."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        v = stat(rng.integers(0, n, n))
        if not math.isnan(v):
            values.append(v)
    if not values:
        return math.nan, math.nan
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


@dataclass(frozen=True)
class DecayThresholds:
    """How far below its test metrics a version may fall (see the module)."""

    tolerance: float = DEFAULT_TOLERANCE
    rmse_tolerance: float = DEFAULT_RMSE_TOLERANCE
    min_labels: int = DEFAULT_MIN_LABELS

    def __post_init__(self) -> None:
        if not 0 <= self.tolerance < 1 or self.rmse_tolerance < 0 or self.min_labels < 1:
            raise UsageError("decay thresholds: tolerance in [0, 1), rmse_tolerance >= 0, min_labels >= 1")

    def floor(self, metric: str, baseline: float | None) -> float | None:
        if baseline is None or math.isnan(baseline):
            return None
        return baseline * (1 + self.rmse_tolerance) if metric == "rmse" else baseline - self.tolerance


def _decayed(metric: str, lo: float, hi: float, floor: float | None) -> bool:
    if floor is None or math.isnan(lo) or math.isnan(hi):
        return False
    return lo > floor if metric == "rmse" else hi < floor


def _roc_auc(truth: np.ndarray[Any, Any], score: np.ndarray[Any, Any]) -> float:
    pos = truth.astype(bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    from scipy.stats import rankdata

    ranks = rankdata(score)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def score_labeled(problem_type: str, predictions: Sequence[Any], labels: Sequence[Any], *,
                  probabilities: Sequence[float | None] | None = None, positive: Any = None
                  ) -> dict[str, tuple[float, float, float]]:
    """metric -> (value, ci_low, ci_high) of labeled predictions (see the module for which metrics)."""
    n = len(labels)
    if n != len(predictions):
        raise UsageError("predictions and labels differ in length")
    if n == 0:
        return {}
    out: dict[str, tuple[float, float, float]] = {}
    if problem_type == "regression":
        y = np.asarray([float(v) for v in labels])
        p = np.asarray([math.nan if v is None else float(v) for v in predictions])
        ok = ~np.isnan(p) & ~np.isnan(y)
        y, p = y[ok], p[ok]
        if y.size == 0:
            return {}
        sq = (y - p) ** 2
        lo, hi = bootstrap_interval(lambda i: float(math.sqrt(sq[i].mean())), y.size)
        out["rmse"] = (float(math.sqrt(sq.mean())), lo, hi)
        return out
    correct = np.asarray([p is not None and str(p) == str(t) for p, t in zip(predictions, labels, strict=True)])
    lo, hi = wilson_interval(int(correct.sum()), n)
    out["accuracy"] = (float(correct.mean()), lo, hi)
    if problem_type == "binary" and probabilities is not None and positive is not None:
        prob = np.asarray([math.nan if v is None else float(v) for v in probabilities])
        ok = ~np.isnan(prob)
        truth = np.asarray([str(t) == str(positive) for t in labels])[ok]
        score = prob[ok]
        auc = _roc_auc(truth, score)
        if not math.isnan(auc):
            lo, hi = bootstrap_interval(lambda i: _roc_auc(truth[i], score[i]), int(ok.sum()))
            out["roc_auc"] = (auc, lo, hi)
    return out


def log_frame(table: Any) -> pd.DataFrame:
    """A log table as a flat frame: request_id, row, timestamp, prediction, probability and the inputs."""
    import pandas as pd

    inputs = table.column("inputs").combine_chunks()
    outputs = table.column("outputs").combine_chunks()
    data: dict[str, Any] = {
        "request_id": table.column("request_id").to_pylist(), "row": table.column("row").to_pylist(),
        "timestamp": table.column("timestamp").to_pandas(),
        "prediction": outputs.field("prediction").to_pylist(),
        "probability": outputs.field("probability").to_pylist(),
    }
    for i, f in enumerate(inputs.type):
        if f.name not in data:
            data[f"input:{f.name}"] = inputs.field(i).to_pylist()
    return pd.DataFrame(data)


def gather_labels(settings: Settings, model: str, store: ControlPlane, *, dataset: str | None = None
                  ) -> pd.DataFrame:
    """Every label of ``model``: posted ones (control plane) and, with ``dataset``, the rows of that labels
    dataset in the lake. Columns: ``label`` and ``request_id``/``row`` or the dataset's entity and time
    columns (``entity``, ``event_time``)."""
    import pandas as pd

    posted = store.labels(model)
    frames = [pd.DataFrame({"request_id": [p.request_id for p in posted], "row": [p.row for p in posted],
                            "label": [p.label for p in posted]})]
    if dataset is not None:
        frames.append(_lake_labels(settings, dataset))
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _lake_labels(settings: Settings, dataset: str) -> pd.DataFrame:
    import pandas as pd

    from skiff.config import project_path
    from skiff.lake import Lake
    from skiff.spec import load_spec
    from skiff.spec import spec_path as _spec_path

    spec_path = project_path(_spec_path(dataset, settings.datasets_dir))
    if not spec_path.is_file():
        raise NotFoundError(f"labels dataset {dataset!r}: no spec {spec_path}")
    spec = load_spec(spec_path)
    if not spec.target:
        raise UsageError(f"labels dataset {dataset!r}: its spec names no target (the label column)")
    frame = Lake.from_settings(settings).read(dataset).to_pandas()
    if spec.target not in frame.columns:
        raise UsageError(f"labels dataset {dataset!r}: no target column {spec.target!r} in its rows")
    out = pd.DataFrame({"label": frame[spec.target].astype(str)})
    if "request_id" in frame.columns:
        out["request_id"] = frame["request_id"].astype(str)
        out["row"] = frame["row"].astype(int) if "row" in frame.columns else 0
        return out
    entity = spec.entity_key
    if not isinstance(entity, str) or not spec.event_timestamp:
        raise UsageError(f"labels dataset {dataset!r}: its rows need a request_id column, or its spec one "
                         "entity_key column and an event_timestamp to join on")
    out["entity"] = frame[entity].astype(str)
    out["entity_column"] = entity
    out["event_time"] = pd.to_datetime(frame[spec.event_timestamp], utc=True)
    return out


def join_labels(log: pd.DataFrame, labels: pd.DataFrame, *, hashed: Sequence[str] = (),
                tolerance: dt.timedelta = dt.timedelta(hours=24)) -> pd.DataFrame:
    """The log rows that have a label, with a ``label`` column (see the module for the two joins)."""
    import pandas as pd

    parts = []
    by_id = labels[labels["request_id"].notna()] if "request_id" in labels.columns else labels.iloc[0:0]
    if len(by_id):
        ids = by_id[["request_id", "row", "label"]].astype({"row": int}).drop_duplicates(["request_id", "row"],
                                                                                         keep="last")
        parts.append(log.merge(ids, on=["request_id", "row"], how="inner"))
    if "entity" in labels.columns:
        by_entity = labels[labels["entity"].notna()]
        for column, group in by_entity.groupby("entity_column"):
            if column in hashed:
                raise UsageError(f"labels join on entity {column!r}: the inference log stores it hashed "
                                 "(pii: hash); post labels by request id instead")
            key = f"input:{column}"
            if key not in log.columns:
                raise UsageError(f"labels join on entity {column!r}: the model's log has no such input")
            left = group[["entity", "event_time", "label"]].sort_values("event_time")
            right = log.assign(entity=log[key].astype(str)).sort_values("timestamp")
            joined = pd.merge_asof(left, right, left_on="event_time", right_on="timestamp", by="entity",
                                   direction="backward", tolerance=pd.Timedelta(tolerance))
            joined = joined[joined["request_id"].notna()].drop(columns=["entity", "event_time"])
            parts.append(joined.drop_duplicates(["request_id", "row"], keep="last"))
    if not parts:
        return log.iloc[0:0].assign(label=[])
    out = pd.concat(parts, ignore_index=True)
    return out.drop_duplicates(["request_id", "row"], keep="first")


@dataclass
class WindowPerformance:
    """One window's performance outcome."""

    version: int
    window_start: str
    window_end: str
    logged: int
    labeled: int
    skipped: str | None = None
    results: list[PerformanceResult] = field(default_factory=list)

    @property
    def decayed(self) -> list[str]:
        return sorted(r.metric for r in self.results if r.decayed)

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "window_start": self.window_start, "window_end": self.window_end,
                "logged": self.logged, "labeled": self.labeled, "skipped": self.skipped, "decayed": self.decayed,
                "results": [r.model_dump() for r in self.results]}


def positive_class(meta: VersionMetadata) -> Any:
    """The positive class of a binary version, one of its ``classes``: the one its training used (recorded
    in the version's metadata), else its dataset spec's ``positive_class``, else training's default when the
    spec names none (the last class in sorted order, :func:`skiff.modeling.positive_label`). None for
    other problem types or a version without its two classes. A recorded positive class that is none of
    the classes is a :class:`UsageError`."""
    classes = list(meta.classes or [])
    if meta.problem_type != "binary" or len(classes) != 2:
        return None
    spec = meta.dataset.get("spec") or {}
    for source, wanted in (("its training", meta.extra.get("positive_class")),
                           ("its spec", spec.get("positive_class") if isinstance(spec, dict) else None)):
        if wanted is None:
            continue
        for c in classes:
            if c == wanted or str(c) == str(wanted):
                return c
        raise UsageError(f"{meta.name} version {meta.version}: the positive class {wanted!r} of {source} is not "
                         f"one of its classes {classes}")
    return classes[-1]


def _spellings(meta: VersionMetadata) -> dict[str, str]:
    """How labels may spell each class (lowercased spelling -> the class as text): the class itself and, for a
    boolean target, the spec's ``true_values`` / ``false_values`` of the target column and true/false/1/0."""
    classes = list(meta.classes or [])
    out = {str(c).lower(): str(c) for c in classes}
    if classes and all(type(c) is bool for c in classes):
        spec = meta.dataset.get("spec") or {}
        column = (spec.get("columns") or {}).get(meta.target or spec.get("target") or "") or {}
        for value, words in ((True, [*(column.get("true_values") or []), "true", "1"]),
                             (False, [*(column.get("false_values") or []), "false", "0"])):
            for w in words:
                out.setdefault(str(w).strip().lower(), str(value))
    return out


def canonical_labels(meta: VersionMetadata, values: Sequence[Any]) -> list[Any]:
    """Labels (or logged predictions) of a classifier as its classes' text, whatever their spelling (a label
    posted as ``"yes"`` for a boolean target whose spec spells true so, ``"1"`` for ``1``); values that are
    none of the classes stay as they are (they count as wrong predictions). Regression values pass through."""
    if meta.problem_type == "regression" or not meta.classes:
        return list(values)
    known = _spellings(meta)
    return [None if v is None else known.get(str(v).strip().lower(), str(v)) for v in values]


def _positive_probabilities(meta: VersionMetadata, positive: Any,
                            probabilities: Sequence[float | None]) -> list[float | None] | None:
    """The logged probabilities as the positive class's: the model server logs its second class's
    (``classes[1]``, the column of ``predict_proba`` it thresholds), so a positive first class is ``1 - p``."""
    if positive is None:
        return None
    flip = str(positive) != str(list(meta.classes or [])[1])
    return [None if p is None or (isinstance(p, float) and math.isnan(p)) else (1.0 - p if flip else p)
            for p in probabilities]


def monitor_performance(settings: Settings, model: str, *, version: int | None = None,
                        since: dt.datetime | None = None, labels_dataset: str | None = None,
                        thresholds: DecayThresholds | None = None, store: ControlPlane | None = None,
                        tolerance: dt.timedelta = dt.timedelta(hours=24)) -> list[WindowPerformance]:
    """Score every logged window of ``model`` that has labels, store the results, return them."""
    from skiff.registry import ModelRegistry

    thresholds = thresholds or DecayThresholds()
    logs = log_store(settings)
    partitions = [(v, h) for v, h in log_partitions(logs, model, version) if since is None or h >= since]
    if not partitions:
        raise NotFoundError(f"no inference log for model {model!r} in {logs.uri()}")
    store = store or ControlPlane.from_settings(settings)
    labels = gather_labels(settings, model, store, dataset=labels_dataset)
    registry = ModelRegistry.from_settings(settings)
    metas: dict[int, VersionMetadata] = {}
    reports: list[WindowPerformance] = []
    for v, hour in partitions:
        if v not in metas:
            metas[v] = registry.get(model, v).metadata
        meta = metas[v]
        hashed = [n for n, c in (meta.dataset.get("spec") or {}).get("columns", {}).items()
                  if isinstance(c, dict) and c.get("pii") == "hash"]
        frame = log_frame(read_log(logs, model, v, hour))
        joined = join_labels(frame, labels, hashed=hashed, tolerance=tolerance) if len(labels) else frame.iloc[0:0]
        start, end = hour.isoformat(), (hour + dt.timedelta(hours=1)).isoformat()
        report = WindowPerformance(v, start, end, len(frame), len(joined))
        if len(joined) < thresholds.min_labels:
            report.skipped = f"{len(joined)} labeled rows, fewer than {thresholds.min_labels}"
            reports.append(report)
            continue
        positive = positive_class(meta)
        labels_text = canonical_labels(meta, joined["label"].tolist())
        probabilities = _positive_probabilities(meta, positive, joined["probability"].tolist())
        scores = score_labeled(meta.problem_type or "binary", canonical_labels(meta, joined["prediction"].tolist()),
                               labels_text, probabilities=probabilities,
                               positive=None if positive is None else str(positive))
        known = {str(c) for c in meta.classes or []}
        unknown = sum(1 for v in labels_text if known and v not in known)
        computed = utc_now().isoformat()
        for metric, (value, lo, hi) in scores.items():
            baseline = meta.metrics.get(metric)
            floor = thresholds.floor(metric, baseline)
            report.results.append(PerformanceResult(
                model=model, version=v, window_start=start, window_end=end, metric=metric,  # type: ignore[arg-type]
                value=value, ci_low=lo, ci_high=hi, baseline=baseline, floor=floor,
                decayed=_decayed(metric, lo, hi, floor), labeled=len(joined), logged=len(frame),
                computed_at=computed,
                details={"interval": "wilson" if metric == "accuracy" else "bootstrap", "confidence": 0.95,
                         **({"positive_class": positive} if metric == "roc_auc" else {}),
                         **({"unknown_labels": unknown} if unknown else {})}))
        store.save_performance(report.results)
        reports.append(report)
    return reports
