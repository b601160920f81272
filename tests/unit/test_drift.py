"""Serving drift statistics: fixed training bins, no false alarm on same-distribution traffic across 20
windows, a 0.2-standard-deviation shift of one feature caught in the first window of 2,000 requests,
categorical and missing-value shifts, per-feature thresholds."""

from __future__ import annotations

import numpy as np
import pytest

from skiff.errors import UsageError
from skiff.monitoring.drift import DEFAULT_PSI_THRESHOLD, Reference, bin_feature, score_feature, score_window

SCHEMA = {"usage": "float", "seats": "integer", "plan": "category", "active": "boolean"}
PLANS, P = ["free", "pro", "team", "enterprise"], [0.5, 0.3, 0.15, 0.05]


def _traffic(rng, n, usage_shift=0.0, plan_p=P):
    return {"usage": rng.normal(10.0 + usage_shift * 3.0, 3.0, n), "seats": rng.poisson(4, n),
            "plan": rng.choice(PLANS, n, p=plan_p), "active": rng.random(n) < 0.8}


def _predictions(rng, n, p_yes=0.3):
    return list(np.where(rng.random(n) < p_yes, "yes", "no"))


@pytest.fixture(scope="module")
def reference():
    rng = np.random.default_rng(2026)
    return Reference.build("churn", 1, _traffic(rng, 20_000), SCHEMA, predictions=_predictions(rng, 20_000))


def test_no_false_alarm_on_same_distribution_traffic_across_20_windows(reference):
    rng = np.random.default_rng(7)
    for window in range(20):
        scores = score_window(reference, _traffic(rng, 2000), _predictions(rng, 2000))
        assert len(scores) == 2 * (len(SCHEMA) + 1)
        drifted = [(kind, s.feature, s.metric, round(s.value, 4)) for kind, s in scores if s.drifted]
        assert drifted == [], f"window {window}: {drifted}"
        assert max(s.value for _, s in scores if s.metric == "psi") < DEFAULT_PSI_THRESHOLD  # even without the test


def test_a_shift_of_a_fifth_of_a_standard_deviation_is_caught_in_the_first_window_of_2000(reference):
    rng = np.random.default_rng(11)
    scores = score_window(reference, _traffic(rng, 2000, usage_shift=0.2), _predictions(rng, 2000))
    drifted = {(s.feature, s.metric) for _, s in scores if s.drifted}
    assert drifted == {("usage", "psi")}  # only the shifted feature, and not the predictions
    psi = next(s for _, s in scores if s.feature == "usage" and s.metric == "psi")
    assert psi.value > DEFAULT_PSI_THRESHOLD and psi.details["p_value"] < 1e-6 and psi.rows == 2000


def test_a_category_mix_change_and_new_values_are_caught_with_l_infinity(reference):
    rng = np.random.default_rng(3)
    traffic = _traffic(rng, 2000, plan_p=[0.3, 0.3, 0.15, 0.25])
    traffic["plan"][:100] = "brand-new-plan"  # unseen at training time: the "other" bin
    scores = {(s.feature, s.metric): s for _, s in score_window(reference, traffic)}
    assert scores[("plan", "psi")].drifted and scores[("plan", "linf")].drifted
    assert scores[("plan", "linf")].value == pytest.approx(0.2, abs=0.05)
    assert not scores[("seats", "psi")].drifted


def test_missing_values_have_their_own_bin_and_prediction_shift_is_scored(reference):
    rng = np.random.default_rng(5)
    traffic = _traffic(rng, 2000)
    usage = traffic["usage"].astype(object)
    usage[:400] = None  # an upstream bug: a fifth of the requests lost the feature
    traffic["usage"] = usage
    scores = score_window(reference, traffic, _predictions(rng, 2000, p_yes=0.5))
    by = {(kind, s.feature, s.metric): s for kind, s in scores}
    assert by[("feature_drift", "usage", "psi")].drifted
    assert by[("feature_drift", "usage", "psi")].details["window_missing"] == 400
    assert by[("prediction_drift", "", "psi")].drifted and by[("prediction_drift", "", "linf")].drifted


def test_bins_are_fixed_by_the_training_data_and_round_trip(reference):
    usage = reference.features["usage"]
    assert usage.kind == "numeric" and len(usage.edges) == 9 and usage.rows == 20_000
    assert abs(max(usage.counts[:-1]) - min(usage.counts[:-1])) < 50  # deciles: equal shares
    assert reference.features["plan"].categories == tuple(sorted(PLANS))
    assert reference.features["active"].kind == "categorical"
    assert Reference.from_dict(reference.to_dict()) == reference


def test_a_feature_threshold_from_the_spec_is_used_and_bad_bins_are_refused():
    rng = np.random.default_rng(1)
    strict = bin_feature("x", rng.normal(0, 1, 5000), "float", threshold=0.005)
    loose = bin_feature("x", rng.normal(0, 1, 5000), "float", threshold=0.5)
    window = rng.normal(0.15, 1, 4000)
    assert score_feature(strict, window)[0].drifted and not score_feature(loose, window)[0].drifted
    with pytest.raises(UsageError, match="at least 2"):
        bin_feature("x", [1.0, 2.0], "float", bins=1)
    assert score_feature(strict, []) == []


def test_datetime_features_bin_the_same_from_pandas_training_rows_and_logged_arrow_values():
    import pandas as pd
    import pyarrow as pa

    rng = np.random.default_rng(4)
    base = pd.Timestamp("2026-01-01", tz="UTC")
    train = pd.Series(base + pd.to_timedelta(rng.uniform(0, 30, 5000), unit="D"))
    ref = bin_feature("signup", train.to_numpy(), "datetime")  # tz-aware: an object array of Timestamps
    assert ref.counts[-1] == 0 and len(ref.edges) == 9
    same = pa.array((base + pd.to_timedelta(rng.uniform(0, 30, 2000), unit="D")).to_pydatetime(),
                    type=pa.timestamp("us", tz="UTC")).to_numpy(zero_copy_only=False)
    later = pa.array((base + pd.to_timedelta(rng.uniform(20, 50, 2000), unit="D")).to_pydatetime(),
                     type=pa.timestamp("us", tz="UTC")).to_numpy(zero_copy_only=False)
    assert not score_feature(ref, same)[0].drifted and score_feature(ref, same)[0].details["window_missing"] == 0
    assert score_feature(ref, later)[0].drifted
