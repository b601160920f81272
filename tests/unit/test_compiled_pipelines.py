"""Every estimator skiff's training can choose, with the preprocessing it builds (frame preparer, median
imputation, scaling, most-frequent imputation, one-hot with infrequent categories, PCA, selection), is
registered with an exact compiled graph — rows with missing values and unseen categories included."""

import numpy as np
import pytest

from components.train.logic import build_pipeline
from skiff import datagen
from skiff.onnx_export import OnnxDomain, export_onnx, onnx_feeds, onnx_session
from skiff.spec import load_spec
from tests.conftest import REPO

CASES = [("churn", est, cfg) for est in ("logistic_regression", "random_forest", "hist_gradient_boosting")
         for cfg in ({}, {"pca": 4})] + \
        [("housing", est, cfg) for est in ("ridge", "random_forest", "hist_gradient_boosting")
         for cfg in ({}, {"feature_selection": 5})] + \
        [("churn", "random_forest", {"imbalance": {"resample": "smote"}})]


def _world(name, n=900):
    spec = load_spec(REPO / "examples" / f"{name}.yaml")
    df = getattr(datagen, name)(n, seed=3)
    features = [c for c in spec.feature_columns if c in df.columns]
    X = df[features].copy()
    rng = np.random.default_rng(0)
    for c in features:  # one value in eight missing, in every column
        X.loc[rng.random(len(X)) < 0.125, c] = None
    return spec, X, df[spec.target], features


@pytest.mark.parametrize(("dataset", "estimator", "config"), CASES)
def test_pipeline_is_exact_with_missing_values_on_the_graph(tmp_path, dataset, estimator, config):
    spec, X, y, features = _world(dataset)
    pipe = build_pipeline(spec, {**config, "max_categories": 3}, estimator=estimator, columns=features)
    if estimator == "random_forest":
        pipe.set_params(model__n_estimators=20)
    pipe.fit(X[:700], y[:700])
    schema = {f: spec.columns[f].type for f in features}
    info = export_onnx(pipe, X[700:], tmp_path / "model.onnx", features=features, input_schema=schema,
                       reference=X[:700])
    assert info["exact"] is True and info["compiler"] == "skiff-onnx-double", info["reason"]
    assert info["max_abs_diff"] <= 1e-6 and info["checks"]["missing"] > 0 and info["checks"]["extreme"] > 0
    assert set(info["missing"]) == set(features)  # the pipeline imputes every column: the graph answers all
    if estimator not in ("logistic_regression", "ridge") and "pca" not in config:
        assert info["checks"]["boundary"] > 0  # thresholds mapped back through imputation and scaling
    # the server's route: every held-out row (each with a good chance of a missing value) runs on the graph
    rows = X[700:]
    domain = OnnxDomain(info["inputs"], info)
    prep = pipe[0]
    ready = prep.transform(rows)
    columns = {c: [None if (v is None or v != v or v == info["missing_text"]) else v for v in ready[c].tolist()]
               for c in info["inputs"]}
    assert any(v is None for vs in columns.values() for v in vs) and domain.admits(columns)
    session = onnx_session((tmp_path / "model.onnx").read_bytes())
    out = session.run([info["output"]], onnx_feeds(columns, info["inputs"], info["missing_text"]))[0]
    if spec.problem_type == "regression":
        expected = pipe.predict(rows)
        np.testing.assert_allclose(out.reshape(-1), expected, rtol=1e-9)
    else:
        np.testing.assert_allclose(out, pipe.predict_proba(rows), atol=1e-9, rtol=0)


def test_compiled_engine_answers_rows_with_missing_values_itself(tmp_path):
    """The server's compiled engine scores a request with missing values and an unseen category on the
    graph (scikit-learn is never asked), with the pipeline's probabilities."""
    from serving.runtime.compiled import CompiledRuntime
    from serving.runtime.inputs import InputSchema, RequestRows
    from serving.runtime.predictor import SklearnRuntime

    spec, X, y, features = _world("churn", 600)
    pipe = build_pipeline(spec, {}, estimator="hist_gradient_boosting", columns=features).fit(X[:500], y[:500])
    schema = {f: spec.columns[f].type for f in features}
    info = export_onnx(pipe, X[500:], tmp_path / "model.onnx", features=features, input_schema=schema)
    assert info["exact"], info["reason"]

    class NoFallback(SklearnRuntime):
        def score(self, batch):
            raise AssertionError("the graph should have answered")

    runtime = CompiledRuntime((tmp_path / "model.onnx").read_bytes(), dict(info),
                              NoFallback(pipe, InputSchema.build(features, schema), True), 1)
    rows = X[500:510].astype(object).where(X[500:510].notna(), None)
    rows.iloc[0, rows.columns.get_loc("Contract")] = "Decade-long"
    columns = {f: [v.item() if hasattr(v, "item") else v for v in rows[f]] for f in features}
    assert any(v is None for vs in columns.values() for v in vs)
    scores = runtime.score(RequestRows(columns, len(rows), True))
    np.testing.assert_allclose(scores.probabilities(), pipe.predict_proba(rows), atol=1e-9, rtol=0)


def test_version_records_what_serves_it():
    from components.register.logic import serving_engine

    assert serving_engine({"exact": True, "compiler": "skiff-onnx-double", "reason": "max difference 0"}) == \
        {"engine": "onnxruntime", "compiler": "skiff-onnx-double", "reason": "max difference 0"}
    assert serving_engine({"exact": False, "compiler": "skl2onnx", "reason": "exceeds 1e-06"}) == \
        {"engine": "sklearn", "compiler": None, "reason": "exceeds 1e-06"}


def test_datetime_features_run_on_the_graph_from_iso_text(tmp_path):
    """A datetime feature's calendar parts (UTC year, month, day of week) are computed from the request's
    ISO text, offsets included, as the frame preparer computes them; a missing one goes to scikit-learn."""
    import pandas as pd

    from skiff.spec import parse_spec

    rng = np.random.default_rng(0)
    n = 500
    df = pd.DataFrame({"x": rng.normal(size=n), "site": rng.choice(["a", "b"], n),
                       "at": pd.to_datetime("2024-01-01", utc=True) + pd.to_timedelta(rng.integers(0, 800, n), unit="D")
                       + pd.to_timedelta(rng.integers(0, 86400, n), unit="s")})
    y = df.x + (df["at"].dt.month > 6) > 0.5
    spec = parse_spec({"name": "d", "entity_key": "k", "target": "y", "problem_type": "binary",
                       "columns": {"k": {"type": "integer"}, "x": {"type": "float"}, "site": {"type": "category"},
                                   "at": {"type": "datetime"}, "y": {"type": "boolean"}}})
    features = ["x", "site", "at"]
    pipe = build_pipeline(spec, {}, estimator="hist_gradient_boosting", columns=features).fit(df[:400], y[:400])
    info = export_onnx(pipe, df[400:], tmp_path / "model.onnx", features=features,
                       input_schema={"x": "float", "site": "category", "at": "datetime"})
    assert info["exact"] is True and info["inputs"]["at__month"] == "datetime.month", info["reason"]
    rows = df[400:420]
    columns = {"x": rows.x.tolist(), "site": rows.site.tolist(),
               "at": [t.tz_convert("America/New_York").isoformat() for t in rows["at"]]}  # -05:00 / -04:00
    domain = OnnxDomain(info["inputs"], info)
    assert domain.admits(columns) and not domain.admits({**columns, "at": [None] * len(rows)})
    session = onnx_session((tmp_path / "model.onnx").read_bytes())
    out = session.run([info["output"]], onnx_feeds(columns, info["inputs"], info["missing_text"]))[0]
    np.testing.assert_allclose(out, pipe.predict_proba(rows), atol=1e-12, rtol=0)
