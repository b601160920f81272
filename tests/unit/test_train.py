"""Training: split, cross-validation, search, threshold tuning, resampling, and errors before any fit."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline

from components.train.logic import (
    build_pipeline,
    split,
    train,
)
from components.train.preparation import FramePreparer
from skiff.errors import InputError, UsageError
from skiff.metrics import CLASSIFICATION_METRICS, MULTICLASS_METRICS, best_threshold
from skiff.modeling import load_model, save_model
from skiff.spec import parse_spec


def _spec(problem="binary", target_type="boolean", extra_columns=None, **kw):
    columns = {
        "id": {"type": "string"},
        "x0": {"type": "float"},
        "x1": {"type": "float"},
        "x2": {"type": "float"},
        "x3": {"type": "integer"},
        "color": {"type": "category"},
        "y": {"type": target_type},
        **(extra_columns or {}),
    }
    return parse_spec(
        {"name": "t", "entity_key": "id", "target": "y", "problem_type": problem, "columns": columns, **kw}
    )


def _frame(n=400, weights=(0.5, 0.5), seed=0, sep=1.0, n_classes=2):
    X, y = make_classification(
        n_samples=n,
        n_features=4,
        n_informative=3,
        n_redundant=0,
        n_classes=n_classes,
        n_clusters_per_class=1,
        weights=list(weights),
        class_sep=sep,
        flip_y=0.02,
        random_state=seed,
    )
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(n)],
            "x0": X[:, 0],
            "x1": X[:, 1],
            "x2": X[:, 2],
            "x3": pd.array(np.round(X[:, 3] * 3).astype(int), dtype="Int64"),
            "color": rng.choice(["red", "green", "blue"], size=n),
        }
    )
    df["y"] = pd.array(y.astype(bool), dtype="boolean") if n_classes == 2 else y
    return df


@pytest.fixture
def no_fit(monkeypatch):
    """Fail the test if any pipeline (sklearn or imblearn) is fitted."""

    def boom(self, *a, **k):
        raise AssertionError("a pipeline was fitted although the input was invalid")

    monkeypatch.setattr(Pipeline, "fit", boom)


# ---------------------------------------------------------------------------------------------- split


def test_split_is_stratified_and_keeps_a_rare_class_on_both_sides():
    spec = _spec("multiclass", "category")
    n = {"a": 600, "b": 300, "c": 5}
    df = pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(sum(n.values()))],
            "x0": 0.0,
            "x1": 0.0,
            "x2": 0.0,
            "x3": 1,
            "color": "red",
            "y": [k for k, v in n.items() for _ in range(v)],
        }
    )
    train_df, test_df = split(df, spec, test_size=0.2, seed=3)
    assert set(train_df["id"]).isdisjoint(test_df["id"])
    assert len(train_df) + len(test_df) == len(df)
    assert len(test_df) == pytest.approx(0.2 * len(df), abs=3)
    whole = df["y"].value_counts(normalize=True)
    for part in (train_df, test_df):
        share = part["y"].value_counts(normalize=True)
        assert abs(share["a"] - whole["a"]) < 0.01 and abs(share["b"] - whole["b"]) < 0.01
    assert (train_df["y"] == "c").sum() >= 1 and (test_df["y"] == "c").sum() >= 1
    # the rows are not left sorted by class
    assert train_df["y"].iloc[:50].nunique() > 1


def test_split_rejects_a_class_with_one_row():
    spec = _spec("multiclass", "category")
    df = _frame(60)
    df["y"] = ["a"] * 30 + ["b"] * 29 + ["lonely"]
    with pytest.raises(InputError, match="lonely"):
        split(df, spec, 0.2, 0)


def test_split_regression_is_plain_and_reproducible():
    spec = _spec("regression", "float")
    df = _frame(100)
    df["y"] = np.arange(100.0)
    a_train, a_test = split(df, spec, 0.25, 7)
    b_train, b_test = split(df, spec, 0.25, 7)
    assert len(a_test) == 25 and list(a_test["id"]) == list(b_test["id"])
    assert set(a_train["id"]) | set(a_test["id"]) == set(df["id"])


# ------------------------------------------------------------------------------------------------- CV


def test_cv_table_has_each_fold_and_mean_and_std():
    spec = _spec()
    result = train(_frame(300), spec, {"estimator": "logistic_regression", "cv_folds": 4})
    table = result.cv_table
    assert list(table["fold"]) == ["1", "2", "3", "4", "mean", "std"]
    assert set(CLASSIFICATION_METRICS) <= set(table.columns)
    folds = table[table["fold"].isin(["1", "2", "3", "4"])]
    for m in CLASSIFICATION_METRICS:
        assert table.loc[table["fold"] == "mean", m].item() == pytest.approx(folds[m].mean())
        assert table.loc[table["fold"] == "std", m].item() == pytest.approx(folds[m].std(ddof=1))
    # the folds cover the training split exactly once
    assert folds["n_test"].sum() == len(result.train_df) == 240
    assert result.cv_score == pytest.approx(folds["roc_auc"].mean())
    assert result.cv_means["roc_auc"] > 0.8


def test_multiclass_reports_macro_metrics_and_no_threshold():
    spec = _spec("multiclass", "integer")
    df = _frame(450, weights=(0.4, 0.35, 0.25), n_classes=3)
    result = train(df, spec, {"estimator": "logistic_regression", "cv_folds": 3})
    assert set(MULTICLASS_METRICS) <= set(result.cv_table.columns)
    assert result.threshold is None and result.classes == [0, 1, 2]
    assert result.scoring == "f1_macro"
    proba = result.pipeline.predict_proba(result.X_test)
    assert proba.shape == (len(result.test_df), 3)


# ------------------------------------------------------------------------------------------ threshold


def test_best_threshold_matches_a_brute_force_search():
    rng = np.random.default_rng(1)
    truth = rng.random(200) < 0.2
    proba = np.clip(rng.normal(0.3 + 0.3 * truth, 0.2), 0, 1)
    t, value = best_threshold(truth, proba, "f1")
    brute = max(f1_score(truth, proba >= c) for c in np.unique(proba))
    assert value == pytest.approx(brute)
    assert f1_score(truth, proba >= t) == pytest.approx(brute)


def test_threshold_tuning_beats_half_on_an_imbalanced_set():
    spec = _spec()
    rng = np.random.default_rng(4)
    df = _frame(1500)
    y = rng.random(1500) < 0.1  # overlapping classes: at 0.5 the minority is mostly missed
    df["x0"] = 1.2 * y + rng.normal(0, 1, 1500)
    df["x1"] = 0.8 * y + rng.normal(0, 1, 1500)
    df["y"] = pd.array(y, dtype="boolean")
    result = train(df, spec, {"estimator": "logistic_regression", "cv_folds": 3})
    assert result.threshold is not None and result.threshold < 0.5
    assert result.threshold_detail["oof_f1"] > result.threshold_detail["oof_f1_at_0.5"]
    proba = result.pipeline.predict_proba(result.X_test)[:, list(result.pipeline.classes_).index(True)]
    truth = result.test_df["y"].astype(bool).to_numpy()
    assert f1_score(truth, proba >= result.threshold) > f1_score(truth, proba >= 0.5) + 0.05


def test_threshold_tuning_can_be_turned_off():
    result = train(_frame(200), _spec(), {"estimator": "logistic_regression", "threshold_metric": None})
    assert result.threshold == 0.5 and result.threshold_detail == {}


# ------------------------------------------------------------------------------------------ imbalance


def test_smote_resamples_inside_the_training_folds_only():
    spec = _spec()
    df = _frame(600, weights=(0.9, 0.1), seed=2)
    cfg = {"estimator": "logistic_regression", "cv_folds": 4, "imbalance": {"resample": "smote"}}
    result = train(df, spec, cfg)
    steps = dict(result.pipeline.steps)
    assert type(steps["resample"]).__name__ == "SMOTE"
    assert list(steps)[-2:] == ["resample", "model"]
    # the refit oversampled the minority class of the training split ...
    y_train = result.train_df["y"].astype(bool).to_numpy()
    generated = steps["resample"].sampling_strategy_[True]
    assert generated == (~y_train).sum() - y_train.sum() > 0
    # ... while every evaluated fold holds exactly the original rows of that fold
    X = result.train_df[result.feature_columns]
    expected = [len(te) for _, te in StratifiedKFold(4, shuffle=True, random_state=0).split(X, y_train)]
    assert list(result.cv_table["n_test"].iloc[:4]) == expected
    assert sum(expected) == len(result.train_df)
    # and predicting never resamples
    assert len(result.pipeline.predict_proba(result.X_test)) == len(result.test_df)


def test_class_weight_and_undersampling_reach_the_estimator():
    spec = _spec()
    df = _frame(400, weights=(0.85, 0.15))
    r = train(
        df,
        spec,
        {
            "estimator": "random_forest",
            "params": {"n_estimators": 20},
            "imbalance": {"class_weight": "balanced", "resample": "undersample"},
            "cv_folds": 3,
        },
    )
    assert r.pipeline.named_steps["model"].class_weight == "balanced"
    assert type(r.pipeline.named_steps["resample"]).__name__ == "RandomUnderSampler"
    assert r.params == {"n_estimators": 20, "class_weight": "balanced"}


# --------------------------------------------------------------------------------------------- search


def test_grid_search_returns_the_best_of_the_declared_space():
    spec = _spec()
    grid = [0.0005, 0.05, 5.0]
    cfg = {
        "estimator": "logistic_regression",
        "cv_folds": 3,
        "search": {"method": "grid", "space": {"C": grid}},
    }
    result = train(_frame(300, sep=0.7), spec, cfg)
    table = result.search_table
    assert len(table) == 3
    assert sorted(float(json.loads(p)["C"]) for p in table["params"]) == sorted(grid)
    best_row = table.loc[table["mean_roc_auc"].idxmax()]
    assert best_row["rank"] == 1
    assert result.params["C"] == json.loads(best_row["params"])["C"]
    assert result.params["C"] == result.pipeline.named_steps["model"].C
    assert result.cv_score == pytest.approx(table["mean_roc_auc"].max())


@pytest.mark.parametrize("method", ["random", "optuna"])
def test_random_and_optuna_search_draw_from_the_ranges(method):
    spec = _spec()
    cfg = {
        "estimator": "logistic_regression",
        "cv_folds": 3,
        "search": {
            "method": method,
            "n_iter": 4,
            "space": {"C": {"low": 0.001, "high": 10, "log": True}, "fit_intercept": [True, False]},
        },
    }
    result = train(_frame(240), spec, cfg)
    table = result.search_table
    assert len(table) == 4
    cs = [json.loads(p)["C"] for p in table["params"]]
    assert all(0.001 <= c <= 10 for c in cs) and len(set(cs)) == 4
    assert result.cv_score == pytest.approx(table["mean_roc_auc"].max())


def test_regression_search_minimises_rmse():
    spec = _spec("regression", "float")
    df = _frame(200)
    df["y"] = 3 * df["x0"] - df["x1"] + np.random.default_rng(0).normal(0, 0.5, len(df))
    cfg = {
        "estimator": "ridge",
        "cv_folds": 3,
        "search": {"method": "grid", "space": {"alpha": [0.01, 1000.0]}},
    }
    result = train(df, spec, cfg)
    assert result.params["alpha"] == 0.01
    assert result.search_table.set_index("rank").loc[1, "mean_rmse"] == result.search_table["mean_rmse"].min()
    assert result.cv_means["r2"] > 0.9 and result.threshold is None


def test_auto_choice_compares_a_linear_and_a_boosted_model():
    result = train(_frame(300), _spec(), {"cv_folds": 3})
    table = result.search_table
    assert list(table["estimator"]) == ["logistic_regression", "hist_gradient_boosting"]
    assert result.estimator == table.loc[table["mean_roc_auc"].idxmax(), "estimator"]


# ---------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("mutate", "config", "error", "message"),
    [
        (lambda df: df.drop(columns="y"), {}, InputError, "target column 'y' is not in the data"),
        (lambda df: df.assign(y=True), {}, InputError, "single class"),
        (lambda df: df.head(20), {"cv_folds": 10}, InputError, "10-fold CV needs at least 10"),
        (lambda df: df.drop(columns="x1"), {}, InputError, "x1"),
        (None, {"estimator": "xgboost"}, UsageError, "unknown estimator 'xgboost'.*hist_gradient_boosting"),
        (
            None,
            {"estimator": "logistic_regression", "params": {"depth": 3}},
            UsageError,
            "unknown parameter.*'depth'.*valid: C, class_weight",
        ),
        (None, {"estimator": "logistic_regression", "params": {"C": -1}}, UsageError, "'C' parameter"),
        (None, {"estimatr": "ridge"}, UsageError, "estimatr"),
        (
            None,
            {"search": {"method": "grid", "space": {"C": [1.0]}}},
            UsageError,
            "needs a named 'estimator'",
        ),
        (
            None,
            {
                "estimator": "logistic_regression",
                "search": {"method": "grid", "space": {"C": {"low": 1, "high": 2}}},
            },
            UsageError,
            "grid search takes lists",
        ),
        (
            None,
            {"estimator": "logistic_regression", "search": {"method": "random", "space": {"max_depth": [2]}}},
            UsageError,
            "'max_depth'",
        ),
        (None, {"scoring": "rmse"}, UsageError, "unknown scoring metric 'rmse'"),
        (None, {"threshold_metric": "precision"}, UsageError, "threshold_metric"),
    ],
)
def test_bad_input_fails_before_anything_is_fitted(no_fit, mutate, config, error, message):
    df = _frame(100)
    if mutate is not None:
        df = mutate(df)
    with pytest.raises(error, match=message):
        train(df, _spec(), config)


def test_regression_target_that_is_not_numeric_is_an_input_error(no_fit):
    df = _frame(50)
    df["y"] = ["12.5"] * 49 + ["lots"]
    with pytest.raises(InputError, match="not numeric.*'lots'"):
        train(df, _spec("regression", "float"), {})


def test_imbalance_settings_on_a_regression_are_a_usage_error(no_fit):
    df = _frame(50)
    df["y"] = np.arange(50.0)
    with pytest.raises(UsageError, match="classification"):
        train(df, _spec("regression", "float"), {"imbalance": {"class_weight": "balanced"}})


# ------------------------------------------------------------------------------------------- features


def test_pipeline_takes_nullable_dtypes_datetimes_and_unseen_categories():
    spec = _spec(extra_columns={"flag": {"type": "boolean"}, "seen": {"type": "datetime"}})
    df = _frame(200)
    rng = np.random.default_rng(0)
    df["flag"] = pd.array(rng.random(200) < 0.5, dtype="boolean")
    df.loc[::7, "flag"] = pd.NA
    df.loc[::5, "x3"] = pd.NA
    df["color"] = df["color"].astype("string")
    df.loc[::9, "color"] = pd.NA
    df["seen"] = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 400, 200), unit="D")
    result = train(df, spec, {"estimator": "logistic_regression", "cv_folds": 3})
    assert result.datetime_columns == ["seen"] and "flag" in result.categorical_columns
    new = result.X_test.head(3).copy()
    new["color"] = ["purple", None, "red"]  # an unseen and a missing category
    new["x3"] = ["7", None, 2]  # numbers as text, as a request may carry them
    proba = result.pipeline.predict_proba(new)
    assert proba.shape == (3, 2) and np.allclose(proba.sum(axis=1), 1)
    names = list(result.pipeline.named_steps["prepare"].get_feature_names_out())
    assert "seen__month" in names and "seen" not in names


def test_a_missing_feature_at_prediction_time_names_the_column():
    result = train(_frame(120), _spec(), {"estimator": "logistic_regression", "cv_folds": 3})
    with pytest.raises(InputError, match="x2"):
        result.pipeline.predict_proba(result.X_test.drop(columns="x2"))
    with pytest.raises(InputError, match="DataFrame"):
        FramePreparer(numeric=["x0"]).fit(np.zeros((2, 1)))


def test_optional_pca_and_feature_selection_steps():
    pipe = build_pipeline(_spec(), {"pca": 0.9, "feature_selection": 2, "estimator": "random_forest"})
    assert [name for name, _ in pipe.steps] == ["prepare", "preprocess", "pca", "select", "model"]
    result = train(
        _frame(200),
        _spec(),
        {"estimator": "logistic_regression", "pca": 3, "feature_selection": 2, "cv_folds": 3},
    )
    assert result.pipeline.named_steps["pca"].n_components_ == 3
    assert result.pipeline.named_steps["select"].get_support().sum() == 2


def test_saved_model_loads_and_predicts_the_same(tmp_path):
    result = train(_frame(150), _spec(), {"estimator": "logistic_regression", "cv_folds": 3})
    files = save_model(tmp_path / "m", result.pipeline, result.metadata(), result.cv_table, result.search_table)
    pipeline, info, cv = load_model(tmp_path / "m")
    assert set(files) == {"model", "info", "cv"}
    assert np.allclose(pipeline.predict_proba(result.X_test), result.pipeline.predict_proba(result.X_test))
    assert info["estimator"] == "logistic_regression" and info["threshold"] == pytest.approx(result.threshold)
    assert info["positive_class"] is True and info["n_train"] == len(result.train_df)
    assert list(cv["fold"]) == ["1", "2", "3", "mean", "std"]
    with pytest.raises(InputError, match="model.joblib"):
        load_model(tmp_path / "nothing")


def test_derived_features_present_in_the_data_become_inputs():
    spec = _spec(
        derived=[{"name": "ratio", "expr": "x0 / (x1 * x1 + 1)"}, {"name": "absent", "expr": "x2 * 2"}]
    )
    df = _frame(150)
    df["ratio"] = df["x0"] / (df["x1"] ** 2 + 1)
    result = train(df, spec, {"estimator": "logistic_regression", "cv_folds": 3})
    assert "ratio" in result.feature_columns and "ratio" in result.numeric_columns
    assert "absent" not in result.feature_columns
    with pytest.raises(InputError, match="ratio"):
        result.pipeline.predict_proba(result.X_test.drop(columns="ratio"))


def test_integers_that_arrive_as_json_floats_are_integers_again():
    """Pipeline parameters travel as JSON (Struct), so 50 arrives as 50.0; max_features=1.0 stays a float."""
    cfg = {
        "estimator": "random_forest",
        "cv_folds": 3.0,
        "pca": 3.0,
        "params": {"n_estimators": 10.0, "max_features": 1.0},
        "search": {"method": "random", "n_iter": 2.0, "space": {"max_depth": {"low": 2.0, "high": 4.0}}},
    }
    result = train(_frame(120), _spec(), cfg)
    model = result.pipeline.named_steps["model"]
    assert model.n_estimators == 10 and isinstance(model.n_estimators, int)
    assert model.max_features == 1.0 and isinstance(model.max_features, float)
    assert isinstance(model.max_depth, int) and 2 <= model.max_depth <= 4
    assert result.pipeline.named_steps["pca"].n_components == 3
    assert cfg["params"]["n_estimators"] == 10.0  # the caller's mapping is left as it was


def test_model_inputs_follow_the_spec_order_whatever_the_data_order():
    from skiff.datagen import churn
    from skiff.spec import load_spec
    from tests.conftest import REPO

    spec = load_spec(REPO / "examples" / "churn.yaml")
    df = churn(n=400, seed=2)
    shuffled = df[list(reversed(df.columns))]
    result = train(shuffled, spec, {"estimator": "logistic_regression", "cv_folds": 3, "threshold_metric": None})
    assert result.feature_columns == spec.feature_columns
