"""skiff's double-precision compiler on tree models: the graph answers as scikit-learn does, on values at
split thresholds, missing values, native categories (unknown and negative ones included) and extremes."""

import numpy as np
import pytest
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)

from skiff.compiled import Unsupported, compile_pipeline
from skiff.onnx_export import onnx_session


def _data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    X = np.column_stack([rng.normal(size=n), rng.gamma(2, 3, n), rng.integers(0, 5, n).astype(float)])
    return X, rng


def _run(est, X, classifier):
    kinds = {f"x{j}": "double" for j in range(X.shape[1])}
    compiled = compile_pipeline(est, kinds, classifier)
    session = onnx_session(compiled.payload)
    out = session.run([compiled.output], {f"x{j}": X[:, j:j + 1].astype(np.float64) for j in range(X.shape[1])})[0]
    return out if classifier else out.reshape(-1)


def _probes(est, X):
    """Held-out-like rows, every threshold and its float64/float32 neighbours, NaN and extremes."""
    rows = [X]
    thresholds = []
    for tree in getattr(est, "estimators_", []):
        tr = tree.tree_
        thresholds += [(f, t) for f, t in zip(tr.feature, tr.threshold, strict=True) if f >= 0]
    for it in getattr(est, "_predictors", []):
        for pred in it:
            n = pred.nodes
            thresholds += [(int(f), float(t)) for f, t, leaf in zip(n["feature_idx"], n["num_threshold"],
                                                                   n["is_leaf"], strict=True) if not leaf]
    for f, t in [(f, t) for f, t in thresholds if np.isfinite(t)][:400]:
        for v in (t, np.nextafter(t, np.inf), np.nextafter(t, -np.inf), float(np.float32(t)),
                  float(np.nextafter(np.float32(t), np.float32(np.inf)))):
            row = X[:1].copy()
            row[0, f] = v
            rows.append(row)
    for v in (np.nan, 1e30, -1e30, 1e-300, 0.0):
        for f in range(X.shape[1]):
            row = X[:1].copy()
            row[0, f] = v
            rows.append(row)
    return np.vstack(rows)


@pytest.mark.parametrize("est", [RandomForestClassifier(n_estimators=15, min_samples_leaf=2, random_state=0),
                                 HistGradientBoostingClassifier(max_iter=30, random_state=0)])
@pytest.mark.parametrize("classes", [2, 3])
def test_classifiers_match_predict_proba(est, classes):
    X, rng = _data()
    y = np.digitize(X[:, 0] + rng.normal(0, 0.3, len(X)), [-0.3, 0.4][: classes - 1])
    X[rng.random(len(X)) < 0.1, 1] = np.nan  # both models learn where missing values go
    est.fit(X, y)
    probes = _probes(est, X)
    np.testing.assert_allclose(_run(est, probes, True), est.predict_proba(probes), rtol=0, atol=1e-12)


@pytest.mark.parametrize("est", [RandomForestRegressor(n_estimators=15, random_state=0),
                                 HistGradientBoostingRegressor(max_iter=40, random_state=0),
                                 HistGradientBoostingRegressor(loss="poisson", max_iter=20, random_state=0)])
def test_regressors_match_predict(est):
    X, rng = _data()
    y = np.exp(X[:, 0]) * 100 + X[:, 1] * 10 + rng.normal(0, 1, len(X)) + 50
    X[rng.random(len(X)) < 0.1, 2] = np.nan
    est.fit(X, y)
    probes = _probes(est, X)
    expected = est.predict(probes)
    np.testing.assert_allclose(_run(est, probes, False), expected, rtol=1e-12, atol=0)


def test_hgb_native_categories_unknown_and_negative_go_the_missing_way():
    X, rng = _data()
    y = ((X[:, 2] == 1) | (X[:, 2] == 3)) ^ (X[:, 0] > 1)
    est = HistGradientBoostingClassifier(max_iter=20, categorical_features=[2], random_state=0).fit(X, y)
    probes = _probes(est, X)
    odd = X[:8].copy()
    odd[:, 2] = [7.0, -1.0, 2.7, np.nan, 0.0, 4.0, 200.0, -0.5]  # unknown, negative, fractional, missing
    probes = np.vstack([probes, odd])
    np.testing.assert_allclose(_run(est, probes, True), est.predict_proba(probes), rtol=0, atol=1e-12)


def test_unsupported_model_is_named():
    from sklearn.neighbors import KNeighborsClassifier

    X, _ = _data(50)
    est = KNeighborsClassifier(3).fit(X, X[:, 0] > 0)
    with pytest.raises(Unsupported, match="KNeighborsClassifier"):
        compile_pipeline(est, {"x0": "double", "x1": "double", "x2": "double"}, True)
