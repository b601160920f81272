"""The fast inference path: a fitted scikit-learn pipeline exported to ONNX, kept only when exact.

:func:`export_onnx` converts the pipeline with skl2onnx, runs the ONNX graph with onnxruntime on held-out
rows fed exactly as the model server feeds it (:func:`onnx_feeds`: one ``[n, 1]`` tensor per column,
numbers as float32 — the ONNX Imputer has no double kernel — and text as strings), and compares with the
pipeline's own ``predict_proba`` (classifiers) or ``predict`` (regressors). The graph is written only when
the largest difference is within the tolerance; the returned dict goes into a version's
``metadata.extra["onnx"]`` and tells the server whether to use ``model.onnx``::

    info = export_onnx(pipeline, X_test, workdir / "model.onnx", input_schema=schema)
    extra["onnx"] = info
    files = {"model.onnx": workdir / "model.onnx"} if info["exact"] else {}

A pipeline whose first step is skiff's frame preparer (a step with ``numeric``, ``categorical`` and
``datetime`` column lists) is exported from its second step on: the server then feeds the preparer's
outputs (numeric columns as float, categorical ones — categories, strings, booleans — as text).
Datetime features, unsupported estimators (e.g. histogram gradient boosting, which skl2onnx converts
with differences up to 0.2 in probability) and rows with missing values stay on scikit-learn.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired, Protocol, TypedDict

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ONNX_FILE", "DEFAULT_OPSET", "DEFAULT_TOLERANCE", "export_onnx", "onnx_feeds", "input_kinds",
           "onnx_session", "known_categories", "OnnxDomain", "OnnxInfo", "OnnxSession", "OnnxNode"]

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
#: Main ONNX opset; the ONNX-ML domain uses opset 3 (both run on onnxruntime >= 1.14).
DEFAULT_OPSET = 17
_ML_OPSET = 3
DEFAULT_TOLERANCE = 1e-5

_NUMERIC = {"integer", "float"}


class OnnxInfo(TypedDict):
    """What :func:`export_onnx` found: a version's ``metadata.extra["onnx"]``, read by the model server."""

    exact: bool
    max_abs_diff: float | None
    opset: int
    reason: str
    tolerance: float
    rows_checked: int
    compared: str | None
    #: the graph's inputs in order: column -> "float" or "string"
    inputs: dict[str, str]
    #: the written file's name; None when nothing was kept
    file: str | None
    #: each text input's fitted categories (None: some encoder not found); set once the graph converted
    categories: NotRequired[dict[str, list[str]] | None]
    #: column -> [low, high] the graph answers exactly; set once the held-out rows matched
    ranges: NotRequired[dict[str, list[float]]]


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


def input_kinds(model: Any, features: Sequence[str], input_schema: Mapping[str, str]) -> dict[str, str]:
    """The ONNX graph's inputs, in order: column name -> ``"float"`` or ``"string"``.

    Raises ``ValueError`` when a column cannot be fed from request values (datetime features).
    """
    prep = _preparer(model)
    if prep is not None:
        if list(prep.datetime):
            raise ValueError(f"datetime features {list(prep.datetime)} are not exported to ONNX")
        return {**{c: "float" for c in prep.numeric}, **{c: "string" for c in prep.categorical}}
    kinds: dict[str, str] = {}
    for f in features:
        t = input_schema.get(f)
        if t in _NUMERIC or t == "boolean":
            kinds[f] = "float"
        elif t in ("string", "category"):
            kinds[f] = "string"
        elif t == "datetime":
            raise ValueError(f"datetime feature {f!r} is not exported to ONNX")
        else:
            raise ValueError(f"feature {f!r} has no known type in the input schema (got {t!r})")
    return kinds


def onnx_feeds(columns: Mapping[str, Sequence[Any]], kinds: Mapping[str, str]) -> dict[str, np.ndarray]:
    """ONNX inputs straight from column values (no DataFrame): float32 ``[n, 1]`` or string ``[n, 1]``.

    Values must be complete (no None): the server sends rows with missing values to scikit-learn.
    Booleans fed to a string input become ``"True"``/``"False"``, as the frame preparer writes them.
    """
    feeds: dict[str, np.ndarray] = {}
    for name, kind in kinds.items():
        values = columns[name]
        if kind == "float":
            feeds[name] = np.asarray(values, dtype=np.float32).reshape(-1, 1)
        else:
            arr = np.empty((len(values), 1), dtype=object)
            arr[:, 0] = [v if type(v) is str else str(v) for v in values]
            feeds[name] = arr
    return feeds


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
    registration check route by it alike): rows without missing values, text values among the fitted
    categories, numbers within the checked range. Everything else goes to scikit-learn, so both engines
    give the same answer for every request, unseen categories and extreme numbers included."""

    def __init__(self, kinds: Mapping[str, str], info: Mapping[str, Any]) -> None:
        cats = info.get("categories")
        self.categories = {c: frozenset(v) for c, v in cats.items()} if cats else None
        self.ranges = {c: (float(lo), float(hi)) for c, (lo, hi) in (info.get("ranges") or {}).items()}
        self.kinds = dict(kinds)

    def admits(self, columns: Mapping[str, Sequence[Any]]) -> bool:
        for name, kind in self.kinds.items():
            values = columns[name]
            if kind == "float":
                r = self.ranges.get(name)
                if r is not None:
                    lo, hi = r
                    for v in values:
                        if not lo <= v <= hi:
                            return False
            elif self.categories is not None:
                known = self.categories[name]
                for v in values:
                    if (v if type(v) is str else str(v)) not in known:
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


def _initial_types(kinds: Mapping[str, str]) -> list[tuple[str, Any]]:
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    return [(n, FloatTensorType([None, 1]) if k == "float" else StringTensorType([None, 1])) for n, k in kinds.items()]


def export_onnx(
    model: Any,
    holdout: pd.DataFrame,
    dest: str | Path,
    *,
    features: Sequence[str] | None = None,
    input_schema: Mapping[str, str] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    opset: int = DEFAULT_OPSET,
) -> OnnxInfo:
    """Export ``model`` to ONNX at ``dest`` when it reproduces the pipeline on ``holdout`` rows.

    Returns an :class:`OnnxInfo`; its ``file`` is the written file's name, or None when nothing was kept
    (not exact, or the conversion failed — the reason says which). Never raises for a model it cannot
    convert.
    """
    dest = Path(dest)
    features = list(features) if features is not None else list(holdout.columns)
    schema = dict(input_schema) if input_schema else _default_schema(holdout[features])
    info: OnnxInfo = {"exact": False, "max_abs_diff": None, "opset": opset, "reason": "",
                            "tolerance": tolerance, "rows_checked": 0, "compared": None, "inputs": {},
                            "file": None}
    if dest.exists():
        dest.unlink()
    import pandas as pd

    try:
        kinds = input_kinds(model, features, schema)
    except ValueError as e:
        info["reason"] = str(e)
        return info
    info["inputs"] = kinds
    complete = holdout[features].dropna()
    if complete.empty:
        info["reason"] = "no held-out rows without missing values to check the export on"
        return info
    is_classifier = hasattr(model, "predict_proba")
    prep = _preparer(model)
    graph_model = model[1:] if prep is not None else model
    graph_input = prep.transform(complete) if prep is not None else complete
    try:
        from skl2onnx import convert_sklearn

        final = graph_model.steps[-1][1] if hasattr(graph_model, "steps") else graph_model
        options = {id(final): {"zipmap": False}} if is_classifier else None
        onx = convert_sklearn(graph_model, initial_types=_initial_types(kinds), options=options,
                              target_opset={"": opset, "ai.onnx.ml": _ML_OPSET})
        payload = onx.SerializeToString()
        session = onnx_session(payload, threads=1)
    except Exception as e:  # skl2onnx raises many kinds for unsupported models; all mean "not exported"
        info["reason"] = f"conversion failed: {type(e).__name__}: {e}"
        log.info("ONNX export skipped: %s", info["reason"])
        return info
    info["categories"] = known_categories(model, kinds)
    if is_classifier:
        info["compared"] = "predict_proba"
    else:
        info["compared"] = "predict (relative to max(1, |value|))"
    diff = _max_diff(model, session, complete, prep, kinds, is_classifier)
    if isinstance(diff, str):
        info["reason"] = diff
        return info
    info["max_abs_diff"] = diff
    checked = len(complete)
    if not np.isfinite(diff) or diff > tolerance:
        info["rows_checked"] = checked
        info["reason"] = f"max difference {diff:.3g} on {checked} held-out rows exceeds {tolerance:g}"
        return info
    # extreme numbers: the graph computes in float32; keep the wide range only where it stays exact
    ranges: dict[str, list[float]] = {}
    info["ranges"] = ranges
    for c, k in kinds.items():
        if k != "float" or schema.get(c) == "boolean" or c not in complete.columns:
            continue
        col = graph_input[c].astype(float)
        lo, hi = float(col.min()), float(col.max())
        span = max(hi - lo, 1.0)
        wide = (lo - 10 * span, hi + 10 * span)
        probe = pd.concat([complete.iloc[:1]] * 2, ignore_index=True)
        probe[c] = np.array(wide, dtype=np.float64)
        wide_diff = _max_diff(model, session, probe, prep, kinds, is_classifier)
        checked += 2
        if isinstance(wide_diff, str) or not np.isfinite(wide_diff) or wide_diff > tolerance:
            ranges[c] = [lo, hi]
        else:
            ranges[c] = list(wide)
            diff = max(diff, wide_diff)
    # unseen and missing values: checked through the route the server takes (OnnxDomain), every row with
    # a missing value in the held-out set included
    domain = OnnxDomain(kinds, info)
    probes = [holdout[features][holdout[features].isna().any(axis=1)]]
    base = complete.iloc[:1]
    for c in features:
        row = base.copy()
        row[c] = None if not pd.api.types.is_numeric_dtype(row[c].dtype) else np.nan
        probes.append(row)
        if kinds.get(c) == "string":
            row = base.astype({c: object}).copy()
            row[c] = "__skiff_unseen__"
            probes.append(row)
            row = base.astype({c: object}).copy()
            row[c] = " " + str(base[c].iloc[0])
            probes.append(row)
    routed = pd.concat([p for p in probes if len(p)], ignore_index=True)
    routed_diff = _route_diff(model, session, routed, prep, kinds, is_classifier, domain)
    if isinstance(routed_diff, str):
        info["rows_checked"] = checked
        info["reason"] = routed_diff
        return info
    checked += len(routed)
    diff = max(diff, routed_diff)
    info["max_abs_diff"] = diff
    info["rows_checked"] = int(checked)
    if not np.isfinite(diff) or diff > tolerance:
        info["reason"] = (f"max difference {diff:.3g} on {checked} rows (held-out, extreme, unseen and missing "
                          f"values) exceeds {tolerance:g}")
        return info
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(payload)
    info["exact"], info["file"] = True, dest.name
    info["reason"] = (f"max difference {diff:.3g} on {checked} rows (held-out, extreme, unseen and missing "
                      f"values) within {tolerance:g}")
    return info


def _expected(model: Any, rows: pd.DataFrame, is_classifier: bool) -> np.ndarray:
    if is_classifier:
        return np.asarray(model.predict_proba(rows), dtype=np.float64)
    return np.asarray(model.predict(rows), dtype=np.float64).reshape(-1)


def _onnx_out(session: OnnxSession, rows: pd.DataFrame, prep: Any, kinds: Mapping[str, str],
              is_classifier: bool) -> np.ndarray:
    graph_input = prep.transform(rows) if prep is not None else rows
    outputs = session.run(None, onnx_feeds({c: graph_input[c].tolist() for c in kinds}, kinds))
    if is_classifier:
        return np.asarray(outputs[1], dtype=np.float64)
    return np.asarray(outputs[0], dtype=np.float64).reshape(-1)


def _diff(expected: np.ndarray, got: np.ndarray, is_classifier: bool) -> float | str:
    if got.shape != expected.shape:
        return f"ONNX output shape {got.shape} differs from the pipeline's {expected.shape}"
    if not len(expected):
        return 0.0
    scale = 1.0 if is_classifier else max(1.0, float(np.abs(expected).max()))
    return float(np.abs(got - expected).max()) / scale


def _max_diff(model: Any, session: OnnxSession, rows: pd.DataFrame, prep: Any, kinds: Mapping[str, str],
              is_classifier: bool) -> float | str:
    """Largest difference between the graph and the pipeline on complete rows (a text when it fails)."""
    try:
        got = _onnx_out(session, rows, prep, kinds, is_classifier)
    except Exception as e:  # onnxruntime raises its own kinds on values the graph cannot take
        return f"the ONNX graph fails on checked rows: {type(e).__name__}: {e}"
    return _diff(_expected(model, rows, is_classifier), got, is_classifier)


def _route_diff(model: Any, session: OnnxSession, rows: pd.DataFrame, prep: Any, kinds: Mapping[str, str],
                is_classifier: bool, domain: OnnxDomain) -> float | str:
    """The server's answer (ONNX where the domain admits a row, else the pipeline) against the pipeline."""
    if not len(rows):
        return 0.0
    graph_input = prep.transform(rows) if prep is not None else rows
    complete = ~rows.isna().any(axis=1).to_numpy()
    admitted = [i for i in range(len(rows)) if complete[i]
                and domain.admits({c: graph_input[c].iloc[i:i + 1].tolist() for c in kinds})]
    if not admitted:
        return 0.0  # the pipeline answers them on both engines (or refuses them on both)
    rows = rows.iloc[admitted]
    try:
        expected = _expected(model, rows, is_classifier)
    except (ValueError, TypeError) as e:
        return f"the server would send the ONNX graph rows the pipeline refuses: {type(e).__name__}: {e}"
    try:
        got = _onnx_out(session, rows, prep, kinds, is_classifier)
    except Exception as e:  # an admitted value the graph cannot take: the domain is wrong, not exact
        return f"the ONNX graph fails on rows the server would send it: {type(e).__name__}: {e}"
    return _diff(expected, got, is_classifier)


def onnx_session(payload: bytes, threads: int = 1) -> OnnxSession:
    """An onnxruntime CPU session capped at ``threads`` intra-op threads, one inter-op thread."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session: OnnxSession = ort.InferenceSession(payload, so, providers=["CPUExecutionProvider"])
    return session
