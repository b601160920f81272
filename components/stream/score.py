"""Scoring on arrival: a registered model, loaded once, scores each poll's readings or closed windows.

The version named by ``windows.scoring`` (:class:`skiff.stream_spec.StreamScoring`) is resolved by the
registry once, when the consumer starts; a reference the registry does not resolve, a model that is not a
scikit-learn version, or a model input the stream does not have is a :class:`~skiff.errors.ConfigError`
naming it, before any connection. The model runs the way the model server runs it: on the version's exact
ONNX export (:func:`skiff.onnx_export.onnx_session`, fed by :func:`skiff.onnx_export.onnx_feeds`) for the
rows its recorded domain admits (:class:`skiff.onnx_export.OnnxDomain`), on the scikit-learn pipeline for
the others and for versions without an exact export, so both give the same score.

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

if TYPE_CHECKING:
    import pandas as pd

    from skiff.onnx_export import OnnxDomain, OnnxSession
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
        problem = meta.problem_type
        self.classifier = problem in ("binary", "multiclass") if problem else hasattr(self.model, "predict_proba")
        self.classes = [str(c) for c in (meta.classes or getattr(self.model, "classes_", []) or [])]
        self.threshold = float(meta.threshold) if meta.threshold is not None else 0.5
        self.session: OnnxSession | None = None
        self.domain: OnnxDomain | None = None
        self.engine = "sklearn"
        self._onnx(registry, mv.metadata.extra.get("onnx") or {}, list(meta.files), threads)
        log.info("%s: scoring %s with %s (%s)", spec.name, conf.score, self.ref, self.engine)

    def _onnx(self, registry: ModelRegistry, info: dict[str, Any], files: list[str], threads: int) -> None:
        """Open the version's exact ONNX export, as the model server does (scikit-learn when there is none)."""
        from skiff.onnx_export import ONNX_FILE, OnnxDomain, known_categories, onnx_session

        if not info.get("exact") or ONNX_FILE not in files:
            log.info("%s: no exact ONNX export (%s); scoring with scikit-learn", self.ref,
                     info.get("reason") or "none recorded")
            return
        kinds = dict(info.get("inputs") or {})
        if "categories" not in info:
            info = {**info, "categories": known_categories(self.model, kinds)}
        try:
            session = onnx_session(registry.store.read_bytes(self.name, str(self.version), ONNX_FILE), threads)
            names = [i.name for i in session.get_inputs()]
            if names != list(kinds):
                raise ValueError(f"model.onnx inputs {names} differ from the recorded ones {list(kinds)}")
            outputs = [o.name for o in session.get_outputs()]
            recorded = info.get("output")
            if recorded is not None and recorded not in outputs:
                raise ValueError(f"model.onnx has no output {recorded!r} (it has {outputs})")
        except Exception as e:  # a broken export must not stop the stream: scikit-learn still scores
            log.warning("%s: cannot use %s (%s: %s); scoring with scikit-learn", self.ref, ONNX_FILE,
                        type(e).__name__, e)
            return
        self.session, self.kinds = session, kinds
        self.output = str(recorded) if recorded else (outputs[1] if self.classifier else outputs[0])
        self.missing_text: str | None = info.get("missing_text")
        self.domain = OnnxDomain(kinds, info)
        self.engine = "onnxruntime"

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

    def _frame(self, table: pa.Table) -> pd.DataFrame:
        """The rows as a DataFrame with the dtypes the spec types stand for (the scikit-learn path)."""
        import pandas as pd

        data: dict[str, Any] = {}
        for f in self.features:
            col = table.column(f)
            if pa.types.is_dictionary(col.type):
                col = pc.cast(col, pa.string())
            t = self.types[f]
            if t == "float" or (t == "integer" and col.null_count):
                data[f] = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
            elif t == "integer":
                data[f] = pc.cast(col, pa.int64()).to_numpy(zero_copy_only=False)
            elif t == "boolean" and not col.null_count:
                data[f] = np.asarray(col.to_pylist(), dtype=bool)
            elif t == "datetime":
                data[f] = pd.to_datetime(pd.Series(col.to_pylist(), dtype=object), utc=True)
            else:
                arr = np.empty(len(col), dtype=object)
                arr[:] = col.to_pylist()
                data[f] = arr
        return pd.DataFrame(data, columns=self.features)

    # -- scoring -----------------------------------------------------------------------------------------
    def score(self, table: pa.Table) -> Scored:
        """Score every row of ``table`` (complete rows: see :meth:`missing`)."""
        started = time.perf_counter()
        n = table.num_rows
        if n == 0:
            return Scored(np.zeros(0), [], self.engine, 0.0)
        onnx_rows = np.zeros(n, dtype=bool)
        if self.session is not None and self.domain is not None:
            cols = self._columns(table)
            if self.domain.admits(cols):
                onnx_rows[:] = True
            else:  # route row by row: rows outside what the export checked go to scikit-learn
                for i in range(n):
                    onnx_rows[i] = self.domain.admits({f: [v[i]] for f, v in cols.items()})
        out = np.zeros((n, max(1, len(self.classes))) if self.classifier else n, dtype=np.float64)
        if onnx_rows.any():
            out[onnx_rows] = self._run_onnx(table.filter(pa.array(onnx_rows)))
        if not onnx_rows.all():
            out[~onnx_rows] = self._run_sklearn(table.filter(pa.array(~onnx_rows)))
        engine = "onnxruntime" if onnx_rows.all() else "sklearn" if not onnx_rows.any() else "mixed"
        score, label = self._outcome(out)
        return Scored(score, label, engine, time.perf_counter() - started)

    def _run_onnx(self, table: pa.Table) -> np.ndarray:
        from skiff.onnx_export import onnx_feeds

        assert self.session is not None
        cols = self._columns(table)
        got = self.session.run([self.output], onnx_feeds(cols, self.kinds, self.missing_text))[0]
        arr = np.asarray(got, dtype=np.float64)
        return arr if self.classifier else arr.reshape(-1)

    def _run_sklearn(self, table: pa.Table) -> np.ndarray:
        frame = self._frame(table)
        if self.classifier:
            return np.asarray(self.model.predict_proba(frame), dtype=np.float64)
        return np.asarray(self.model.predict(frame), dtype=np.float64).reshape(-1)

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
