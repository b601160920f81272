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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ONNX_FILE", "DEFAULT_OPSET", "DEFAULT_TOLERANCE", "export_onnx", "onnx_feeds", "input_kinds",
           "onnx_session"]

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
#: Main ONNX opset; the ONNX-ML domain uses opset 3 (both run on onnxruntime >= 1.14).
DEFAULT_OPSET = 17
_ML_OPSET = 3
DEFAULT_TOLERANCE = 1e-5

_NUMERIC = {"integer", "float"}


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


def _default_schema(frame) -> dict[str, str]:
    import pandas as pd

    out = {}
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
    holdout,
    dest: str | Path,
    *,
    features: Sequence[str] | None = None,
    input_schema: Mapping[str, str] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    opset: int = DEFAULT_OPSET,
) -> dict[str, Any]:
    """Export ``model`` to ONNX at ``dest`` when it reproduces the pipeline on ``holdout`` rows.

    Returns ``{"exact", "max_abs_diff", "opset", "reason", "tolerance", "rows_checked", "compared",
    "inputs", "file"}``; ``file`` is the written file's name, or None when nothing was kept (not exact,
    or the conversion failed — the reason says which). Never raises for a model it cannot convert.
    """
    dest = Path(dest)
    features = list(features) if features is not None else list(holdout.columns)
    schema = dict(input_schema) if input_schema else _default_schema(holdout[features])
    info: dict[str, Any] = {"exact": False, "max_abs_diff": None, "opset": opset, "reason": "",
                            "tolerance": tolerance, "rows_checked": 0, "compared": None, "inputs": {},
                            "file": None}
    if dest.exists():
        dest.unlink()
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
    cols = {c: graph_input[c].tolist() for c in kinds}
    outputs = session.run(None, onnx_feeds(cols, kinds))
    if is_classifier:
        expected = np.asarray(model.predict_proba(complete), dtype=np.float64)
        got = np.asarray(outputs[1], dtype=np.float64)
        info["compared"] = "predict_proba"
        scale = 1.0
    else:
        expected = np.asarray(model.predict(complete), dtype=np.float64).reshape(-1)
        got = np.asarray(outputs[0], dtype=np.float64).reshape(-1)
        info["compared"] = "predict (relative to max(1, |value|))"
        scale = max(1.0, float(np.abs(expected).max()))
    if got.shape != expected.shape:
        info["reason"] = f"ONNX output shape {got.shape} differs from the pipeline's {expected.shape}"
        return info
    diff = float(np.abs(got - expected).max()) / scale
    info["max_abs_diff"] = diff
    info["rows_checked"] = int(len(complete))
    if not np.isfinite(diff) or diff > tolerance:
        info["reason"] = f"max difference {diff:.3g} on {len(complete)} held-out rows exceeds {tolerance:g}"
        return info
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(payload)
    info.update(exact=True, file=dest.name,
                reason=f"max difference {diff:.3g} on {len(complete)} held-out rows within {tolerance:g}")
    return info


def onnx_session(payload: bytes, threads: int = 1):
    """An onnxruntime CPU session capped at ``threads`` intra-op threads, one inter-op thread."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(payload, so, providers=["CPUExecutionProvider"])
