"""Preprocessing and linear models as double-precision ONNX nodes, each repeating scikit-learn's arithmetic.

A step sees either :class:`Columns` (the graph inputs, one ``[N, 1]`` tensor per named column, before a
``ColumnTransformer`` joins them) or a :class:`Matrix` (``[N, F]`` doubles). Text columns carry the
substitutions an imputer made (``{"__skiff_missing__": "Month-to-month"}``) until an encoder folds them
into its lookup table. Encoders are read by asking the fitted encoder itself (one probe row per category,
and one unseen value), so ``drop``, infrequent categories and ``handle_unknown`` come out as scikit-learn
computes them, not as a re-implementation guesses them.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from skiff.compiled.graph import GraphBuilder

__all__ = ["Unsupported", "Column", "Columns", "Matrix", "UNSEEN", "apply_step", "linear_model", "as_matrix"]

#: The value probed as a category no encoder has seen.
UNSEEN = "__skiff_unseen__"


class Unsupported(Exception):
    """A fitted step the compiler does not translate (the message says which and why)."""


@dataclass
class Column:
    tensor: str
    kind: str  # "double" or "string"
    source: str  # the graph input it comes from
    substitute: dict[str, str] = field(default_factory=dict)


@dataclass
class Columns:
    items: list[Column]


@dataclass
class Matrix:
    tensor: str
    width: int


@dataclass
class Notes:
    """What the compiled steps tell the exactness check and the server: text inputs whose unseen values the
    pipeline refuses (the server sends those to scikit-learn), and the categorical encodings found."""

    closed_categories: dict[str, list[str]] = field(default_factory=dict)
    encoders: list[str] = field(default_factory=list)


def as_matrix(g: GraphBuilder, state: Columns | Matrix) -> Matrix:
    if isinstance(state, Matrix):
        return state
    text = [c.source for c in state.items if c.kind != "double"]
    if text:
        raise Unsupported(f"text columns {text} reach a numeric step without an encoder")
    if len(state.items) == 1:
        return Matrix(state.items[0].tensor, 1)
    return Matrix(g.op("Concat", [c.tensor for c in state.items], "cols", axis=1), len(state.items))


def _vector(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(1, -1)


def _imputer(g: GraphBuilder, step: Any, state: Columns | Matrix) -> Columns | Matrix:
    if getattr(step, "add_indicator", False):
        raise Unsupported("SimpleImputer(add_indicator=True)")
    stats = step.statistics_
    marker = step.missing_values
    if isinstance(state, Columns) and all(c.kind == "string" for c in state.items):
        if not isinstance(marker, str):
            raise Unsupported(f"a text imputer whose missing value is {marker!r} (not a text marker)")
        if len(stats) != len(state.items):
            raise Unsupported("a text imputer that dropped columns")
        items = []
        for col, stat in zip(state.items, stats, strict=True):
            sub = {k: (str(stat) if v == marker else v) for k, v in col.substitute.items()}
            sub.setdefault(marker, str(stat))
            items.append(Column(col.tensor, col.kind, col.source, sub))
        return Columns(items)
    if not (isinstance(marker, float) and np.isnan(marker)):
        raise Unsupported(f"a numeric imputer whose missing value is {marker!r} (only NaN is compiled)")
    values = np.asarray(stats, dtype=np.float64)
    m = as_matrix(g, state)
    if values.shape[0] != m.width or not np.all(np.isfinite(values)):
        raise Unsupported("a numeric imputer that drops all-missing columns")
    nan = g.op("IsNaN", [m.tensor])
    return Matrix(g.op("Where", [nan, g.const(_vector(values), "stat"), m.tensor], "imputed"), m.width)


def _standard_scaler(g: GraphBuilder, step: Any, state: Columns | Matrix) -> Matrix:
    m = as_matrix(g, state)
    x = m.tensor
    if step.with_mean:  # StandardScaler.transform: X -= mean_; X /= scale_ (in that order, in float64)
        x = g.op("Sub", [x, g.const(_vector(step.mean_), "mean")], "centered")
    if step.with_std and step.scale_ is not None:
        x = g.op("Div", [x, g.const(_vector(step.scale_), "scale")], "scaled")
    return Matrix(x, m.width)


def _minmax_scaler(g: GraphBuilder, step: Any, state: Columns | Matrix) -> Matrix:
    if getattr(step, "clip", False):
        raise Unsupported("MinMaxScaler(clip=True)")
    m = as_matrix(g, state)
    x = g.op("Mul", [m.tensor, g.const(_vector(step.scale_), "scale")])  # X *= scale_; X += min_
    return Matrix(g.op("Add", [x, g.const(_vector(step.min_), "min")]), m.width)


def _probe_rows(step: Any, i: int, values: Sequence[str]) -> np.ndarray:
    base = [cats[0] for cats in step.categories_]
    rows = np.empty((len(values), len(base)), dtype=object)
    rows[:] = base
    rows[:, i] = list(values)
    return rows


def _dense(out: Any) -> np.ndarray:
    return np.asarray(out.toarray() if hasattr(out, "toarray") else out, dtype=np.float64)


def _encoder_blocks(step: Any, state: Columns, notes: Notes) -> list[tuple[Column, list[str], list[np.ndarray],
                                                                             np.ndarray | None]]:
    """Per text column: its categories, the encoder's output block for each, and for an unseen value (None
    when the encoder refuses unseen values)."""
    if any(c.kind != "string" for c in state.items):
        raise Unsupported(f"{type(step).__name__} of numeric columns")
    if len(step.categories_) != len(state.items):
        raise Unsupported(f"{type(step).__name__} fitted on another number of columns")
    widths = getattr(step, "_n_features_outs", None) if type(step).__name__ == "OneHotEncoder" else \
        [1] * len(state.items)
    if widths is None:
        raise Unsupported("a OneHotEncoder that does not say how wide each column's block is")
    starts = np.concatenate([[0], np.cumsum(widths)]).astype(int)
    out = []
    for i, col in enumerate(state.items):
        cats = list(step.categories_[i])
        if not all(type(c) is str for c in cats):
            raise Unsupported(f"{type(step).__name__} categories of column {col.source!r} are not all text")
        lo, hi = starts[i], starts[i + 1]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            blocks = list(_dense(step.transform(_probe_rows(step, i, cats)))[:, lo:hi])
            try:
                unseen: np.ndarray | None = _dense(step.transform(_probe_rows(step, i, [UNSEEN])))[0, lo:hi]
            except ValueError:
                unseen = None
        if unseen is None:
            notes.closed_categories[col.source] = sorted(set(cats) | set(col.substitute))
        out.append((col, cats, blocks, unseen))
    return out


def _one_hot(g: GraphBuilder, step: Any, state: Columns | Matrix, notes: Notes) -> Matrix:
    if not isinstance(state, Columns):
        raise Unsupported("OneHotEncoder after a numeric step")
    parts = []
    width = 0
    for col, cats, blocks, unseen in _encoder_blocks(step, state, notes):
        k = len(blocks[0]) if blocks else 0
        if k == 0:
            continue

        def index(block: np.ndarray) -> int:
            ones = np.flatnonzero(block)
            if len(ones) > 1 or (len(ones) == 1 and block[ones[0]] != 1.0):
                raise Unsupported("a OneHotEncoder block that is not one-hot")
            return int(ones[0]) if len(ones) else -1

        mapping = {c: index(b) for c, b in zip(cats, blocks, strict=True)}
        for key, value in col.substitute.items():  # the imputer ran first: its substitutes win
            mapping[key] = mapping.get(value, index(unseen) if unseen is not None else -1)
        default = index(unseen) if unseen is not None else -1
        code = g.op("LabelEncoder", [col.tensor], "code", domain="ai.onnx.ml", keys_strings=list(mapping),
                    values_int64s=list(mapping.values()), default_int64=default)
        hot = g.op("Equal", [code, g.const(np.arange(k, dtype=np.int64).reshape(1, -1), "slots", np.int64)])
        parts.append(g.op("Cast", [hot], "onehot", to=11))  # 11: DOUBLE
        width += k
    notes.encoders.append("one-hot")
    if not parts:
        raise Unsupported("a OneHotEncoder with no output columns")
    if len(parts) == 1:
        return Matrix(parts[0], width)
    return Matrix(g.op("Concat", parts, "onehots", axis=1), width)


def _ordinal(g: GraphBuilder, step: Any, state: Columns | Matrix, notes: Notes) -> Matrix:
    if not isinstance(state, Columns):
        raise Unsupported("OrdinalEncoder after a numeric step")
    parts = []
    for col, cats, blocks, unseen in _encoder_blocks(step, state, notes):
        mapping = {c: float(b[0]) for c, b in zip(cats, blocks, strict=True)}
        fallback = float(unseen[0]) if unseen is not None else float("nan")
        for key, value in col.substitute.items():
            mapping[key] = mapping.get(value, fallback)
        parts.append(g.op("LabelEncoder", [col.tensor], "ordinal", domain="ai.onnx.ml",
                          keys_strings=list(mapping),
                          values_tensor=g.tensor_attr(list(mapping.values())),
                          default_tensor=g.tensor_attr([fallback])))
    notes.encoders.append("ordinal")
    if len(parts) == 1:
        return Matrix(parts[0], 1)
    return Matrix(g.op("Concat", parts, "ordinals", axis=1), len(parts))


def _pca(g: GraphBuilder, step: Any, state: Columns | Matrix) -> Matrix:
    m = as_matrix(g, state)
    comp_t = np.ascontiguousarray(np.asarray(step.components_, dtype=np.float64).T)
    # PCA._transform: X @ components_.T, then minus mean_ @ components_.T (computed here as it does)
    offset = np.asarray(step.mean_, dtype=np.float64).reshape(1, -1) @ np.asarray(step.components_).T
    x = g.op("MatMul", [m.tensor, g.const(comp_t, "components")], "projected")
    x = g.op("Sub", [x, g.const(offset, "offset")], "pca")
    if step.whiten:
        scale = np.sqrt(np.asarray(step.explained_variance_, dtype=np.float64))
        scale[scale < np.finfo(scale.dtype).eps] = np.finfo(scale.dtype).eps
        x = g.op("Div", [x, g.const(scale.reshape(1, -1), "whiten")], "whitened")
    return Matrix(x, comp_t.shape[1])


def _select(g: GraphBuilder, step: Any, state: Columns | Matrix) -> Matrix:
    m = as_matrix(g, state)
    keep = np.flatnonzero(step.get_support())
    return Matrix(g.op("Gather", [m.tensor, g.const(keep, "keep", np.int64)], "selected", axis=1), len(keep))


def _column_transformer(g: GraphBuilder, step: Any, state: Columns | Matrix, notes: Notes) -> Matrix:
    if not isinstance(state, Columns):
        raise Unsupported("a ColumnTransformer after another step")
    by_name = {c.source: c for c in state.items}
    names = [str(n) for n in getattr(step, "feature_names_in_", [c.source for c in state.items])]
    indices = getattr(step, "_transformer_to_input_indices", None)
    if indices is None:
        raise Unsupported("a ColumnTransformer that does not say which columns each part takes")
    parts: list[Matrix] = []
    for name, trans, _cols in step.transformers_:
        if isinstance(trans, str) and trans == "drop":
            continue
        idx = list(indices.get(name, []))
        if not idx:
            continue
        cols = [by_name[names[i]] for i in idx]
        if isinstance(trans, str):  # "passthrough"
            parts.append(as_matrix(g, Columns(cols)))
            continue
        parts.append(as_matrix(g, apply_step(g, trans, Columns(cols), notes)))
    if not parts:
        raise Unsupported("a ColumnTransformer with no output columns")
    if len(parts) == 1:
        return parts[0]
    return Matrix(g.op("Concat", [p.tensor for p in parts], "features", axis=1), sum(p.width for p in parts))


def apply_step(g: GraphBuilder, step: Any, state: Columns | Matrix, notes: Notes) -> Columns | Matrix:
    """One fitted transformer (a nested Pipeline or ColumnTransformer included) as graph nodes."""
    name = type(step).__name__
    if name == "Pipeline":
        for _n, sub in step.steps:
            if sub is None or (isinstance(sub, str) and sub == "passthrough"):
                continue
            state = apply_step(g, sub, state, notes)
        return state
    if name == "ColumnTransformer":
        return _column_transformer(g, step, state, notes)
    if name == "SimpleImputer":
        return _imputer(g, step, state)
    if name == "StandardScaler":
        return _standard_scaler(g, step, state)
    if name == "MinMaxScaler":
        return _minmax_scaler(g, step, state)
    if name == "OneHotEncoder":
        return _one_hot(g, step, state, notes)
    if name == "OrdinalEncoder":
        return _ordinal(g, step, state, notes)
    if name == "PCA":
        return _pca(g, step, state)
    if hasattr(step, "get_support") and hasattr(step, "transform"):
        return _select(g, step, state)
    if name in ("SMOTE", "RandomUnderSampler", "RandomOverSampler"):
        return state  # resamplers act while fitting only
    raise Unsupported(f"step {name} has no compiled form")


_LINEAR_REGRESSORS = {"LinearRegression", "Ridge", "RidgeCV", "Lasso", "LassoCV", "ElasticNet", "ElasticNetCV",
                      "BayesianRidge", "ARDRegression", "HuberRegressor", "SGDRegressor"}


def linear_model(g: GraphBuilder, est: Any, m: Matrix, classifier: bool) -> tuple[str, int] | None:
    """A linear model's output (probabilities ``[N, k]`` or values ``[N, 1]``), or None for another model."""
    name = type(est).__name__
    if classifier and name == "LogisticRegression":
        coef = np.asarray(est.coef_, dtype=np.float64)
        decision = g.op("Add", [g.op("MatMul", [m.tensor, g.const(np.ascontiguousarray(coef.T), "coef")]),
                                g.const(np.asarray(est.intercept_, dtype=np.float64).reshape(1, -1), "intercept")],
                        "decision")
        if len(est.classes_) <= 2:  # _predict_proba_lr: p = expit(d); [1 - p, p]
            p = g.op("Sigmoid", [decision], "p1")
            p0 = g.op("Sub", [g.const(np.ones((1, 1)), "one"), p], "p0")
            return g.op("Concat", [p0, p], "proba", axis=1), 2
        return g.op("Softmax", [decision], "proba", axis=-1), len(est.classes_)
    if not classifier and name in _LINEAR_REGRESSORS:
        coef = np.asarray(est.coef_, dtype=np.float64)
        if coef.ndim != 1:
            if coef.shape[0] != 1:
                raise Unsupported(f"a multi-output {name}")
            coef = coef[0]
        intercept = np.asarray(est.intercept_, dtype=np.float64).reshape(1, -1)
        value = g.op("Add", [g.op("MatMul", [m.tensor, g.const(coef.reshape(-1, 1), "coef")]),
                             g.const(intercept, "intercept")], "value")
        return value, 1
    return None
