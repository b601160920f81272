"""ONNX export: kept only when exact on held-out rows fed as the server feeds them (float32, strings)."""

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
    assert info["exact"] is True and info["file"] == "model.onnx"
    # held-out rows, then two extreme rows per number, then unseen and missing values per column
    assert info["max_abs_diff"] <= 1e-5 and info["rows_checked"] > 100 + 2 * 2
    assert info["inputs"] == {"plan": "string", "usage": "float", "seats": "float"}
    assert info["categories"] == {"plan": ["free", "pro", "team"]}
    lo, hi = info["ranges"]["usage"]
    assert lo < df.usage[200:].min() and hi > df.usage[200:].max() * 5
    session = onnx_session((tmp_path / "model.onnx").read_bytes())
    rows = df[200:]
    feeds = onnx_feeds({c: rows[c].tolist() for c in SCHEMA}, info["inputs"])
    assert feeds["usage"].dtype == np.float32 and feeds["plan"].shape == (100, 1)
    proba = session.run(["probabilities"], feeds)[0]
    np.testing.assert_allclose(proba, pipe.predict_proba(rows), atol=1e-6)


def near_tie_data(n=300):
    """Rows whose label hangs on usage differences of 1e-9, below float32 resolution at these values."""
    df, _ = _data(n)
    odd = np.arange(n) % 2 == 1
    df["usage"] = np.round(df.usage, 0) + np.where(odd, 1e-9, 0.0)
    return df, pd.Series(np.where(odd, "yes", "no"))


def test_histogram_gradient_boosting_is_not_exact_and_not_written(tmp_path):
    df, y = near_tie_data()
    pipe = _pipe(HistGradientBoostingClassifier(max_iter=40, random_state=0)).fit(df, y)
    info = export_onnx(pipe, df, tmp_path / "model.onnx", input_schema=SCHEMA)
    assert info["exact"] is False and info["file"] is None
    assert not (tmp_path / "model.onnx").exists()
    assert info["max_abs_diff"] > 1e-5
    assert "exceeds" in info["reason"]


def test_existing_file_is_removed_when_not_exact(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"stale")
    df, y = near_tie_data()
    pipe = _pipe(HistGradientBoostingClassifier(max_iter=20, random_state=0)).fit(df, y)
    assert export_onnx(pipe, df, tmp_path / "model.onnx", input_schema=SCHEMA)["exact"] is False
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


def test_domain_sends_unseen_categories_missing_and_extreme_numbers_to_scikit_learn(tmp_path):
    """The server's route (OnnxDomain) never gives the graph what the export did not check exact: a new
    plan, a leading space, numbers beyond the checked range."""
    from skiff.onnx_export import OnnxDomain

    df, y = _data()
    pipe = _pipe(LogisticRegression()).fit(df, y)
    info = export_onnx(pipe, df[:50], tmp_path / "model.onnx", input_schema=SCHEMA)
    domain = OnnxDomain(info["inputs"], info)
    row = {"plan": ["pro"], "usage": [3.0], "seats": [4]}
    assert domain.admits(row)
    for bad in ({"plan": ["enterprise"]}, {"plan": [" pro"]}, {"usage": [1e30]}, {"seats": [-10**9]}):
        assert not domain.admits({**row, **bad}), bad



def test_pipeline_with_skiff_frame_preparer_exports_after_it(tmp_path):
    features = pytest.importorskip("components.train.features")
    df, y = _data()
    df["annual"] = df.seats > 10
    prep = features.FramePreparer(numeric=["usage", "seats"], categorical=["plan", "annual"])
    ct = ColumnTransformer([("oh", OneHotEncoder(handle_unknown="ignore"), ["plan", "annual"]),
                            ("sc", StandardScaler(), ["usage", "seats"])])
    pipe = Pipeline([("prep", prep), ("ct", ct), ("est", LogisticRegression())]).fit(df[:200], y[:200])
    info = export_onnx(pipe, df[200:], tmp_path / "model.onnx",
                       input_schema={**SCHEMA, "annual": "boolean"})
    assert info["exact"] is True, info["reason"]
    assert info["inputs"] == {"usage": "float", "seats": "float", "plan": "string", "annual": "string"}
    session = onnx_session((tmp_path / "model.onnx").read_bytes())
    rows = df[200:]
    feeds = onnx_feeds({c: rows[c].tolist() for c in info["inputs"]}, info["inputs"])
    assert feeds["annual"][0, 0] in ("True", "False")  # booleans fed as the preparer writes them
    np.testing.assert_allclose(session.run(["probabilities"], feeds)[0], pipe.predict_proba(rows), atol=1e-6)
