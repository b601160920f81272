"""ONNX export: each compiler checked on rows fed as the server feeds them; the fastest exact graph kept."""

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from skiff.onnx_export import export_onnx, onnx_feeds, onnx_session

SCHEMA = {"plan": "category", "usage": "float", "seats": "integer"}


def _data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"plan": rng.choice(["free", "pro", "team"], n), "usage": rng.gamma(2, 3, n),
                       "seats": rng.integers(1, 20, n)})
    y = (df.usage / 3 + (df.plan == "pro") * 2 + rng.normal(0, 1, n) > 3).map({True: "yes", False: "no"})
    return df, y


def _pipe(est):
    ct = ColumnTransformer([("oh", OneHotEncoder(handle_unknown="ignore"), ["plan"]),
                            ("sc", StandardScaler(), ["usage", "seats"])])
    return Pipeline([("ct", ct), ("est", est)])


def test_logistic_pipeline_is_exact_and_written(tmp_path):
    df, y = _data()
    pipe = _pipe(LogisticRegression()).fit(df[:200], y[:200])
    info = export_onnx(pipe, df[200:], tmp_path / "model.onnx", input_schema=SCHEMA)
    assert info["exact"] is True and info["file"] == "model.onnx" and info["engine"] == "onnxruntime"
    # held-out rows, generated ones (fewer than 200 held out), missing, unseen and extreme values
    assert info["max_abs_diff"] <= 1e-6 and info["checks"]["held_out"] == 100 and info["checks"]["generated"] > 100
    assert info["rows_checked"] == sum(info["checks"].values())
    assert info["inputs"] == {"plan": "string", "usage": "double", "seats": "double"}
    assert info["compiler"] == "skiff-onnx-double" and info["output"] == "probabilities"
    assert {c["compiler"] for c in info["candidates"]} == {"skiff-onnx-double", "skl2onnx"}
    assert info["categories"] == {}  # handle_unknown="ignore": unseen plans are answered alike on the graph
    lo, hi = info["ranges"]["usage"]
    assert lo < df.usage[200:].min() and hi > df.usage[200:].max() * 5
    session = onnx_session((tmp_path / "model.onnx").read_bytes())
    rows = df[200:]
    feeds = onnx_feeds({c: rows[c].tolist() for c in SCHEMA}, info["inputs"])
    assert feeds["usage"].dtype == np.float64 and feeds["plan"].shape == (100, 1)
    proba = session.run(["probabilities"], feeds)[0]
    np.testing.assert_allclose(proba, pipe.predict_proba(rows), atol=1e-12)


def test_skl2onnx_graph_is_fed_float32(tmp_path):
    df, y = _data()
    pipe = _pipe(LogisticRegression()).fit(df[:200], y[:200])
    info = export_onnx(pipe, df[200:], tmp_path / "model.onnx", input_schema=SCHEMA, compilers=["skl2onnx"])
    assert info["exact"] is True and info["compiler"] == "skl2onnx" and info["missing"] == []
    assert info["inputs"] == {"plan": "string", "usage": "float", "seats": "float"}
    assert info["categories"] == {"plan": ["free", "pro", "team"]}
    feeds = onnx_feeds({c: df[200:][c].tolist() for c in SCHEMA}, info["inputs"])
    assert feeds["usage"].dtype == np.float32


def near_tie_data(n=300):
    """Rows whose label hangs on usage differences of 1e-9, below float32 resolution at these values."""
    df, _ = _data(n)
    odd = np.arange(n) % 2 == 1
    df["usage"] = np.round(df.usage, 0) + np.where(odd, 1e-9, 0.0)
    return df, pd.Series(np.where(odd, "yes", "no"))


def test_histogram_gradient_boosting_near_ties_are_exact_in_double_only(tmp_path):
    """Labels hanging on 1e-9 differences: the float32 graph (skl2onnx) misses them, the double one does not."""
    df, y = near_tie_data()
    pipe = _pipe(HistGradientBoostingClassifier(max_iter=40, random_state=0)).fit(df, y)
    info = export_onnx(pipe, df, tmp_path / "model.onnx", input_schema=SCHEMA)
    assert info["exact"] is True and info["compiler"] == "skiff-onnx-double", info["reason"]
    assert info["max_abs_diff"] <= 1e-12 and info["checks"]["boundary"] > 0
    by = {c["compiler"]: c for c in info["candidates"]}
    assert by["skl2onnx"]["exact"] is False and by["skl2onnx"]["max_abs_diff"] > 1e-5
    assert "exceeds" in by["skl2onnx"]["reason"] and "skl2onnx: max difference" in info["reason"]


def test_float32_graph_of_near_ties_is_not_exact_and_not_written(tmp_path):
    df, y = near_tie_data()
    pipe = _pipe(HistGradientBoostingClassifier(max_iter=40, random_state=0)).fit(df, y)
    info = export_onnx(pipe, df, tmp_path / "model.onnx", input_schema=SCHEMA, compilers=["skl2onnx"])
    assert info["exact"] is False and info["file"] is None and info["engine"] == "sklearn"
    assert not (tmp_path / "model.onnx").exists()
    assert info["max_abs_diff"] > 1e-5 and "exceeds" in info["reason"]


def test_existing_file_is_removed_when_not_exact(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"stale")
    df, y = near_tie_data()
    pipe = _pipe(HistGradientBoostingClassifier(max_iter=20, random_state=0)).fit(df, y)
    assert export_onnx(pipe, df, tmp_path / "model.onnx", input_schema=SCHEMA, compilers=["skl2onnx"])["exact"] is False
    assert not (tmp_path / "model.onnx").exists()


def test_regression_checked_relative_to_scale(tmp_path):
    df, _ = _data()
    target = df.usage * 1000 + df.seats * 50
    pipe = _pipe(LinearRegression()).fit(df, target)
    info = export_onnx(pipe, df[:50], tmp_path / "model.onnx", input_schema=SCHEMA)
    assert info["exact"] is True and info["compared"].startswith("predict")


def test_unconvertible_model_reports_reason(tmp_path):
    df, y = _data()

    class Odd(LogisticRegression):
        pass

    pipe = _pipe(Odd()).fit(df, y)
    info = export_onnx(pipe, df[:20], tmp_path / "model.onnx", input_schema=SCHEMA)
    assert info["exact"] is False and "conversion failed" in info["reason"]
    assert "skiff-onnx-double: conversion failed: Unsupported: estimator Odd" in info["reason"]


def test_datetime_features_are_not_exported(tmp_path):
    df, y = _data()
    pipe = _pipe(LogisticRegression()).fit(df, y)
    info = export_onnx(pipe, df.assign(at=pd.Timestamp("2026-01-01")), tmp_path / "m.onnx",
                       features=["plan", "usage", "seats", "at"], input_schema={**SCHEMA, "at": "datetime"})
    assert info["exact"] is False and "datetime" in info["reason"]


def test_rows_with_missing_values_are_checked_on_the_servers_route(tmp_path):
    df, y = _data()
    pipe = _pipe(LogisticRegression()).fit(df, y)
    holdout = df[:30].copy()
    holdout.loc[holdout.index[:10], "usage"] = np.nan
    info = export_onnx(pipe, holdout, tmp_path / "model.onnx", input_schema=SCHEMA)
    assert info["exact"] is True and info["rows_checked"] >= 30, info
    # no imputer: the pipeline refuses a missing number, so the graph is never given one
    assert info["missing"] == []


def test_every_held_out_row_missing_a_value_still_gets_checked(tmp_path):
    """The house-price case: no complete held-out row. The check fills a base row and generates rows."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline

    df, _ = _data()
    target = df.usage * 3 + df.seats
    ct = ColumnTransformer([("oh", OneHotEncoder(handle_unknown="ignore"), ["plan"]),
                            ("num", make_pipeline(SimpleImputer(), StandardScaler()), ["usage", "seats"])])
    from sklearn.ensemble import HistGradientBoostingRegressor

    pipe = Pipeline([("ct", ct), ("est", HistGradientBoostingRegressor(max_iter=30))]).fit(df, target)
    holdout = df[:40].copy()
    holdout["usage"] = np.nan
    info = export_onnx(pipe, holdout, tmp_path / "model.onnx", input_schema=SCHEMA, reference=df)
    assert info["exact"] is True, info["reason"]
    assert info["checks"]["generated"] >= 200 - 40 and set(info["missing"]) == {"usage", "seats"}


def test_domain_sends_unseen_categories_missing_and_extreme_numbers_to_scikit_learn(tmp_path):
    """The server's route (OnnxDomain) never gives the float32 graph what the export did not check exact: a
    new plan, a leading space, a missing number."""
    from skiff.onnx_export import OnnxDomain

    df, y = _data()
    pipe = _pipe(LogisticRegression()).fit(df, y)
    info = export_onnx(pipe, df[:50], tmp_path / "model.onnx", input_schema=SCHEMA, compilers=["skl2onnx"])
    domain = OnnxDomain(info["inputs"], info)
    row = {"plan": ["pro"], "usage": [3.0], "seats": [4]}
    assert domain.admits(row)
    for bad in ({"plan": ["enterprise"]}, {"plan": [" pro"]}, {"usage": [None]}):
        assert not domain.admits({**row, **bad}), bad


def test_domain_of_the_double_graph_admits_what_it_checked(tmp_path):
    """The double graph answers unseen plans (handle_unknown="ignore") and extreme numbers alike; a pipeline
    that refuses unseen values (handle_unknown="error") keeps them on scikit-learn."""
    from skiff.onnx_export import OnnxDomain

    df, y = _data()
    pipe = _pipe(LogisticRegression()).fit(df, y)
    info = export_onnx(pipe, df[:50], tmp_path / "model.onnx", input_schema=SCHEMA)
    domain = OnnxDomain(info["inputs"], info)
    row = {"plan": ["pro"], "usage": [3.0], "seats": [4]}
    for fine in ({"plan": ["enterprise"]}, {"usage": [1e30]}, {"seats": [-10**9]}):
        assert domain.admits({**row, **fine}), fine
    strict = Pipeline([("ct", ColumnTransformer([("oh", OneHotEncoder(handle_unknown="error"), ["plan"]),
                                                 ("sc", StandardScaler(), ["usage", "seats"])])),
                       ("est", LogisticRegression())]).fit(df, y)
    info = export_onnx(strict, df[:50], tmp_path / "strict.onnx", input_schema=SCHEMA)
    assert info["exact"] is True and info["categories"] == {"plan": ["free", "pro", "team"]}
    domain = OnnxDomain(info["inputs"], info)
    assert domain.admits(row) and not domain.admits({**row, "plan": ["enterprise"]})



def test_pipeline_with_skiff_frame_preparer_exports_after_it(tmp_path):
    features = pytest.importorskip("components.train.preparation")
    df, y = _data()
    df["annual"] = df.seats > 10
    prep = features.FramePreparer(numeric=["usage", "seats"], categorical=["plan", "annual"])
    ct = ColumnTransformer([("oh", OneHotEncoder(handle_unknown="ignore"), ["plan", "annual"]),
                            ("sc", StandardScaler(), ["usage", "seats"])])
    pipe = Pipeline([("prep", prep), ("ct", ct), ("est", LogisticRegression())]).fit(df[:200], y[:200])
    info = export_onnx(pipe, df[200:], tmp_path / "model.onnx",
                       input_schema={**SCHEMA, "annual": "boolean"})
    assert info["exact"] is True, info["reason"]
    assert info["inputs"] == {"usage": "double", "seats": "double", "plan": "string", "annual": "string"}
    assert info["missing_text"] == "__skiff_missing__"
    session = onnx_session((tmp_path / "model.onnx").read_bytes())
    rows = df[200:]
    feeds = onnx_feeds({c: rows[c].tolist() for c in info["inputs"]}, info["inputs"])
    assert feeds["annual"][0, 0] in ("True", "False")  # booleans fed as the preparer writes them
    np.testing.assert_allclose(session.run(["probabilities"], feeds)[0], pipe.predict_proba(rows), atol=1e-6)
