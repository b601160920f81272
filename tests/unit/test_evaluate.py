"""Evaluation metrics against scikit-learn's own functions, the report files, the gate, the KFP steps."""

import base64
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from components.evaluate.logic import champion_metrics, evaluate, gate, report
from components.train.logic import train
from skiff.errors import InputError, UsageError
from skiff.spec import load_spec, parse_spec

REPO = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


def _spec(problem, target_type):
    return parse_spec(
        {
            "name": "e",
            "entity_key": "id",
            "target": "y",
            "problem_type": problem,
            "columns": {
                "id": {"type": "string"},
                "a": {"type": "float"},
                "b": {"type": "float"},
                "kind": {"type": "category"},
                "y": {"type": target_type},
            },
        }
    )


def _frame(n=240, seed=0):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    kind = rng.choice(["p", "q"], size=n)
    return pd.DataFrame({"id": [f"r{i}" for i in range(n)], "a": a, "b": b, "kind": kind}), rng


@pytest.fixture(scope="module")
def binary():
    df, rng = _frame()
    df["y"] = np.where(df["a"] + 0.5 * df["b"] + rng.normal(0, 0.8, len(df)) > 0.3, "yes", "no")
    spec = _spec("binary", "category").model_copy(update={"positive_class": "yes"})
    return spec, train(df, spec, {"estimator": "logistic_regression", "cv_folds": 3})


def test_binary_metrics_equal_sklearns_at_the_threshold(binary):
    spec, r = binary
    t = 0.37
    result = evaluate(r.pipeline, r.X_test, r.test_df["y"], spec, threshold=t)
    y = r.test_df["y"].to_numpy()
    p = r.pipeline.predict_proba(r.X_test)[:, list(r.pipeline.classes_).index("yes")]
    truth, pred = y == "yes", p >= t
    m = result.metrics
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(truth, pred))
    assert m["precision"] == pytest.approx(skm.precision_score(truth, pred))
    assert m["recall"] == pytest.approx(skm.recall_score(truth, pred))
    assert m["f1"] == pytest.approx(skm.f1_score(truth, pred))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(truth, p))
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(truth, p))
    assert m["brier"] == pytest.approx(skm.brier_score_loss(truth, p))
    assert m["log_loss"] == pytest.approx(skm.log_loss(truth, p))
    assert result.confusion_matrix == skm.confusion_matrix(truth, pred, labels=[False, True]).tolist()
    assert result.classes == ["no", "yes"] and result.positive_class == "yes" and result.threshold == t
    curve = result.roc_curves["yes"]
    assert curve["fpr"][0] == 0 and curve["tpr"][-1] == 1 and all(0 <= v <= 1 for v in curve["thresholds"])
    cal = result.calibration
    assert sum(cal["count"]) == len(y) and len(cal["prob_true"]) == len(cal["count"])


def test_champion_is_rescored_on_the_challengers_test_rows(binary, tmp_path):
    from skiff.registry import ModelRegistry
    from skiff.storage import Store

    spec, r = binary
    registry = ModelRegistry(Store(str(tmp_path / "models")))
    assert champion_metrics(registry, "e", r.test_df, spec) == {}  # no champion yet: nothing to beat
    mv = registry.register("e", r.pipeline, {"features": r.feature_columns, "threshold": 0.4})
    assert champion_metrics(registry, "e", r.test_df, spec) == {}  # registered, but not the champion
    registry.set_champion("e", mv.version, "first")
    scored = champion_metrics(registry, "e", r.test_df, spec)
    expected = evaluate(r.pipeline, r.X_test, r.test_df["y"], spec, threshold=0.4).metrics
    assert scored["roc_auc"] == pytest.approx(expected["roc_auc"]) and scored["f1"] == pytest.approx(expected["f1"])
    assert champion_metrics(registry, "e", r.test_df.drop(columns=["a"]), spec) == {}  # cannot be compared


def test_multiclass_metrics_equal_sklearns():
    df, rng = _frame(300, seed=1)
    score = df["a"] - df["b"] + rng.normal(0, 0.7, len(df))
    df["y"] = np.select([score < -0.6, score < 0.6], [0, 1], 2)
    spec = _spec("multiclass", "integer")
    r = train(df, spec, {"estimator": "logistic_regression", "cv_folds": 3})
    result = evaluate(r.pipeline, r.X_test, r.test_df["y"], spec)
    y = r.test_df["y"].to_numpy()
    proba = r.pipeline.predict_proba(r.X_test)
    pred = r.pipeline.classes_[proba.argmax(axis=1)]
    m = result.metrics
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["f1_weighted"] == pytest.approx(skm.f1_score(y, pred, average="weighted"))
    assert m["precision_weighted"] == pytest.approx(skm.precision_score(y, pred, average="weighted"))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, proba, multi_class="ovr", average="macro"))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, proba))
    assert result.confusion_matrix == skm.confusion_matrix(y, pred).tolist()
    assert set(result.roc_curves) == {"0", "1", "2"} and result.threshold is None


@pytest.fixture(scope="module")
def regression():
    df, rng = _frame(200, seed=2)
    df["y"] = 10 * df["a"] - 4 * df["b"] + rng.normal(0, 2, len(df))
    spec = _spec("regression", "float")
    return spec, train(df, spec, {"estimator": "ridge", "cv_folds": 3})


def test_regression_metrics_equal_sklearns(regression):
    spec, r = regression
    result = evaluate(r.pipeline, r.X_test, r.test_df["y"], spec)
    y, pred = r.test_df["y"].to_numpy(), r.pipeline.predict(r.X_test)
    assert result.metrics["rmse"] == pytest.approx(skm.root_mean_squared_error(y, pred))
    assert result.metrics["mae"] == pytest.approx(skm.mean_absolute_error(y, pred))
    assert result.metrics["r2"] == pytest.approx(skm.r2_score(y, pred))
    assert result.residuals["mean"] == pytest.approx(np.mean(y - pred))
    assert result.residuals["max_abs"] == pytest.approx(np.max(np.abs(y - pred)))


def test_labels_the_model_never_saw_are_an_input_error(binary):
    spec, r = binary
    y = r.test_df["y"].copy()
    y.iloc[0] = "maybe"
    with pytest.raises(InputError, match="maybe"):
        evaluate(r.pipeline, r.X_test, y, spec, 0.5)


def _embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_report_writes_pngs_and_one_self_contained_page(binary, tmp_path):
    spec, r = binary
    result = evaluate(r.pipeline, r.X_test, r.test_df["y"], spec, r.threshold)
    files = report(result, tmp_path, cv_table=r.cv_table, extra={"estimator": r.estimator})
    assert set(files) == {"roc", "pr", "confusion_matrix", "calibration", "html"}
    for name in ("roc", "pr", "confusion_matrix", "calibration"):
        assert files[name].read_bytes().startswith(PNG)
    page = files["html"].read_text()
    images = _embedded_pngs(page)
    assert len(images) == 4 and all(img.startswith(PNG) for img in images)
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing loaded from elsewhere
    assert "Cross-validation" in page and "logistic_regression" in page
    assert f"{result.metrics['roc_auc']:.4f}" in page


def test_regression_report_has_predicted_vs_actual_and_residuals(regression, tmp_path):
    spec, r = regression
    result = evaluate(r.pipeline, r.X_test, r.test_df["y"], spec)
    files = report(result, tmp_path)
    assert set(files) == {"predicted_vs_actual", "residuals", "html"}
    assert len(_embedded_pngs(files["html"].read_text())) == 2


# ---------------------------------------------------------------------------------------------- gate


def test_gate_without_a_champion_promotes():
    d = gate({"roc_auc": 0.7}, None, "roc_auc", 0.05)
    assert d.promote and "no champion" in d.reason and d.delta is None
    assert gate({"roc_auc": 0.7}, {}, "roc_auc").promote


@pytest.mark.parametrize(
    ("challenger", "champion", "margin", "promote"),
    [
        (0.85, 0.84, 0.02, False),
        (0.85, 0.84, 0.01, True),
        (0.85, 0.84, 0.005, True),
        (0.84, 0.84, 0.0, False),
        (0.80, 0.84, 0.0, False),
    ],
)
def test_gate_needs_the_margin_on_a_higher_is_better_metric(challenger, champion, margin, promote):
    d = gate({"roc_auc": challenger}, {"roc_auc": champion}, "roc_auc", margin)
    assert d.promote is promote and d.higher_is_better
    assert d.delta == pytest.approx(challenger - champion) and d.improvement == pytest.approx(d.delta)


def test_gate_on_error_metrics_prefers_lower():
    assert gate({"rmse": 10.0}, {"rmse": 12.0}, "rmse", 1.0).promote
    d = gate({"rmse": 12.0}, {"rmse": 10.0}, "rmse", 0.0)
    assert not d.promote and d.improvement == pytest.approx(-2.0) and "lower is better" in d.reason
    assert not gate({"mae": 9.5}, {"mae": 10.0}, "mae", 1.0).promote
    assert gate({"loss": 1.0}, {"loss": 2.0}, "loss", 0.0, higher_is_better=False).promote


def test_gate_errors_and_undefined_values():
    with pytest.raises(UsageError, match="roc_auc"):
        gate({"f1": 0.5}, None, "roc_auc")
    with pytest.raises(UsageError, match="champion"):
        gate({"f1": 0.5}, {"accuracy": 0.9}, "f1")
    with pytest.raises(UsageError, match="margin"):
        gate({"f1": 0.5}, None, "f1", -0.1)
    assert not gate({"f1": math.nan}, {"f1": 0.5}, "f1").promote


# ----------------------------------------------------------------------------------------- kfp.local


@pytest.mark.integration
@pytest.mark.filterwarnings("ignore:You may be attemping to run a task:RuntimeWarning")
def test_train_and_evaluate_components_run_under_kfp_local(tmp_path):
    from kfp import dsl, local
    from kfp.dsl import Dataset, Output

    from components.evaluate.component import evaluate as evaluate_op
    from components.train.component import train as train_op

    @dsl.component(base_image="python:3.11-slim", install_kfp_package=False)
    def make_churn(n: int, out: Output[Dataset]):
        from skiff.datagen import churn

        churn(n, seed=5).to_parquet(out.path, index=False)

    from skiff.spec_text import spec_to_text

    spec = spec_to_text(load_spec(REPO / "examples" / "churn.yaml"))  # the pipelines' spec parameter: JSON text

    @dsl.pipeline(name="train-evaluate")
    def flow(spec: str, champion: dict) -> bool:
        data = make_churn(n=500)
        trained = train_op(training_data=data.outputs["out"], spec=spec, config={"cv_folds": 3})
        return evaluate_op(
            model=trained.outputs["model"],
            test_data=trained.outputs["test_data"],
            spec=spec,
            champion_metrics=champion,
        ).outputs["promote"]

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path))
    assert flow(spec=spec, champion={"roc_auc": 0.999}).output is False  # an unbeatable champion
    runs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    report_html = next(runs[0].glob("evaluate/report"))
    assert len(_embedded_pngs(report_html.read_text())) == 4
    model_dir = next(runs[0].glob("train/model"))
    assert {p.name for p in model_dir.iterdir()} >= {"model.joblib", "train.json", "cv.csv", "search.csv"}


# ------------------------------------------------------------------------------------------ the step


def _model_folder(tmp_path, binary, info_update=None):
    from skiff.modeling import save_model

    spec, r = binary
    info = {**r.metadata(), **(info_update or {})}
    folder = tmp_path / "model"
    save_model(folder, r.pipeline, info, r.cv_table)
    test_path = tmp_path / "test.parquet"
    r.test_df.to_parquet(test_path, index=False)
    return spec, folder, test_path


def test_step_gates_on_the_training_scoring_metric_when_no_metric_is_given(binary, tmp_path):
    from components.evaluate.logic import evaluate_step

    spec, folder, test_path = _model_folder(tmp_path, binary, {"scoring": "f1"})
    step = evaluate_step(folder, test_path, spec)
    assert step.decision.metric == "f1" and step.decision.promote  # no champion: promoted
    assert step.report_metadata()["gate_metric"] == "f1"
    assert step.report_metadata()["gate"] == step.decision.record()
    assert step.champion == {}
    assert all(math.isfinite(v) for v in step.test_metrics.values()) and "roc_auc" in step.test_metrics
    assert step.roc_curve is not None and len(step.roc_curve["fpr"]) == len(step.roc_curve["tpr"])
    assert step.report_html.startswith("<!DOCTYPE html>") and "no champion yet" in step.report_html


def test_step_falls_back_to_the_problem_types_metric_and_takes_a_given_champion(binary, tmp_path):
    from components.evaluate.logic import evaluate_step, gate_metric_for

    spec, folder, test_path = _model_folder(tmp_path, binary, {"scoring": None})
    assert gate_metric_for("", {"scoring": None}, "binary") == "roc_auc"
    assert gate_metric_for("", {"scoring": "f1"}, "binary") == "f1"
    assert gate_metric_for("accuracy", {"scoring": "f1"}, "binary") == "accuracy"
    step = evaluate_step(folder, test_path, spec, champion_metrics_given={"roc_auc": 0.999})
    assert step.decision.metric == "roc_auc" and not step.decision.promote
    assert step.champion == {"roc_auc": 0.999}
    step = evaluate_step(folder, test_path, spec, metric="accuracy", margin=0.5,
                         champion_metrics_given={"accuracy": 0.1})
    assert step.decision.metric == "accuracy" and step.decision.margin == 0.5


def test_step_rescores_the_registered_champion_on_the_same_rows(binary, tmp_path):
    from components.evaluate.logic import evaluate_step
    from skiff.registry import ModelRegistry
    from skiff.storage import Store

    spec, folder, test_path = _model_folder(tmp_path, binary)
    _, r = binary
    registry_uri = str(tmp_path / "models")
    registry = ModelRegistry(Store(registry_uri))
    mv = registry.register("e", r.pipeline, {"name": "e", "features": r.feature_columns,
                                              "threshold": r.threshold})
    registry.set_champion("e", mv.version, "first")
    step = evaluate_step(folder, test_path, spec, registry_uri=registry_uri,
                         champion_metrics_given={"roc_auc": 0.0})  # ignored: the registry has the champion
    assert step.champion["roc_auc"] == pytest.approx(step.test_metrics["roc_auc"])  # the same model
    assert not step.decision.promote  # an equal champion is not beaten
    assert evaluate_step(folder, test_path, spec, registry_uri=str(tmp_path / "empty")).champion == {}
