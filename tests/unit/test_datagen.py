"""Demo data: the churn and housing generators, the raw-export form, and the example specs."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import r2_score, roc_auc_score

from components.train.logic import train
from skiff.datagen import CHURN_COLUMNS, HOUSING_COLUMNS, churn, dirty, housing
from skiff.spec import load_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
IBM_COLUMNS = ["customerID", "gender", "SeniorCitizen", "Partner", "Dependents", "tenure", "PhoneService", "MultipleLines", "InternetService", "OnlineSecurity", "OnlineBackup", "DeviceProtection", "TechSupport", "StreamingTV", "StreamingMovies", "Contract", "PaperlessBilling", "PaymentMethod", "MonthlyCharges", "TotalCharges", "Churn"]


@pytest.fixture(scope="module")
def churn_df():
    return churn()


def test_churn_has_the_ibm_columns_and_a_realistic_churn_rate(churn_df):
    assert list(churn_df.columns) == CHURN_COLUMNS == [*IBM_COLUMNS, "event_timestamp"]
    assert len(churn_df) == 7043 and churn_df["customerID"].is_unique
    assert churn_df["customerID"].str.fullmatch(r"[0-9]{4}-[A-Z]{5}").all()
    assert 0.24 <= churn_df["Churn"].mean() <= 0.29
    assert str(churn_df["event_timestamp"].dtype) == "datetime64[ns, UTC]"
    assert churn_df["Churn"].dtype == "boolean" and churn_df["tenure"].dtype == "Int64"


def test_churn_has_the_causal_structure_of_the_real_data(churn_df):
    rate = churn_df.groupby("Contract")["Churn"].mean()
    assert rate["Month-to-month"] > 2 * rate["One year"] > 2 * rate["Two year"]
    internet = churn_df.groupby("InternetService")["Churn"].mean()
    assert internet["Fiber optic"] > internet["DSL"] > internet["No"]
    pay = churn_df.groupby("PaymentMethod")["Churn"].mean()
    assert pay["Electronic check"] == pay.max()
    short = churn_df["tenure"] < 12
    assert churn_df.loc[short, "Churn"].mean() > churn_df.loc[~short, "Churn"].mean() + 0.15
    tenured = churn_df[churn_df["tenure"] > 0]
    implied = tenured["tenure"].astype(float) * tenured["MonthlyCharges"]
    assert np.corrcoef(implied, tenured["TotalCharges"])[0, 1] > 0.98
    assert (churn_df.loc[churn_df["tenure"] == 0, "TotalCharges"] == 0).all()
    no_net = churn_df["InternetService"] == "No"
    assert (churn_df.loc[no_net, "TechSupport"] == "No internet service").all()


def test_churn_is_reproducible_per_seed():
    pd.testing.assert_frame_equal(churn(300, seed=4), churn(300, seed=4))
    assert not churn(300, seed=4)["tenure"].equals(churn(300, seed=5)["tenure"])


def test_default_training_on_churn_lands_near_the_published_results(churn_df):
    """The IBM telco data gives a ROC-AUC of about 0.84 with a good model; so should this."""
    spec = load_spec(EXAMPLES / "churn.yaml")
    result = train(churn_df, spec)
    p = result.pipeline.predict_proba(result.X_test)[:, list(result.pipeline.classes_).index(True)]
    test_auc = roc_auc_score(result.test_df["Churn"].astype(bool), p)
    assert 0.80 <= result.cv_score <= 0.88
    assert 0.80 <= test_auc <= 0.88
    assert set(result.search_table["estimator"]) == {"logistic_regression", "hist_gradient_boosting"}


def test_dirty_writes_the_table_as_a_raw_export(churn_df):
    raw = dirty(churn_df, seed=1)
    info = raw.attrs["skiff_dirty"]
    assert len(raw) == len(churn_df) + info["duplicates"] and info["duplicates"] >= 10
    assert raw.map(lambda v: isinstance(v, str)).all().all()
    assert raw.duplicated().sum() == info["duplicates"]
    assert set(raw["Churn"]) == {"Yes", "No"} and set(raw["Partner"]) == {"Yes", "No"}
    assert set(raw["SeniorCitizen"]) == {"0", "1"}
    new = churn_df.loc[churn_df["tenure"] == 0, "customerID"]
    assert len(new) and (raw.loc[raw["customerID"].isin(new), "TotalCharges"] == " ").all()
    assert info["blank_total_charges"] == len(new)
    padded = raw["MonthlyCharges"].str.match(r"^\s|.*\s$")
    assert padded.sum() >= 30 and info["padded_numbers"] >= padded.sum()
    bad = raw[raw["customerID"].isin(info["out_of_range_ids"])]
    assert info["out_of_range"] >= 1
    tenure = pd.to_numeric(bad["tenure"].str.strip())
    monthly = pd.to_numeric(bad["MonthlyCharges"].str.strip())
    assert ((tenure < 0) | (tenure > 120) | (monthly < 0)).all()
    # everything else still parses back to the clean values
    good = raw[~raw["customerID"].isin(info["out_of_range_ids"])].drop_duplicates("customerID")
    clean = churn_df.set_index("customerID").loc[good["customerID"]]
    assert np.allclose(pd.to_numeric(good["MonthlyCharges"].str.strip()), clean["MonthlyCharges"])


def test_housing_is_a_sane_regression_problem():
    df = housing(3000, seed=0)
    assert list(df.columns) == HOUSING_COLUMNS and df["block_id"].is_unique
    assert df["median_house_value"].max() == 500_001 and df["median_house_value"].min() >= 14_999
    assert set(df["ocean_proximity"]) >= {"<1H OCEAN", "INLAND", "NEAR OCEAN", "NEAR BAY"}
    assert np.corrcoef(df["median_income"], df["median_house_value"])[0, 1] > 0.5
    spec = load_spec(EXAMPLES / "housing.yaml")
    result = train(df, spec, {"cv_folds": 3})
    r2 = r2_score(result.test_df["median_house_value"], result.pipeline.predict(result.X_test))
    assert 0.6 <= r2 <= 0.85 and 0.6 <= result.cv_means["r2"] <= 0.85


@pytest.mark.parametrize(("name", "make"), [("churn", lambda: churn(2000, seed=2)), ("housing", housing)])
def test_example_specs_describe_the_generated_tables(name, make):
    spec = load_spec(EXAMPLES / f"{name}.yaml")
    df = make()
    assert sorted(spec.columns) == sorted(df.columns)
    assert spec.sources[0].path == f"data/{name}.csv"
    for col, rules in spec.columns.items():
        values = df[col].dropna()
        if rules.allowed is not None:
            assert set(values.astype(str)) <= {str(a) for a in rules.allowed}, col
        if rules.min is not None:
            assert (values.astype(float) >= rules.min).all(), col
        if rules.max is not None:
            assert (values.astype(float) <= rules.max).all(), col
        if rules.regex is not None:
            assert values.map(lambda v, r=rules.regex: re.fullmatch(r, v) is not None).all(), col
        if rules.type == "boolean":
            raw = dirty(df[[col]], seed=0, duplicates=0)[col]
            assert set(raw) <= {*rules.true_values, *rules.false_values}, col
