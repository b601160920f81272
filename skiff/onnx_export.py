"""The fast inference path: a fitted scikit-learn pipeline compiled to ONNX, kept only when exact.

:func:`export_onnx` tries each compiler (:data:`COMPILERS`) on the pipeline:

- ``skiff-onnx-double`` (:mod:`skiff.compiled`): skiff's own translation in float64 — imputation, scaling,
  one-hot, PCA, selection, linear and logistic models, random forests (with scikit-learn's float32 input
  rounding) and histogram gradient boosting (missing values, native categorical splits). Numbers are fed
  as float64 with NaN for a missing one, text with the frame preparer's missing marker, so rows with
  missing values run on the graph too;
- ``skl2onnx``: skl2onnx's conversion, numbers fed as float32 (its ONNX Imputer has no double kernel);
  rows with missing values stay on scikit-learn.

Each candidate is checked against the pipeline's own ``predict_proba`` (classifiers; absolute difference)
or ``predict`` (regressors; relative to ``max(1, |value|)``, value by value) on rows routed as the model
server routes them (:class:`OnnxDomain`): the held-out rows (missing values included), perturbations of
the held-out — or ``reference`` — rows when fewer than :data:`MIN_CHECK_ROWS` exist, each column missing in
turn, unseen and near-miss categories, values on both sides of the trees' split thresholds, and extreme
numbers. Among the candidates within the tolerance the fastest on one row wins; the returned dict goes into
a version's ``metadata.extra["onnx"]`` (its ``compiler``, ``engine`` and every candidate's evidence) and
tells the server whether to use ``model.onnx``::

    info = export_onnx(pipeline, X_test, workdir / "model.onnx", input_schema=schema)
    extra["onnx"] = info
    files = {"model.onnx": workdir / "model.onnx"} if info["exact"] else {}

A pipeline whose first step is skiff's frame preparer (a step with ``numeric``, ``categorical`` and
``datetime`` column lists) is compiled from its second step on: the server then feeds the preparer's
outputs (numeric columns as numbers, categorical ones — categories, strings, booleans — as text).
A datetime feature is fed to skiff's graph as the preparer's calendar parts (year, month, day of week in
UTC, :func:`date_part`) computed from the request's ISO text; a missing one goes to scikit-learn.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired, Protocol, TypedDict

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ONNX_FILE", "DEFAULT_OPSET", "DEFAULT_TOLERANCE", "MIN_CHECK_ROWS", "COMPILERS", "export_onnx",
           "onnx_feeds", "input_kinds", "onnx_session", "known_categories", "OnnxDomain", "OnnxInfo",
           "OnnxSession", "OnnxNode", "CandidateInfo", "MISSING_TEXT", "date_part"]

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
#: Main ONNX opset of the skl2onnx candidate; its ONNX-ML domain uses opset 3.
DEFAULT_OPSET = 17
_ML_OPSET = 3
#: 1e-6 absolute on probabilities; 1e-6 relative (to max(1, |value|)) on regression values.
DEFAULT_TOLERANCE = 1e-6
#: Fewer checkable rows than this and the check adds perturbed copies of the rows it has.
MIN_CHECK_ROWS = 200
#: What skiff's frame preparer writes for a missing categorical value (components.train.preparation.MISSING).
MISSING_TEXT = "__skiff_missing__"
#: The compilers tried, in order of preference on equal speed.
COMPILERS = ("skiff-onnx-double", "skl2onnx")

_NUMERIC = {"integer", "float"}
_UNSEEN = "__skiff_unseen__"


class CandidateInfo(TypedDict):
    """One compiler's result on the version's check rows."""

    compiler: str
    exact: bool
    max_abs_diff: float | None
    reason: str
    #: median milliseconds of one single-row run on onnxruntime (one thread)
    p50_ms: float | None
    #: how many check rows the server would answer on this graph (the rest go to scikit-learn)
    rows_on_graph: NotRequired[int]


class OnnxInfo(TypedDict):
    """What :func:`export_onnx` found: a version's ``metadata.extra["onnx"]``, read by the model server."""

    exact: bool
    max_abs_diff: float | None
    opset: int
    reason: str
    tolerance: float
    rows_checked: int
    compared: str | None
    #: the graph's inputs in order: column -> "double", "float" (float32) or "string"
    inputs: dict[str, str]
    #: the written file's name; None when nothing was kept
    file: str | None
    #: each closed text input's fitted categories (None: some encoder not found); set once the graph converted
    categories: NotRequired[dict[str, list[str]] | None]
    #: column -> [low, high] the graph answers exactly; set once the held-out rows matched
    ranges: NotRequired[dict[str, list[float]]]
    #: the compiler whose graph was kept (or the best tried), and what serves the version
    compiler: NotRequired[str | None]
    engine: NotRequired[str]
    #: the graph's output holding probabilities or values
    output: NotRequired[str | None]
    #: columns whose missing values the graph answers (None fed as NaN or as ``missing_text``)
    missing: NotRequired[list[str]]
    missing_text: NotRequired[str | None]
    #: rows checked by kind (held_out, generated, missing, unseen, boundary, extreme)
    checks: NotRequired[dict[str, int]]
    candidates: NotRequired[list[CandidateInfo]]


class OnnxNode(Protocol):
    """An input or output of an onnxruntime session (its ``NodeArg``), by name."""

    @property
    def name(self) -> str: ...


class OnnxSession(Protocol):
    """The part of an onnxruntime ``InferenceSession`` skiff calls (onnxruntime ships no types)."""

    def run(self, output_names: list[str] | None, input_feed: Mapping[str, np.ndarray]) -> list[Any]: ...

    def get_inputs(self) -> list[OnnxNode]: ...

    def get_outputs(self) -> list[OnnxNode]: ...


def _preparer(model: Any) -> Any | None:
    """The leading frame-preparing step of a pipeline, if it has one (duck-typed, see module docs)."""
    steps = getattr(model, "steps", None)
    if not steps:
        return None
    first = steps[0][1]
    if all(hasattr(first, a) for a in ("numeric", "categorical", "datetime")):
        return first
    return None


def input_kinds(model: Any, features: Sequence[str], input_schema: Mapping[str, str],
                number: str = "float") -> dict[str, str]:
    """The ONNX graph's inputs, in order: column name -> ``number`` (``"float"`` or ``"double"``) or
    ``"string"``.

    Raises ``ValueError`` when a column cannot be fed from request values (datetime features).
    """
    prep = _preparer(model)
    if prep is not None and list(prep.datetime) and number == "double":
        # the calendar parts the preparer makes, fed from the request's ISO text (see onnx_feeds)
        parts = {c: f"datetime.{c.rsplit('__', 1)[1]}" for c in prep.numeric_out if c not in set(prep.numeric)}
        return {**{c: number for c in prep.numeric}, **parts, **{c: "string" for c in prep.categorical}}
    if prep is not None:
        if list(prep.datetime):
            raise ValueError(f"datetime features {list(prep.datetime)} are not exported to ONNX: their calendar "
                             "parts (year, month, day of week) come from pandas in the frame preparer")
        return {**{c: number for c in prep.numeric}, **{c: "string" for c in prep.categorical}}
    kinds: dict[str, str] = {}
    for f in features:
        t = input_schema.get(f)
        if t in _NUMERIC or t == "boolean":
            kinds[f] = number
        elif t in ("string", "category"):
            kinds[f] = "string"
        elif t == "datetime":
            raise ValueError(f"datetime feature {f!r} is not exported to ONNX")
        else:
            raise ValueError(f"feature {f!r} has no known type in the input schema (got {t!r})")
    return kinds


def onnx_feeds(columns: Mapping[str, Sequence[Any]], kinds: Mapping[str, str],
               missing_text: str | None = None) -> dict[str, np.ndarray]:
    """ONNX inputs straight from column values (no DataFrame): ``[n, 1]`` float64 (``"double"``; None is
    NaN), float32 (``"float"``) or text (None is ``missing_text``).

    Booleans fed to a text input become ``"True"``/``"False"``, as the frame preparer writes them.
    """
    feeds: dict[str, np.ndarray] = {}
    for name, kind in kinds.items():
        if kind.startswith("datetime.") and name not in columns:  # a calendar part of a datetime feature
            part = kind.split(".", 1)[1]
            source = columns[name.rsplit("__", 1)[0]]
            feeds[name] = np.asarray([date_part(v, part) for v in source], dtype=np.float64).reshape(-1, 1)
            continue
        values = columns[name]
        if kind == "double" or kind.startswith("datetime."):
            try:
                feeds[name] = np.asarray(values, dtype=np.float64).reshape(-1, 1)
            except TypeError:  # a None among the numbers
                feeds[name] = np.asarray([np.nan if v is None else v for v in values],
                                         dtype=np.float64).reshape(-1, 1)
        elif kind == "float":
            feeds[name] = np.asarray(values, dtype=np.float32).reshape(-1, 1)
        else:
            arr = np.empty((len(values), 1), dtype=object)
            arr[:, 0] = [v if type(v) is str else (missing_text if v is None else str(v)) for v in values]
            feeds[name] = arr
    return feeds


def date_part(value: Any, part: str) -> float:
    """``year``, ``month`` or ``dayofweek`` (Monday 0) of an ISO 8601 text in UTC, as the frame preparer's
    ``pd.to_datetime(..., utc=True)`` gives it (a time without an offset is UTC); NaN for None."""
    import datetime as dt

    if value is None:
        return float("nan")
    try:
        stamp = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    except ValueError:  # an ISO form Python does not read (e.g. nanoseconds): pandas reads it as training did
        import pandas as pd

        stamp = pd.to_datetime(str(value), utc=True).to_pydatetime()
    stamp = stamp.replace(tzinfo=dt.UTC) if stamp.tzinfo is None else stamp.astimezone(dt.UTC)
    return float(stamp.weekday() if part == "dayofweek" else getattr(stamp, part))


def _encoders(step: Any, columns: Sequence[Hashable] | None = None) -> Iterator[tuple[Hashable, list[str], object]]:
    """(column, encoder, imputed marker) for each one-hot encoded input column of a fitted step."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    if isinstance(step, ColumnTransformer):
        for _name, trans, cols in step.transformers_:
            if not isinstance(trans, str):
                yield from _encoders(trans, list(cols) if not isinstance(cols, str) else [cols])
    elif isinstance(step, Pipeline):
        marker: object = None
        for _name, sub in step.steps:
            if isinstance(sub, SimpleImputer) and columns is not None:
                marker = sub.missing_values
            elif isinstance(sub, OneHotEncoder) and columns is not None:
                for col, cats in zip(columns, sub.categories_, strict=False):
                    yield col, [str(c) for c in cats], marker
                return
            elif isinstance(sub, ColumnTransformer):
                yield from _encoders(sub)
                return
            else:
                return  # anything else in between may change the values: nothing is known
    elif isinstance(step, OneHotEncoder) and columns is not None:
        for col, cats in zip(columns, step.categories_, strict=False):
            yield col, [str(c) for c in cats], None


def known_categories(model: Any, kinds: Mapping[str, str]) -> dict[str, list[str]] | None:
    """Each text input's categories the graph was fitted on (plus an imputer's missing marker), or None
    when some text input's encoder cannot be found (then no value can be called unseen)."""
    prep = _preparer(model)
    graph = model[1:] if prep is not None else model
    steps = graph.steps if hasattr(graph, "steps") else [("model", graph)]
    found: dict[Hashable, list[str]] = {}
    for _name, step in steps:
        for col, cats, marker in _encoders(step):
            if col in kinds:
                found[col] = cats + ([str(marker)] if isinstance(marker, str) else [])
    text = [c for c, k in kinds.items() if k == "string"]
    if any(c not in found for c in text):
        return None
    return {c: found[c] for c in text}


class OnnxDomain:
    """Which requests the ONNX graph answers exactly, from what the export checked (the server and the
    registration check route by it alike): missing values only in the columns whose missing values were
    checked (``info["missing"]``), text values among the fitted categories where the pipeline refuses unseen
    ones (``info["categories"]``), numbers within the checked range (``info["ranges"]``). Everything else
    goes to scikit-learn, so both engines give the same answer for every request, unseen categories and
    extreme numbers included."""

    def __init__(self, kinds: Mapping[str, str], info: Mapping[str, Any]) -> None:
        cats = info.get("categories")
        self.categories = {c: frozenset(v) for c, v in cats.items()} if cats else None
        self.ranges = {c: (float(lo), float(hi)) for c, (lo, hi) in (info.get("ranges") or {}).items()}
        self.kinds = dict(kinds)
        self.missing = frozenset(info.get("missing") or ())
        self.missing_text: str | None = info.get("missing_text")

    @property
    def takes_missing(self) -> bool:
        """Whether some column's missing values run on the graph."""
        return bool(self.missing)

    def admits(self, columns: Mapping[str, Sequence[Any]]) -> bool:
        for name, kind in self.kinds.items():
            can_miss = name in self.missing
            if kind.startswith("datetime.") and name not in columns:  # fed from its datetime feature
                if not can_miss and any(v is None for v in columns[name.rsplit("__", 1)[0]]):
                    return False
                continue
            values = columns[name]
            if kind != "string":
                r = self.ranges.get(name)
                lo, hi = r if r is not None else (-np.inf, np.inf)
                for v in values:
                    if v is None:
                        if not can_miss:
                            return False
                    elif not lo <= v <= hi:
                        return False
            else:
                known = self.categories.get(name) if self.categories is not None else None
                for v in values:
                    if v is None:
                        if not can_miss:
                            return False
                    elif known is not None and (v if type(v) is str else str(v)) not in known:
                        return False
        return True


def _default_schema(frame: pd.DataFrame) -> dict[str, str]:
    import pandas as pd

    out: dict[str, str] = {}
    for c in frame.columns:
        dt = frame[c].dtype
        if pd.api.types.is_bool_dtype(dt):
            out[c] = "boolean"
        elif pd.api.types.is_integer_dtype(dt):
            out[c] = "integer"
        elif pd.api.types.is_numeric_dtype(dt):
            out[c] = "float"
        elif pd.api.types.is_datetime64_any_dtype(dt):
            out[c] = "datetime"
        else:
            out[c] = "string"
    return out


# -- candidates ----------------------------------------------------------------------------------------
@dataclass
class _Candidate:
    """One compiler's graph and how the server would feed and route it."""

    compiler: str
    payload: bytes
    session: OnnxSession
    kinds: dict[str, str]
    output: str
    missing_text: str | None
    categories: dict[str, list[str]] | None
    #: columns whose missing values may be fed to the graph (checked before they are admitted)
    may_miss: list[str] = field(default_factory=list)


def _double_candidate(model: Any, features: Sequence[str], schema: Mapping[str, str], classifier: bool) -> _Candidate:
    from skiff.compiled import COMPILER, compile_pipeline

    kinds = input_kinds(model, features, schema, number="double")
    prep = _preparer(model)
    graph_model = model[1:] if prep is not None else model
    compiled = compile_pipeline(graph_model, kinds, classifier)
    missing_text = MISSING_TEXT if prep is not None else None
    # without the preparer, a missing text value reaches the pipeline as None/NaN: left to scikit-learn
    may_miss = [c for c, k in kinds.items() if k == "double" or missing_text is not None]
    return _Candidate(COMPILER, compiled.payload, onnx_session(compiled.payload), kinds, compiled.output,
                      missing_text, compiled.closed_categories, may_miss)


def _initial_types(kinds: Mapping[str, str]) -> list[tuple[str, Any]]:
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    return [(n, FloatTensorType([None, 1]) if k == "float" else StringTensorType([None, 1])) for n, k in kinds.items()]


def _skl2onnx_candidate(model: Any, features: Sequence[str], schema: Mapping[str, str], classifier: bool,
                        opset: int) -> _Candidate:
    from skl2onnx import convert_sklearn

    kinds = input_kinds(model, features, schema)
    prep = _preparer(model)
    graph_model = model[1:] if prep is not None else model
    final = graph_model.steps[-1][1] if hasattr(graph_model, "steps") else graph_model
    options = {id(final): {"zipmap": False}} if classifier else None
    onx = convert_sklearn(graph_model, initial_types=_initial_types(kinds), options=options,
                          target_opset={"": opset, "ai.onnx.ml": _ML_OPSET})
    payload = onx.SerializeToString()
    session = onnx_session(payload, threads=1)
    outputs = [o.name for o in session.get_outputs()]
    return _Candidate("skl2onnx", payload, session, kinds, outputs[1] if classifier else outputs[0], None,
                      known_categories(model, kinds))


# -- check rows ----------------------------------------------------------------------------------------
def _nulls(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    import pandas as pd

    out = frame.copy()
    if pd.api.types.is_numeric_dtype(out[column].dtype) and not pd.api.types.is_bool_dtype(out[column].dtype):
        out[column] = np.nan
    else:
        out = out.astype({column: object})
        out[column] = None
    return out


def _perturbed(source: pd.DataFrame, n: int, kinds: Mapping[str, str], seed: int = 0) -> pd.DataFrame:
    """``n`` rows made from ``source``: numbers jittered by a few percent of their spread, text swapped
    among the values seen, and one value in ten missing."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = source.iloc[rng.integers(0, len(source), n)].reset_index(drop=True).copy()
    for c in rows.columns:
        col = rows[c]
        if kinds.get(c) != "string" and pd.api.types.is_numeric_dtype(col.dtype) \
                and not pd.api.types.is_bool_dtype(col.dtype):
            values = col.to_numpy(dtype=np.float64, na_value=np.nan)
            spread = float(np.nanstd(values)) if np.isfinite(values).any() else 1.0
            jitter = rng.normal(0.0, 0.05 * (spread or 1.0), n)
            new = values + jitter
            if pd.api.types.is_integer_dtype(col.dtype):
                new = np.round(new)
            rows[c] = new
        else:
            seen = col.dropna().tolist() or [None]
            rows[c] = pd.Series([seen[i] for i in rng.integers(0, len(seen), n)], dtype=object)
        miss = rng.random(n) < 0.1
        if miss.any():
            rows = rows.astype({c: object}) if rows[c].dtype == bool else rows
            rows.loc[miss, c] = np.nan if pd.api.types.is_float_dtype(rows[c].dtype) else None
    return rows


def _affine(transform: Callable[[pd.DataFrame], np.ndarray], base: pd.DataFrame, column: str
            ) -> tuple[int, float, float] | None:
    """(model feature, a, b) when the feature the model sees is ``a * x + b`` of this one input column."""
    probe = base.iloc[[0, 0, 0]].reset_index(drop=True).copy()
    probe[column] = np.array([1.0, 2.0, 4.0])
    try:
        out = np.asarray(transform(probe), dtype=np.float64)
    except Exception:  # a transform that refuses the probe values: no boundary rows for this column
        return None
    moved = np.flatnonzero(np.abs(out[1] - out[0]) > 0)
    if len(moved) != 1:
        return None
    j = int(moved[0])
    a = out[1, j] - out[0, j]
    if not np.isclose(out[2, j] - out[1, j], 2 * a, rtol=1e-9):
        return None
    return j, float(a), float(out[0, j] - a)


def _thresholds(est: Any) -> dict[int, np.ndarray]:
    """The split thresholds of a tree model, by model feature."""
    found: dict[int, list[float]] = {}
    for tree in getattr(est, "estimators_", [est] if hasattr(est, "tree_") else []):
        tr = tree.tree_
        for f, t in zip(tr.feature, tr.threshold, strict=True):
            if f >= 0:
                found.setdefault(int(f), []).append(float(t))
    for iteration in getattr(est, "_predictors", []):
        for pred in iteration:
            nodes = pred.nodes
            for f, t, leaf, cat in zip(nodes["feature_idx"], nodes["num_threshold"], nodes["is_leaf"],
                                       nodes["is_categorical"], strict=True):
                if not leaf and not cat:
                    found.setdefault(int(f), []).append(float(t))
    return {f: np.unique(np.asarray(v)) for f, v in found.items()}


def _boundary_rows(model: Any, base: pd.DataFrame, kinds: Mapping[str, str], per_column: int = 24
                   ) -> pd.DataFrame | None:
    """Rows whose numbers sit on and next to the trees' split thresholds, mapped back to the input column
    when the model sees an affine function of it (imputation, scaling); None for a model without trees."""
    import pandas as pd

    steps = model.steps if hasattr(model, "steps") else [("model", model)]
    est = steps[-1][1]
    thresholds = _thresholds(est)
    if not thresholds:
        return None
    head = [s for _n, s in steps[:-1] if not hasattr(s, "fit_resample")]  # samplers act while fitting only

    def transform(rows: pd.DataFrame) -> np.ndarray:
        out: Any = rows if head else rows.to_numpy()
        for step in head:
            out = step.transform(out)
        return np.asarray(out.toarray() if hasattr(out, "toarray") else out)

    rng = np.random.default_rng(1)
    parts = []
    for c, kind in kinds.items():
        if kind == "string" or c not in base.columns:
            continue
        found = _affine(transform, base, c)
        if found is None:
            continue
        j, a, b = found
        ts = thresholds.get(j)
        if ts is None or a == 0:
            continue
        ts = ts[rng.permutation(len(ts))[:per_column]] if len(ts) > per_column else ts
        xs = (ts - b) / a
        values = np.concatenate([xs, np.nextafter(xs, np.inf), np.nextafter(xs, -np.inf),
                                 xs.astype(np.float32).astype(np.float64),
                                 np.nextafter(xs.astype(np.float32), np.float32(np.inf)).astype(np.float64),
                                 np.nextafter(xs.astype(np.float32), np.float32(-np.inf)).astype(np.float64)])
        values = values[np.isfinite(values) & (np.abs(values) <= np.finfo(np.float32).max)]
        if not len(values):
            continue
        rows = pd.concat([base.iloc[:1]] * len(values), ignore_index=True)
        rows[c] = values
        parts.append(rows)
    return pd.concat(parts, ignore_index=True) if parts else None


def _extreme_levels(col: np.ndarray) -> list[tuple[float, float]]:
    finite = col[np.isfinite(col)]
    lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    span = max(hi - lo, 1.0)
    big = float(np.finfo(np.float32).max)
    return [(lo, hi), (lo - 10 * span, hi + 10 * span), (lo - 1e6 * span, hi + 1e6 * span), (-1e30, 1e30),
            (-big, big)]


# -- comparison ----------------------------------------------------------------------------------------
def _expected(model: Any, rows: pd.DataFrame, classifier: bool) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if classifier:
            return np.asarray(model.predict_proba(rows), dtype=np.float64)
        return np.asarray(model.predict(rows), dtype=np.float64).reshape(-1)


def _graph_values(cand: _Candidate, rows: pd.DataFrame, prep: Any, classifier: bool) -> np.ndarray:
    graph_input = prep.transform(rows) if prep is not None else rows
    columns = {c: [None if _cell_missing(v) else v for v in graph_input[c].tolist()] for c in cand.kinds}
    out = cand.session.run([cand.output], onnx_feeds(columns, cand.kinds, cand.missing_text))[0]
    if classifier:
        return np.asarray(out, dtype=np.float64)
    return np.asarray(out, dtype=np.float64).reshape(-1)


def _diff(expected: np.ndarray, got: np.ndarray, classifier: bool) -> float | str:
    if got.shape != expected.shape:
        return f"ONNX output shape {got.shape} differs from the pipeline's {expected.shape}"
    if not len(expected):
        return 0.0
    scale = 1.0 if classifier else np.maximum(1.0, np.abs(expected))
    d = np.abs(got - expected) / scale
    both_nan = np.isnan(got) & np.isnan(expected)
    d = np.where(both_nan, 0.0, d)
    return float(np.nan_to_num(d, nan=np.inf).max())


def _request_columns(cand: _Candidate, rows: pd.DataFrame, prep: Any) -> list[dict[str, list[Any]]]:
    """Each row as the server's domain sees it: the graph inputs, None where a value is missing."""
    graph_input = prep.transform(rows) if prep is not None else rows
    marker = cand.missing_text
    by_column = {c: [None if _cell_missing(v) or (marker is not None and v == marker) else
                     (v.item() if isinstance(v, np.generic) else v) for v in graph_input[c].tolist()]
                 for c in cand.kinds}
    return [{c: [values[i]] for c, values in by_column.items()} for i in range(len(rows))]


def _cell_missing(v: Any) -> bool:
    if v is None:
        return True
    try:
        return bool(v != v)
    except (TypeError, ValueError):
        return False


def _route_diff(model: Any, cand: _Candidate, rows: pd.DataFrame, prep: Any, classifier: bool,
                domain: OnnxDomain) -> tuple[float | str, int]:
    """The server's answer (the graph where the domain admits a row, else the pipeline) against the
    pipeline, and how many rows the graph answered."""
    if not len(rows):
        return 0.0, 0
    admitted = [i for i, cols in enumerate(_request_columns(cand, rows, prep)) if domain.admits(cols)]
    if not admitted:
        return 0.0, 0  # the pipeline answers them on both engines (or refuses them on both)
    rows = rows.iloc[admitted]
    try:
        expected = _expected(model, rows, classifier)
    except (ValueError, TypeError) as e:
        return f"the server would send the ONNX graph rows the pipeline refuses: {type(e).__name__}: {e}", 0
    try:
        got = _graph_values(cand, rows, prep, classifier)
    except Exception as e:  # an admitted value the graph cannot take: the domain is wrong, not exact
        return f"the ONNX graph fails on rows the server would send it: {type(e).__name__}: {e}", 0
    return _diff(expected, got, classifier), len(rows)


def _answers_alike(model: Any, cand: _Candidate, rows: pd.DataFrame, prep: Any, classifier: bool,
                   tolerance: float) -> bool:
    """Whether the pipeline answers these rows and the graph gives the same answers."""
    try:
        expected = _expected(model, rows, classifier)
        got = _graph_values(cand, rows, prep, classifier)
    except Exception:  # the pipeline refuses them (or the graph fails): keep them on scikit-learn
        return False
    d = _diff(expected, got, classifier)
    return not isinstance(d, str) and d <= tolerance


def _latency_ms(cand: _Candidate, row: pd.DataFrame, prep: Any, runs: int = 200) -> float:
    graph_input = prep.transform(row) if prep is not None else row
    feeds = onnx_feeds({c: [None if _cell_missing(v) else v for v in graph_input[c].tolist()] for c in cand.kinds},
                       cand.kinds, cand.missing_text)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        cand.session.run([cand.output], feeds)
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2] * 1e3


@dataclass
class _Checked:
    exact: bool
    diff: float | None
    reason: str
    rows: int
    checks: dict[str, int]
    ranges: dict[str, list[float]]
    missing: list[str]
    on_graph: int = 0


def _check(model: Any, cand: _Candidate, sets: Mapping[str, pd.DataFrame], base: pd.DataFrame, prep: Any,
           classifier: bool, schema: Mapping[str, str], tolerance: float) -> _Checked:
    """Route every check row as the server would, once the columns whose missing values and extreme numbers
    the graph answers alike have been found."""
    import pandas as pd

    # missing values: a column's are admitted only when the pipeline answers them and the graph agrees
    missing = [c for c in cand.may_miss if c in base.columns
               and _answers_alike(model, cand, _nulls(base, c), prep, classifier, tolerance)]
    # extreme numbers: the widest range whose ends both engines answer alike
    ranges: dict[str, list[float]] = {}
    graph_input = prep.transform(base) if prep is not None else base
    for c, k in cand.kinds.items():
        if k == "string" or schema.get(c) == "boolean" or c not in base.columns:
            continue
        levels = _extreme_levels(np.asarray(pd.to_numeric(graph_input[c], errors="coerce"), dtype=np.float64))
        chosen = levels[0]
        for lo, hi in levels[1:]:
            probe = pd.concat([base.iloc[:1]] * 2, ignore_index=True)
            probe[c] = np.array([lo, hi], dtype=np.float64)
            if not _answers_alike(model, cand, probe, prep, classifier, tolerance):
                break
            chosen = (lo, hi)
        ranges[c] = [chosen[0], chosen[1]]
    info = {"categories": cand.categories, "ranges": ranges, "missing": missing, "missing_text": cand.missing_text}
    domain = OnnxDomain(cand.kinds, info)
    worst = 0.0
    total = 0
    on_graph = 0
    checks: dict[str, int] = {}
    for name, rows in sets.items():
        diff, answered = _route_diff(model, cand, rows.reset_index(drop=True), prep, classifier, domain)
        checks[name] = len(rows)
        total += len(rows)
        on_graph += answered
        if isinstance(diff, str):
            return _Checked(False, None, f"{diff} ({name} rows)", total, checks, ranges, missing)
        worst = max(worst, diff)
    if not np.isfinite(worst) or worst > tolerance:
        return _Checked(False, worst, f"max difference {worst:.3g} on {total} rows exceeds {tolerance:g}", total,
                        checks, ranges, missing)
    return _Checked(True, worst, f"max difference {worst:.3g} on {total} rows within {tolerance:g} "
                    f"({on_graph} answered by the graph)", total, checks, ranges, missing, on_graph)


def _check_sets(model: Any, holdout: pd.DataFrame, reference: pd.DataFrame | None, kinds: Mapping[str, str],
                features: Sequence[str]) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """The rows every candidate is checked on, by kind, and one complete base row for single-column probes."""
    import pandas as pd

    held = holdout[list(features)]
    sets: dict[str, pd.DataFrame] = {"held_out": held}
    if len(held) < MIN_CHECK_ROWS:
        source = reference[list(features)] if reference is not None and len(reference) else held
        if len(source):
            sets["generated"] = _perturbed(source, MIN_CHECK_ROWS - len(held) + 100, kinds)
    pool = pd.concat([s for s in sets.values() if len(s)], ignore_index=True) if any(len(s) for s in sets.values()) \
        else held
    complete = pool.dropna()
    if complete.empty and len(pool):  # no complete row anywhere: fill one row's gaps with column values
        row = pool.iloc[:1].copy()
        for c in row.columns:
            if _cell_missing(row[c].iloc[0]):
                seen = pool[c].dropna()
                row[c] = seen.iloc[0] if len(seen) else (0.0 if kinds.get(c) != "string" else "")
        complete = row
    base = complete.iloc[:1].reset_index(drop=True)
    if base.empty:
        return sets, base
    with warnings.catch_warnings():  # all-missing rows keep each column's dtype (pandas warns it will change)
        warnings.simplefilter("ignore", FutureWarning)
        sets["missing"] = pd.concat([_nulls(base, c) for c in features] + [_nulls_all(base, list(features))],
                                    ignore_index=True)
    unseen = []
    for c in features:
        if kinds.get(c) == "string":
            for value in (_UNSEEN, " " + str(base[c].iloc[0]), str(base[c].iloc[0]).upper() + "x"):
                row = base.astype({c: object}).copy()
                row[c] = value
                unseen.append(row)
    if unseen:
        sets["unseen"] = pd.concat(unseen, ignore_index=True)
    boundary = _boundary_rows(model[1:] if _preparer(model) is not None else model,
                              _prepared_base(model, base), kinds)
    if boundary is not None:
        sets["boundary"] = _unprepared(model, boundary, base)
    extreme = []
    big = float(np.finfo(np.float32).max)
    for c in features:
        if kinds.get(c) not in ("double", "float"):
            continue
        for number in (0.0, 1e-300, -1e-300, 1e9, -1e9, 1e30, -1e30, big, -big):
            row = base.copy()
            row[c] = number
            extreme.append(row)
    if extreme:
        sets["extreme"] = pd.concat(extreme, ignore_index=True)
    return sets, base


def _nulls_all(base: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    out = base
    for c in columns:
        out = _nulls(out, c)
    return out


def _prepared_base(model: Any, base: pd.DataFrame) -> pd.DataFrame:
    prep = _preparer(model)
    return prep.transform(base) if prep is not None else base


def _unprepared(model: Any, rows: pd.DataFrame, base: pd.DataFrame) -> pd.DataFrame:
    """Boundary rows built on the preparer's output, as raw rows again (numbers are the same columns)."""
    prep = _preparer(model)
    if prep is None:
        return rows
    out = base.iloc[[0] * len(rows)].reset_index(drop=True).copy()
    for c in prep.numeric:
        if c in rows.columns:
            out[c] = rows[c].to_numpy(dtype=np.float64)
    return out


# -- the export ----------------------------------------------------------------------------------------
def export_onnx(
    model: Any,
    holdout: pd.DataFrame,
    dest: str | Path,
    *,
    features: Sequence[str] | None = None,
    input_schema: Mapping[str, str] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    opset: int = DEFAULT_OPSET,
    reference: pd.DataFrame | None = None,
    compilers: Sequence[str] = COMPILERS,
) -> OnnxInfo:
    """Compile ``model`` to ONNX at ``dest`` when a compiler reproduces the pipeline on the check rows.

    ``holdout`` are held-out rows; ``reference`` (e.g. the training rows) are perturbed into more check rows
    when fewer than :data:`MIN_CHECK_ROWS` held-out rows exist. Returns an :class:`OnnxInfo`; its ``file`` is
    the written file's name, or None when nothing was kept (not exact, or no compiler took the model — the
    reason says which). Never raises for a model it cannot compile.
    """
    dest = Path(dest)
    features = list(features) if features is not None else list(holdout.columns)
    schema = dict(input_schema) if input_schema else _default_schema(holdout[features])
    classifier = hasattr(model, "predict_proba")
    info: OnnxInfo = {"exact": False, "max_abs_diff": None, "opset": opset, "reason": "", "tolerance": tolerance,
                      "rows_checked": 0, "compared": None, "inputs": {}, "file": None, "compiler": None,
                      "engine": "sklearn", "output": None, "candidates": []}
    if dest.exists():
        dest.unlink()
    try:
        kinds = input_kinds(model, features, schema, number="double")
    except ValueError as e:
        info["reason"] = str(e)
        return info
    info["compared"] = "predict_proba" if classifier else "predict (relative to max(1, |value|))"
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):  # OpenMP in histogram gradient boosting crawls on a busy machine
        return _export(model, holdout, dest, info, kinds, features, schema, classifier, tolerance, opset,
                       reference, compilers)


def _export(model: Any, holdout: pd.DataFrame, dest: Path, info: OnnxInfo, kinds: dict[str, str],
            features: list[str], schema: dict[str, str], classifier: bool, tolerance: float, opset: int,
            reference: pd.DataFrame | None, compilers: Sequence[str]) -> OnnxInfo:
    sets, base = _check_sets(model, holdout, reference, kinds, features)
    if base.empty:
        info["reason"] = "no rows to check the export on (no held-out or reference rows)"
        return info
    prep = _preparer(model)
    makers: dict[str, Callable[[], _Candidate]] = {
        "skiff-onnx-double": lambda: _double_candidate(model, features, schema, classifier),
        "skl2onnx": lambda: _skl2onnx_candidate(model, features, schema, classifier, opset),
    }
    results: list[tuple[CandidateInfo, _Candidate | None, _Checked | None]] = []
    for name in compilers:
        try:
            cand = makers[name]()
        except Exception as e:  # a compiler that does not take the model: recorded, the next one tried
            reason = f"conversion failed: {type(e).__name__}: {e}"
            log.info("%s: %s", name, reason)
            results.append(({"compiler": name, "exact": False, "max_abs_diff": None, "reason": reason,
                             "p50_ms": None}, None, None))
            continue
        checked = _check(model, cand, sets, base, prep, classifier, schema, tolerance)
        p50 = _latency_ms(cand, base, prep) if checked.exact else None
        results.append(({"compiler": name, "exact": checked.exact, "max_abs_diff": checked.diff,
                         "reason": checked.reason, "p50_ms": p50, "rows_on_graph": checked.on_graph}, cand, checked))
    info["candidates"] = [r[0] for r in results]
    exact = [r for r in results if r[0]["exact"]]
    if not exact:
        tried = [r for r in results if r[2] is not None]
        best = min(tried, key=lambda r: r[0]["max_abs_diff"] if r[0]["max_abs_diff"] is not None else np.inf) \
            if tried else None
        if best is None:
            info["reason"] = "; ".join(f"{r[0]['compiler']}: {r[0]['reason']}" for r in results)
            return info
        _record(info, best[1], best[2])
        info["exact"], info["file"], info["engine"] = False, None, "sklearn"
        info["reason"] = "; ".join(f"{r[0]['compiler']}: {r[0]['reason']}" for r in results)
        return info
    # the graph that answers the most requests itself (a float32 graph leaves missing values to scikit-learn),
    # then the fastest; a speed difference under 25% is noise on a busy machine, so the first compiler wins it
    most = max(r[2].on_graph for r in exact if r[2] is not None)
    covering = [r for r in exact if r[2] is not None and r[2].on_graph >= 0.99 * most]
    fastest = min(r[0]["p50_ms"] or np.inf for r in covering)
    chosen = next(r for r in covering if (r[0]["p50_ms"] or np.inf) <= 1.25 * fastest)
    _record(info, chosen[1], chosen[2])
    dest.parent.mkdir(parents=True, exist_ok=True)
    assert chosen[1] is not None
    dest.write_bytes(chosen[1].payload)
    info["exact"], info["file"], info["engine"] = True, dest.name, "onnxruntime"
    others = [f"{r[0]['compiler']}: {r[0]['reason']}" for r in results if r is not chosen]
    kinds_checked = ", ".join(k.replace("_", "-") for k in chosen[2].checks) if chosen[2] is not None else ""
    info["reason"] = (f"{chosen[0]['compiler']}: {chosen[0]['reason']} (rows: {kinds_checked}; "
                      f"{chosen[0]['p50_ms']:.3f} ms a row)"
                      + (f"; also tried {'; '.join(others)}" if others else ""))
    return info


def _record(info: OnnxInfo, cand: _Candidate | None, checked: _Checked | None) -> None:
    if cand is None or checked is None:
        return
    info["compiler"] = cand.compiler
    info["inputs"] = dict(cand.kinds)
    info["output"] = cand.output
    info["categories"] = cand.categories
    info["ranges"] = checked.ranges
    info["missing"] = checked.missing
    info["missing_text"] = cand.missing_text
    info["checks"] = checked.checks
    info["rows_checked"] = checked.rows
    info["max_abs_diff"] = checked.diff


def onnx_session(payload: bytes, threads: int = 1) -> OnnxSession:
    """An onnxruntime CPU session capped at ``threads`` intra-op threads, one inter-op thread."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session: OnnxSession = ort.InferenceSession(payload, so, providers=["CPUExecutionProvider"])
    return session
