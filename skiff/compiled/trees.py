"""Tree models as ONNX-ML ``TreeEnsemble`` (opset 5) in double precision, decided as scikit-learn decides.

- Random forests, extra trees and decision trees compare ``float32(x) <= threshold`` (scikit-learn casts
  the input to float32 and keeps float64 thresholds): the graph casts to float and back, then compares in
  double. Leaf values are summed tree by tree and divided by the number of trees, as ``predict`` does; a
  classifier's class ``k`` is target ``k`` (a binary one computes class 1 and ``1 - p``).
- Histogram gradient boosting compares float64 ``x <= num_threshold``; a missing value goes where the node's
  ``missing_go_to_left`` says; a native categorical split is set membership (``BRANCH_MEMBER``), and a
  category unknown at fit time — or negative — is sent the missing value's way, as scikit-learn's predictor
  does. The baseline is the first tree of each target (a single leaf), so the sum runs in scikit-learn's
  order: baseline, then iteration by iteration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from skiff.compiled.graph import GraphBuilder
from skiff.compiled.steps import Matrix, Unsupported

__all__ = ["tree_model", "TREE_MODELS"]

_LEQ, _MEMBER = 0, 6
_FOREST_CLASSIFIERS = {"RandomForestClassifier", "ExtraTreesClassifier", "DecisionTreeClassifier",
                       "ExtraTreeClassifier"}
_FOREST_REGRESSORS = {"RandomForestRegressor", "ExtraTreesRegressor", "DecisionTreeRegressor", "ExtraTreeRegressor"}
_HGB = {"HistGradientBoostingClassifier", "HistGradientBoostingRegressor"}
#: The estimators this module compiles.
TREE_MODELS = frozenset(_FOREST_CLASSIFIERS | _FOREST_REGRESSORS | _HGB)


@dataclass
class _Ensemble:
    """The attribute arrays of one TreeEnsemble node, filled tree by tree."""

    roots: list[int] = field(default_factory=list)
    features: list[int] = field(default_factory=list)
    modes: list[int] = field(default_factory=list)
    splits: list[float] = field(default_factory=list)
    true_ids: list[int] = field(default_factory=list)
    true_leaf: list[int] = field(default_factory=list)
    false_ids: list[int] = field(default_factory=list)
    false_leaf: list[int] = field(default_factory=list)
    missing_true: list[int] = field(default_factory=list)
    members: list[float] = field(default_factory=list)
    leaf_targets: list[int] = field(default_factory=list)
    leaf_weights: list[float] = field(default_factory=list)

    def leaf(self, target: int, weight: float) -> int:
        self.leaf_targets.append(target)
        self.leaf_weights.append(float(weight))
        return len(self.leaf_weights) - 1

    def constant(self, target: int, weight: float) -> None:
        """A tree that is one leaf: a split whose both branches reach it."""
        leaf = self.leaf(target, weight)
        self.roots.append(len(self.features))
        self._node(0, _LEQ, 0.0, (leaf, 1), (leaf, 1), 0)

    def _node(self, feature: int, mode: int, split: float, true: tuple[int, int], false: tuple[int, int],
              missing_true: int) -> None:
        self.features.append(int(feature))
        self.modes.append(mode)
        self.splits.append(float(split))
        self.true_ids.append(true[0])
        self.true_leaf.append(true[1])
        self.false_ids.append(false[0])
        self.false_leaf.append(false[1])
        self.missing_true.append(int(missing_true))

    def tree(self, left: np.ndarray, right: np.ndarray, is_leaf: np.ndarray, feature: np.ndarray,
             split: np.ndarray, missing_left: np.ndarray, value: np.ndarray, target: int,
             members: dict[int, list[float]] | None = None) -> None:
        """One binary tree given by node arrays (node 0 is the root; left is the "true" branch)."""
        if is_leaf[0]:
            self.constant(target, float(value[0]))
            return
        order = [i for i in range(len(left)) if not is_leaf[i]]  # interior nodes, in node order
        base = len(self.features)
        position = {node: base + k for k, node in enumerate(order)}
        leaves: dict[int, int] = {}
        for i in range(len(left)):
            if is_leaf[i]:
                leaves[i] = self.leaf(target, float(value[i]))
        self.roots.append(base)

        def ref(child: int) -> tuple[int, int]:
            return (leaves[child], 1) if is_leaf[child] else (position[child], 0)

        for node in order:
            mode, threshold = _LEQ, float(split[node])
            if members is not None and node in members:
                mode, threshold = _MEMBER, float("nan")
                self.members.extend([*members[node], float("nan")])
            self._node(int(feature[node]), mode, threshold, ref(int(left[node])), ref(int(right[node])),
                       int(bool(missing_left[node])))

    def node(self, g: GraphBuilder, x: str, n_targets: int) -> str:
        attrs: dict[str, Any] = {}
        if self.members:
            attrs["membership_values"] = g.tensor_attr(self.members[:-1])  # sets end with NaN; no last one
        return g.op("TreeEnsemble", [x], "trees", domain="ai.onnx.ml", aggregate_function=1, post_transform=0,
                    n_targets=n_targets, tree_roots=self.roots, nodes_featureids=self.features,
                    nodes_modes=g.tensor_attr(self.modes, np.uint8), nodes_splits=g.tensor_attr(self.splits),
                    nodes_truenodeids=self.true_ids, nodes_trueleafs=self.true_leaf,
                    nodes_falsenodeids=self.false_ids, nodes_falseleafs=self.false_leaf,
                    nodes_missing_value_tracks_true=self.missing_true, leaf_targetids=self.leaf_targets,
                    leaf_weights=g.tensor_attr(self.leaf_weights), **attrs)


def _forest(g: GraphBuilder, est: Any, m: Matrix, classifier: bool) -> tuple[str, int]:
    trees = list(getattr(est, "estimators_", [est]))
    if getattr(est, "n_outputs_", 1) != 1:
        raise Unsupported(f"a multi-output {type(est).__name__}")
    n_classes = len(est.classes_) if classifier else 1
    targets = [1] if n_classes == 2 else list(range(n_classes))
    ens = _Ensemble()
    for k_out, k in enumerate(targets):
        for t in trees:
            tr = t.tree_
            left, right = tr.children_left, tr.children_right
            missing = getattr(tr, "missing_go_to_left", np.zeros(tr.node_count, dtype=np.uint8))
            value = tr.value[:, 0, k] if classifier else tr.value[:, 0, 0]
            ens.tree(left, right, left == -1, tr.feature, tr.threshold, missing, value, k_out)
    # scikit-learn validates tree inputs as float32: round to float32, then compare with float64 thresholds
    x32 = g.op("Cast", [g.op("Cast", [m.tensor], "x32", to=1)], "x", to=11)
    out = ens.node(g, x32, len(targets))
    if len(trees) > 1:
        out = g.op("Div", [out, g.const(np.array([[float(len(trees))]]), "n_trees")], "mean")
    if not classifier:
        return out, 1
    if n_classes == 2:
        p0 = g.op("Sub", [g.const(np.ones((1, 1)), "one"), out], "p0")
        return g.op("Concat", [p0, out], "proba", axis=1), 2
    return out, n_classes


def _bits(words: np.ndarray) -> list[float]:
    """The category values a 256-bit bitset (eight uint32 words) holds."""
    return [float(w * 32 + b) for w in range(len(words)) for b in range(32) if (int(words[w]) >> b) & 1]


def _hgb(g: GraphBuilder, est: Any, m: Matrix, classifier: bool) -> tuple[str, int]:
    if getattr(est, "_preprocessor", None) is not None:
        m = _hgb_encoded(g, est._preprocessor, m)
    link = type(est._loss.link).__name__
    baseline = np.asarray(est._baseline_prediction, dtype=np.float64).reshape(-1)
    k = len(baseline)
    ens = _Ensemble()
    for target in range(k):
        ens.constant(target, float(baseline[target]))
    x = m.tensor
    categorical = np.flatnonzero(np.asarray(getattr(est, "is_categorical_", None) if
                                            getattr(est, "is_categorical_", None) is not None else []))
    if len(categorical):
        known, f_idx = est._bin_mapper.make_known_categories_bitsets()
        cols = []
        for j in range(m.width):
            col = g.op("Gather", [x, g.const(np.array([j]), "col", np.int64)], "f", axis=1)
            if j in set(categorical.tolist()):
                cats = _bits(known[f_idx[j]])
                # <uint8> truncation for values in [0, 256); unknown or negative -> NaN (the missing way)
                col = g.op("LabelEncoder", [g.op("Floor", [col])], "cat", domain="ai.onnx.ml",
                           keys_tensor=g.tensor_attr(cats), values_tensor=g.tensor_attr(cats),
                           default_tensor=g.tensor_attr([float("nan")]))
            cols.append(col)
        x = g.op("Concat", cols, "hgb_in", axis=1)
    for iteration in est._predictors:
        for target, pred in enumerate(iteration):
            nodes = pred.nodes
            members = None
            if np.any(nodes["is_categorical"]):
                members = {int(i): _bits(pred.raw_left_cat_bitsets[nodes["bitset_idx"][i]])
                           for i in np.flatnonzero(nodes["is_categorical"] & ~nodes["is_leaf"].astype(bool))}
            ens.tree(nodes["left"], nodes["right"], nodes["is_leaf"].astype(bool), nodes["feature_idx"],
                     nodes["num_threshold"], nodes["missing_go_to_left"], nodes["value"], target, members)
    raw = ens.node(g, x, k)
    if classifier:
        if link == "LogitLink":  # HalfBinomialLoss.predict_proba: p1 = expit(raw); p0 = 1 - p1
            p = g.op("Sigmoid", [raw], "p1")
            p0 = g.op("Sub", [g.const(np.ones((1, 1)), "one"), p], "p0")
            return g.op("Concat", [p0, p], "proba", axis=1), 2
        if link == "MultinomialLogit":
            return g.op("Softmax", [raw], "proba", axis=-1), k
        raise Unsupported(f"histogram gradient boosting with link {link}")
    if link == "IdentityLink":
        return raw, 1
    if link == "LogLink":
        return g.op("Exp", [raw], "value"), 1
    raise Unsupported(f"histogram gradient boosting with link {link}")


def _hgb_encoded(g: GraphBuilder, pre: Any, m: Matrix) -> Matrix:
    """Histogram gradient boosting's own first step with categorical features: its OrdinalEncoder turns each
    categorical column's values into codes (unknown ones and NaN into NaN), and the categorical columns come
    first, then the numeric ones."""
    parts = []
    width = 0
    for name, trans, mask in pre.transformers_:
        cols = np.flatnonzero(np.asarray(mask, dtype=bool)) if len(mask) else np.array([], dtype=int)
        if isinstance(trans, str) or not len(cols):
            if isinstance(trans, str) and trans != "drop" and len(cols):
                raise Unsupported(f"histogram gradient boosting's preprocessing part {name!r} ({trans})")
            continue
        kind = type(trans).__name__
        for i, j in enumerate(cols):
            col = g.op("Gather", [m.tensor, g.const(np.array([int(j)]), "col", np.int64)], "f", axis=1)
            if kind == "OrdinalEncoder":
                cats = np.asarray(trans.categories_[i])
                if cats.dtype.kind not in "fiu":
                    raise Unsupported("histogram gradient boosting on text categories it encodes itself")
                known = [float(c) for c in cats if c == c]  # NaN is never matched: it stays missing
                codes = [float(k) for k, c in enumerate(cats) if c == c]
                col = g.op("LabelEncoder", [col], "code", domain="ai.onnx.ml", keys_tensor=g.tensor_attr(known),
                           values_tensor=g.tensor_attr(codes), default_tensor=g.tensor_attr([float("nan")]))
            elif kind != "FunctionTransformer":
                raise Unsupported(f"histogram gradient boosting's preprocessing step {kind}")
            parts.append(col)
            width += 1
    if not parts:
        raise Unsupported("histogram gradient boosting's preprocessing keeps no column")
    return Matrix(g.op("Concat", parts, "hgb_encoded", axis=1), width)


def tree_model(g: GraphBuilder, est: Any, m: Matrix, classifier: bool) -> tuple[str, int] | None:
    """A tree model's output (probabilities ``[N, k]`` or values ``[N, 1]``), or None for another model."""
    name = type(est).__name__
    if name in _HGB:
        return _hgb(g, est, m, classifier)
    if name in (_FOREST_CLASSIFIERS if classifier else _FOREST_REGRESSORS):
        return _forest(g, est, m, classifier)
    return None
