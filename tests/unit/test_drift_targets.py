"""The detection targets of serving drift (issue: monitoring): no false alarm on same-distribution traffic
across 20 windows of 2,000 requests (fixed seed), and a 0.2 standard-deviation shift of one feature
detected in the first window of 2,000 requests — with the default thresholds of skiff.monitoring.drift."""

from __future__ import annotations

import numpy as np
import pytest

from skiff.monitoring.drift import Reference, score_window

SCHEMA = {"usage": "float", "tenure": "float", "seats": "integer", "plan": "category", "region": "string"}
WINDOW = 2000


def _rows(rng, n, shift=0.0):
    return {"usage": rng.normal(10 + 3 * shift, 3, n), "tenure": rng.exponential(24, n),
            "seats": rng.poisson(4, n), "plan": rng.choice(["free", "pro", "team"], n, p=[.5, .3, .2]),
            "region": rng.choice(["eu", "us", "apac", "latam"], n, p=[.4, .3, .2, .1])}


@pytest.fixture(scope="module")
def reference():
    return Reference.build("m", 1, _rows(np.random.default_rng(2026), 20_000), SCHEMA)


def test_no_false_alarm_across_20_same_distribution_windows(reference):
    rng = np.random.default_rng(11)
    alarms = []
    for w in range(20):
        scores = score_window(reference, _rows(rng, WINDOW))
        alarms += [(w, s.feature) for _, s in scores if s.metric == "psi" and s.drifted]
        assert len(scores) == 2 * len(SCHEMA)  # PSI and a distance per feature: every feature was scored
    assert alarms == []


def test_a_shift_of_0_2_std_in_one_feature_is_detected_in_the_first_window(reference):
    rng = np.random.default_rng(12)
    scores = score_window(reference, _rows(rng, WINDOW, shift=0.2))
    drifted = sorted(s.feature for _, s in scores if s.metric == "psi" and s.drifted)
    assert drifted == ["usage"]
