"""skiff's own compiler of fitted scikit-learn pipelines to ONNX in double precision.

:func:`compile_pipeline` walks the fitted pipeline and writes each step as the ONNX operations that repeat
scikit-learn's arithmetic in float64 (:mod:`skiff.compiled.steps`: imputation, scaling, one-hot and ordinal
encoding, ``ColumnTransformer``, PCA, feature selection, linear and logistic models;
:mod:`skiff.compiled.trees`: random forests and decision trees with their float32 input rounding,
histogram gradient boosting with missing values and native categorical splits). Unlike a float32 export,
a tree then sees the very value scikit-learn compares with its thresholds, so the answers agree to the
last bits in practice; the registration check (:func:`skiff.onnx_export.export_onnx`) still measures it.

Inputs are one ``[N, 1]`` tensor per column: ``double`` numbers (NaN for a missing one; a datetime
feature's calendar parts, kinds ``datetime.year`` etc., are doubles too) and ``string`` text (skiff's
missing marker for a missing one, as the frame preparer writes it). The graph's one output
is ``probabilities`` ``[N, k]`` (classifiers) or ``value`` ``[N, 1]`` (regressors).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from skiff.compiled.graph import GraphBuilder
from skiff.compiled.steps import Column, Columns, Notes, Unsupported, apply_step, as_matrix, linear_model
from skiff.compiled.trees import TREE_MODELS, tree_model

__all__ = ["compile_pipeline", "CompiledGraph", "Unsupported", "COMPILER", "TREE_MODELS"]

#: The name versions record for this compiler.
COMPILER = "skiff-onnx-double"


@dataclass
class CompiledGraph:
    """A compiled pipeline: the ONNX bytes, its inputs (column -> "double"/"string"), its output's name,
    and the text inputs whose unseen values the pipeline refuses (the server sends those to scikit-learn)."""

    payload: bytes
    inputs: dict[str, str]
    output: str
    estimator: str
    closed_categories: dict[str, list[str]] = field(default_factory=dict)


def _split(model: Any) -> tuple[list[Any], Any]:
    steps = [s for _n, s in model.steps] if hasattr(model, "steps") else [model]
    return steps[:-1], steps[-1]


def compile_pipeline(model: Any, kinds: Mapping[str, str], classifier: bool) -> CompiledGraph:
    """The graph of ``model`` (a fitted pipeline after any frame preparer) fed the columns ``kinds``
    (column -> "double" or "string", in the graph's input order). Raises :class:`Unsupported` naming
    the first step it cannot compile."""
    transforms, est = _split(model)
    g = GraphBuilder("skiff")
    numeric = {name: ("string" if kind == "string" else "double") for name, kind in kinds.items()}  # dates: parts
    state: Columns | Any = Columns([Column(g.input(name, kind), kind, name) for name, kind in numeric.items()])
    notes = Notes()
    for step in transforms:
        if step is None or (isinstance(step, str) and step == "passthrough"):
            continue
        state = apply_step(g, step, state, notes)
    m = as_matrix(g, state)
    found = linear_model(g, est, m, classifier) or tree_model(g, est, m, classifier)
    if found is None:
        kind = "classifier" if classifier else "regressor"
        raise Unsupported(f"estimator {type(est).__name__} ({kind}) has no compiled form")
    tensor, width = found
    output = "probabilities" if classifier else "value"
    g.output(tensor, output, width)
    return CompiledGraph(g.model(), dict(kinds), output, type(est).__name__, dict(notes.closed_categories))
