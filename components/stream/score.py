"""Scoring on arrival: a registered model, loaded once, scores each poll's readings or closed windows.

The version named by ``windows.scoring`` (:class:`skiff.stream_spec.StreamScoring`) is resolved by the
registry once, when the consumer starts; a reference the registry does not resolve, a model that is not a
scikit-learn version, or a model input the stream does not have is a :class:`~skiff.errors.ConfigError`
naming it, before any connection. The model runs on the model server's scoring runtime (:mod:`skiff.scoring`):
on the version's exact ONNX export (:class:`skiff.scoring.ExactExport`) for the rows its recorded domain
admits (:class:`skiff.onnx_export.OnnxDomain`), row by row, on the scikit-learn pipeline for the others and
for versions without an exact export, so both give the same score.

Rows reach the scorer complete: readings with a missing model input are quarantined before (reason
``missing_model_input``), closed windows with a missing feature are skipped and counted.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from skiff.errors import ConfigError, SkiffError
from skiff.scoring import ExactExport, input_frame, is_classifier, open_exact_export, pipeline_scores

if TYPE_CHECKING:
    from skiff.registry import ModelRegistry
    from skiff.spec import DatasetSpec
    from skiff.stream_spec import StreamScoring

__all__ = ["StreamScorer", "Scored", "SCORES_FILE", "MISSING_INPUT", "score_table", "empty_scores"]

log = logging.getLogger("skiff.stream")

#: the scores of a stream run (underscore: never read as rows of the dataset)
SCORES_FILE = "_scores.parquet"
#: the quarantine reason of a reading without a value for a model input
MISSING_INPUT = "missing_model_input"
_TS = pa.timestamp("us", tz="UTC")


@dataclass
class Scored:
    """The scores of one batch: one per input row, in order."""

    score: np.ndarray  # float64
    label: list[str | None]
    engine: str  # onnxruntime, sklearn or mixed
    seconds: float


class StreamScorer:
    """One registered model version scoring the stream's rows (see the module)."""

    def __init__(self, spec: DatasetSpec, conf: StreamScoring, registry: ModelRegistry, threads: int = 1) -> None:
        from skiff.registry import FLAVORS

        self.conf = conf
        ref = f"model {conf.model!r} version {conf.version or 'champion, else latest'}"
        try:
            mv = registry.get(conf.model, conf.version)
        except SkiffError as e:
            raise ConfigError(f"{spec.name}: windows.scoring names {ref}, which the registry "
                              f"({registry.store.uri()}) does not resolve: {e.message}", model=conf.model) from None
        meta = mv.metadata
        self.name, self.version = mv.name, mv.version
        self.ref = f"{mv.name} v{mv.version}"
        flavor = FLAVORS.get(meta.flavor)
        if flavor is None or not flavor.joblib:
            raise ConfigError(f"{spec.name}: windows.scoring: {self.ref} is a {meta.flavor} model; the stream "
                              "scores scikit-learn versions", model=conf.model)
        self.features = list(meta.features)
        if not self.features:
            raise ConfigError(f"{spec.name}: windows.scoring: {self.ref} records no input features",
                              model=conf.model)
        self.available = _inputs(spec, conf)
        absent = [f for f in self.features if f not in self.available]
        if absent:
            what = "columns of the spec" if conf.score == "readings" else f"features of window {conf.window!r}"
            raise ConfigError(f"{spec.name}: windows.scoring: {self.ref} needs {', '.join(map(repr, absent))}, "
                              f"not among the {what} ({', '.join(self.available)})", model=conf.model)
        self.types = {f: str(meta.input_schema.get(f) or self.available[f]) for f in self.features}
        self.model = registry.load_model(mv.name, mv.version)
        self.classifier = is_classifier(self.model, meta.problem_type)
        self.classes = [str(c) for c in (meta.classes or getattr(self.model, "classes_", []) or [])]
        self.threshold = float(meta.threshold) if meta.threshold is not None else 0.5
        self.export: ExactExport | None = open_exact_export(registry, mv, self.model, self.classifier, threads,
                                                            log, "scoring")
        self.engine = "sklearn" if self.export is None else self.export.engine
        log.info("%s: scoring %s with %s (%s)", spec.name, conf.score, self.ref, self.engine)

    # -- inputs ------------------------------------------------------------------------------------------
    def missing(self, table: pa.Table) -> tuple[np.ndarray, list[str]]:
        """Rows with no value for some model input, and the first such input of each (None where complete)."""
        n = table.num_rows
        bad = np.zeros(n, dtype=bool)
        first: list[str | None] = [None] * n
        for f in self.features:
            col = table.column(f)
            if not col.null_count:
                continue
            miss = pc.is_null(col).to_numpy(zero_copy_only=False)
            if col.type == pa.float64() or col.type == pa.float32():
                miss |= pc.fill_null(pc.is_nan(col), False).to_numpy(zero_copy_only=False)
            for i in np.flatnonzero(miss & ~bad).tolist():
                first[i] = f
            bad |= miss
        return bad, [c for c in first if c is not None]

    def _columns(self, table: pa.Table) -> dict[str, list[Any]]:
        return {f: table.column(f).to_pylist() for f in self.features}

    # -- scoring -----------------------------------------------------------------------------------------
    def score(self, table: pa.Table) -> Scored:
        """Score every row of ``table`` (complete rows: see :meth:`missing`)."""
        started = time.perf_counter()
        n = table.num_rows
        if n == 0:
            return Scored(np.zeros(0), [], self.engine, 0.0)
        cols = self._columns(table)
        onnx_rows = np.zeros(n, dtype=bool)
        if self.export is not None:
            domain = self.export.domain
            if domain.admits(cols):
                onnx_rows[:] = True
            else:  # route row by row: rows outside what the export checked go to scikit-learn
                for i in range(n):
                    onnx_rows[i] = domain.admits({f: [v[i]] for f, v in cols.items()})
        out = np.zeros((n, max(1, len(self.classes))) if self.classifier else n, dtype=np.float64)
        if onnx_rows.any():
            assert self.export is not None
            out[onnx_rows] = self.export.run(_rows(cols, onnx_rows))
        if not onnx_rows.all():
            frame = input_frame(_rows(cols, ~onnx_rows), self.features, self.types)
            out[~onnx_rows] = pipeline_scores(self.model, frame, self.classifier)
        engine = "onnxruntime" if onnx_rows.all() else "sklearn" if not onnx_rows.any() else "mixed"
        score, label = self._outcome(out)
        return Scored(score, label, engine, time.perf_counter() - started)

    def _outcome(self, out: np.ndarray) -> tuple[np.ndarray, list[str | None]]:
        """The score and label of each row: P(positive) and the label at the version's threshold (binary),
        the top probability and its class (multiclass), the value (regression, no label)."""
        if not self.classifier:
            return out, [None] * len(out)
        classes = self.classes or [str(i) for i in range(out.shape[1])]
        if out.shape[1] == 2:
            p = out[:, 1]
            return p, [classes[1] if x >= self.threshold else classes[0] for x in p.tolist()]
        top = out.argmax(axis=1)
        return out[np.arange(len(out)), top], [classes[i] for i in top.tolist()]


def _rows(cols: dict[str, list[Any]], keep: np.ndarray) -> dict[str, list[Any]]:
    """The columns of the rows ``keep`` marks (all of them: the columns themselves)."""
    if keep.all():
        return cols
    idx = np.flatnonzero(keep).tolist()
    return {f: [v[i] for i in idx] for f, v in cols.items()}


def _inputs(spec: DatasetSpec, conf: StreamScoring) -> dict[str, str]:
    """What the model may take, name -> spec type: the spec's columns (readings) or a window's features."""
    if conf.score == "readings":
        return {n: c.type for n, c in spec.columns.items()}
    assert spec.windows is not None
    w = next(d for d in spec.windows.define if d.name == conf.window)
    return {f: "integer" if a == "count" else "float" for f, _c, a in w.feature_names()}


def score_table(key: str, keys: pa.ChunkedArray | pa.Array, times: pa.ChunkedArray | pa.Array,
                window: str | None, scorer: StreamScorer, scored: Scored) -> pa.Table:
    """The lake's rows of a batch's scores (``_scores.parquet`` of the run)."""
    n = len(scored.score)
    return pa.table({
        key: keys,
        "event_time": pc.cast(times, _TS),
        "window": pa.array([window] * n, pa.string()),
        "model": pa.array([scorer.name] * n, pa.string()),
        "model_version": pa.array([scorer.version] * n, pa.int64()),
        "score": pa.array(scored.score, pa.float64()),
        "label": pa.array(scored.label, pa.string()),
    })


def empty_scores(key: str, key_type: pa.DataType) -> pa.Table:
    """``_scores.parquet`` with no rows (its schema)."""
    return pa.table({key: pa.array([], key_type), "event_time": pa.array([], _TS), "window": pa.array([], pa.string()),
                     "model": pa.array([], pa.string()), "model_version": pa.array([], pa.int64()),
                     "score": pa.array([], pa.float64()), "label": pa.array([], pa.string())})
