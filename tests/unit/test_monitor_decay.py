"""Performance decay: labels joined to the inference log (request id, entity + time), accuracy / ROC-AUC /
RMSE with intervals, the floor from the version's test metrics, the results stored in the control plane
and exported as Prometheus gauges."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier

from skiff.config import Settings
from skiff.control_plane import ControlPlane, GroundTruthLabel
from skiff.errors import UsageError
from skiff.inference_log import InferenceLogWriter, ModelLog, log_store
from skiff.monitoring.decay import (
    DecayThresholds,
    bootstrap_interval,
    join_labels,
    monitor_performance,
    score_labeled,
    wilson_interval,
)
from skiff.monitoring.metrics import exposition
from skiff.registry import ModelRegistry

MODEL = "acct"
H0 = dt.datetime(2026, 6, 1, 10, tzinfo=dt.UTC)
SCHEMA = {"customer": "string", "usage": "float"}


def test_wilson_interval_matches_the_textbook_values():
    lo, hi = wilson_interval(81, 100)  # p = 0.81, n = 100: (0.7222, 0.8749)
    assert lo == pytest.approx(0.7222, abs=1e-4) and hi == pytest.approx(0.8749, abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_bootstrap_interval_is_reproducible_and_covers_the_mean():
    x = np.random.default_rng(3).normal(5, 1, 400)
    a = bootstrap_interval(lambda i: float(x[i].mean()), len(x))
    assert a == bootstrap_interval(lambda i: float(x[i].mean()), len(x))
    assert a[0] < x.mean() < a[1] and a[1] - a[0] < 0.3


def test_score_labeled_per_problem_type():
    preds = ["yes"] * 80 + ["no"] * 20
    labels = ["yes"] * 70 + ["no"] * 10 + ["no"] * 20
    probs = [0.9] * 70 + [0.6] * 10 + [0.2] * 20
    scores = score_labeled("binary", preds, labels, probabilities=probs, positive="yes")
    assert scores["accuracy"][0] == pytest.approx(0.9)
    assert scores["accuracy"][1] < 0.9 < scores["accuracy"][2]
    assert scores["roc_auc"][0] == pytest.approx(1.0)  # every positive outranks every negative
    reg = score_labeled("regression", [1.0, 2.0, 3.0, 4.0] * 10, [1.5, 2.0, 2.5, 4.0] * 10)
    assert reg["rmse"][0] == pytest.approx(math.sqrt(0.125))
    assert "accuracy" not in reg and score_labeled("binary", [], []) == {}


def _log(n, request, when, customers, usage, preds, probs):
    return pd.DataFrame({"request_id": request, "row": [0] * n, "timestamp": when, "prediction": preds,
                         "probability": probs, "input:customer": customers, "input:usage": usage})


def test_join_on_request_id_and_row_and_on_entity_and_time():
    when = pd.to_datetime([H0 + dt.timedelta(minutes=m) for m in (0, 10, 20)], utc=True)
    log = _log(3, ["a", "b", "c"], when, ["c1", "c2", "c1"], [1.0, 2.0, 3.0], ["yes", "no", "yes"],
               [0.8, 0.2, 0.7])
    by_id = pd.DataFrame({"request_id": ["b", "zzz"], "row": [0, 0], "label": ["no", "yes"]})
    joined = join_labels(log, by_id)
    assert joined["request_id"].tolist() == ["b"] and joined["label"].tolist() == ["no"]
    # c1's outcome at 00:25 belongs to its latest prediction before then (c, at 00:20), not to a
    by_entity = pd.DataFrame({"entity": ["c1", "c2"], "entity_column": ["customer", "customer"],
                              "event_time": pd.to_datetime([H0 + dt.timedelta(minutes=25),
                                                            H0 + dt.timedelta(days=3)], utc=True),
                              "label": ["no", "no"]})
    joined = join_labels(log, by_entity)
    assert joined["request_id"].tolist() == ["c"]  # c2's label is 3 days late: past the 24 h tolerance
    with pytest.raises(UsageError, match="hashed"):
        join_labels(log, by_entity, hashed=["customer"])


@pytest.fixture
def world(tmp_path):
    settings = Settings(root=str(tmp_path / ".skiff"))
    registry = ModelRegistry.from_settings(settings)
    model = DummyClassifier().fit([[0], [1]], ["no", "yes"])
    registry.register(MODEL, model, {"problem_type": "binary", "classes": ["no", "yes"], "features": list(SCHEMA),
                                     "input_schema": SCHEMA, "metrics": {"accuracy": 0.9, "roc_auc": 0.93}})
    rng = np.random.default_rng(7)
    store = ControlPlane.from_settings(settings)
    labels = []
    with InferenceLogWriter(log_store(settings), [ModelLog(MODEL, SCHEMA)]) as writer:
        for hour, accuracy in ((0, 0.9), (1, 0.6)):
            for i in range(400):
                truth = "yes" if rng.random() < 0.5 else "no"
                right = rng.random() < accuracy
                pred = truth if right else ("no" if truth == "yes" else "yes")
                prob = (0.5 + rng.random() / 2) if pred == "yes" else rng.random() / 2
                rid = f"h{hour}-{i}"
                writer.offer(MODEL, 1, rid, [{"customer": f"c{i}", "usage": float(i)}], [pred], probabilities=[prob],
                             when=H0 + dt.timedelta(hours=hour, seconds=i))
                if i % 2 == 0:  # labels arrive for half of the requests
                    labels.append(GroundTruthLabel(model=MODEL, request_id=rid, label=truth))
        assert writer.flush()
    assert store.add_labels(labels) == (len(labels), 0)
    return settings, store


def test_monitor_flags_the_decayed_window_only_and_stores_and_exports_it(world):
    settings, store = world
    reports = monitor_performance(settings, MODEL, store=store)
    assert [r.logged for r in reports] == [400, 400] and [r.labeled for r in reports] == [200, 200]
    first, second = ({x.metric: x for x in r.results} for r in reports)
    assert first["accuracy"].ci_low < 0.9 < first["accuracy"].ci_high and not first["accuracy"].decayed
    assert first["accuracy"].floor == pytest.approx(0.85) and first["accuracy"].baseline == 0.9
    assert second["accuracy"].ci_high < 0.85 and second["accuracy"].decayed
    assert {"accuracy", "roc_auc"} <= set(second)
    assert reports[1].decayed == sorted(m for m, x in second.items() if x.decayed)
    stored = store.performance_results(MODEL, 1)
    assert len(stored) == len(first) + len(second)
    # a re-run replaces, and a corrected label replaces the earlier one
    assert store.add_labels([GroundTruthLabel(model=MODEL, request_id="h0-0", label="yes")]) == (0, 1)
    monitor_performance(settings, MODEL, store=store)
    assert len(store.performance_results(MODEL, 1)) == len(stored)
    text = exposition([], store.performance_results(MODEL)).decode()
    assert 'skiff_model_performance_below_floor{metric="accuracy",model="acct",version="1"} 1.0' in text
    assert 'skiff_model_performance_floor{metric="accuracy",model="acct",version="1"} 0.85' in text


def test_too_few_labels_skip_a_window_and_thresholds_are_checked(world):
    settings, store = world
    reports = monitor_performance(settings, MODEL, store=store, thresholds=DecayThresholds(min_labels=201))
    assert all(r.skipped and "fewer than 201" in r.skipped for r in reports)
    with pytest.raises(UsageError):
        DecayThresholds(tolerance=1.5)


def _meta(**fields):
    from skiff.registry import VersionMetadata

    return VersionMetadata(name="acct", version=1, **fields)


def test_the_positive_class_is_the_versions_own_never_assumed():
    from skiff.monitoring.decay import canonical_labels, positive_class

    spec = {"target": "outcome", "positive_class": "churned", "columns": {}}
    classes = ["churned", "retained"]  # sorted: the positive one is first, not last
    assert positive_class(_meta(problem_type="binary", classes=classes, dataset={"spec": spec})) == "churned"
    # what training recorded wins over the spec (it is what the test metrics were computed for)
    recorded = _meta(problem_type="binary", classes=classes, dataset={"spec": spec},
                     extra={"positive_class": "retained"})
    assert positive_class(recorded) == "retained"
    assert positive_class(_meta(problem_type="binary", classes=[0, 1], dataset={"spec": {"positive_class": "0"}})) == 0
    assert positive_class(_meta(problem_type="binary", classes=classes)) == "retained"  # training's default
    assert positive_class(_meta(problem_type="multiclass", classes=["a", "b", "c"])) is None
    with pytest.raises(UsageError, match="'lost' of its spec is not one of its classes"):
        positive_class(_meta(problem_type="binary", classes=classes, dataset={"spec": {"positive_class": "lost"}}))
    flags = _meta(problem_type="binary", classes=[False, True], target="churned", dataset={"spec": {
        "target": "churned", "columns": {"churned": {"type": "boolean", "true_values": ["Yes"],
                                                     "false_values": ["No"]}}}})
    assert canonical_labels(flags, ["yes", "No", "TRUE", "0", True, "maybe", None]) == [
        "True", "False", "True", "False", "True", "maybe", None]
    assert canonical_labels(_meta(problem_type="binary", classes=classes), ["Churned", "RETAINED"]) == classes


def _string_label_world(tmp_path, positive):
    """A binary model with string classes whose logged probability is its second class's (as the model server
    logs it), labels posted late in other spellings."""
    settings = Settings(root=str(tmp_path / ".skiff"))
    registry = ModelRegistry.from_settings(settings)
    spec = {"name": "acct", "target": "outcome", "problem_type": "binary", "positive_class": positive,
            "columns": {"outcome": {"type": "string"}}}
    registry.register(MODEL, DummyClassifier().fit([[0], [1]], ["churned", "retained"]),
                      {"problem_type": "binary", "classes": ["churned", "retained"], "features": list(SCHEMA),
                       "input_schema": SCHEMA, "metrics": {"accuracy": 0.8, "roc_auc": 0.9},
                       "dataset": {"name": "acct", "spec": spec}})
    rng = np.random.default_rng(11)
    store = ControlPlane.from_settings(settings)
    labels, truth, p_retained = [], [], []
    with InferenceLogWriter(log_store(settings), [ModelLog(MODEL, SCHEMA)]) as writer:
        for i in range(300):
            t = "churned" if rng.random() < 0.4 else "retained"
            p = float(np.clip(rng.normal(0.35 if t == "churned" else 0.65, 0.2), 0, 1))  # P(retained)
            pred = "retained" if p >= 0.5 else "churned"
            writer.offer(MODEL, 1, f"r{i}", [{"customer": f"c{i}", "usage": 1.0}], [pred], probabilities=[p],
                         when=H0 + dt.timedelta(seconds=i))
            labels.append(GroundTruthLabel(model=MODEL, request_id=f"r{i}", label=t.upper() if i % 3 else t))
            truth.append(t)
            p_retained.append(p)
        assert writer.flush()
    store.add_labels(labels)
    return settings, store, np.asarray(truth), np.asarray(p_retained)


@pytest.mark.parametrize("positive", ["churned", "retained"])
def test_roc_auc_is_of_the_spec_positive_class_with_string_labels(tmp_path, positive):
    from sklearn.metrics import roc_auc_score

    settings, store, truth, p_retained = _string_label_world(tmp_path, positive)
    (report,) = monitor_performance(settings, MODEL, store=store)
    results = {r.metric: r for r in report.results}
    assert report.labeled == 300 and set(results) == {"accuracy", "roc_auc"}
    # upper-case labels are the same classes: accuracy is the share of matching predictions
    expected_acc = np.mean((p_retained >= 0.5) == (truth == "retained"))
    assert results["accuracy"].value == pytest.approx(expected_acc) and "unknown_labels" not in \
        results["accuracy"].details
    p_positive = p_retained if positive == "retained" else 1 - p_retained
    assert results["roc_auc"].value == pytest.approx(roc_auc_score(truth == positive, p_positive))
    assert results["roc_auc"].details["positive_class"] == positive
    assert results["roc_auc"].ci_low < results["roc_auc"].value < results["roc_auc"].ci_high
