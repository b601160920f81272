"""The register step without KFP: which files a version publishes, and the step's artifacts to a version."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.register.artifacts import (
    DRIFT_REFERENCE_FILE,
    REPORT_FILE,
    STATISTICS_FILE,
    StepArtifacts,
    register_step,
    version_files,
)
from components.train.logic import train
from skiff.modeling import save_model
from skiff.registry import ModelRegistry
from skiff.spec import parse_spec
from skiff.spec_text import spec_to_text
from skiff.storage import Store

SPEC = parse_spec({
    "name": "meters", "entity_key": "id", "target": "y", "problem_type": "binary", "positive_class": "yes",
    "columns": {"id": {"type": "string"}, "a": {"type": "float"}, "b": {"type": "float"},
                "y": {"type": "category"}},
})


def test_the_statistics_travel_only_when_the_validate_step_wrote_them(tmp_path):
    report = tmp_path / "report"
    report.write_text("<html></html>")
    missing = tmp_path / "statistics"  # a skipped validation leaves the artifact without a file
    assert version_files(report, missing) == {REPORT_FILE: report}
    missing.mkdir()  # a folder is not the statistics file either
    assert version_files(report, missing) == {REPORT_FILE: report}
    stats = tmp_path / "stats.pb"
    stats.write_bytes(b"\x0a\x00")
    onnx = tmp_path / "model.onnx"
    assert version_files(str(report), str(stats), onnx) == {REPORT_FILE: report, STATISTICS_FILE: stats,
                                                            "model.onnx": onnx}


@pytest.fixture(scope="module")
def step_inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("register")
    rng = np.random.default_rng(3)
    n = 200
    df = pd.DataFrame({"id": [f"r{i}" for i in range(n)], "a": rng.normal(size=n), "b": rng.normal(size=n)})
    df["y"] = np.where(df["a"] + rng.normal(0, 0.5, n) > 0, "yes", "no")
    r = train(df, SPEC, {"estimator": "logistic_regression", "cv_folds": 3})
    save_model(tmp / "model", r.pipeline, r.metadata(), r.cv_table)
    r.test_df.to_parquet(tmp / "test.parquet", index=False)
    r.train_df.to_parquet(tmp / "training.parquet", index=False)
    (tmp / "report.html").write_text("<html>report</html>")
    (tmp / "stats.pb").write_bytes(b"\x0a\x00")
    return tmp


def _artifacts(tmp: Path, **update) -> StepArtifacts:
    base = {"model": tmp / "model", "test_data": tmp / "test.parquet", "training_data": tmp / "training.parquet",
            "report": tmp / "report.html", "statistics": tmp / "stats.pb",
            "report_metadata": {"gate": {"metric": "roc_auc", "promote": True, "reason": "no champion yet"}},
            "partitions": ["2026-01-02"], "statistics_uri": "file:///lake/validation/meters/stats.pb"}
    return StepArtifacts(**{**base, **update})


def test_the_step_publishes_a_version_with_its_files_and_metadata(step_inputs, tmp_path):
    registry_uri = str(tmp_path / "models")
    result = register_step(_artifacts(step_inputs), spec_to_text(SPEC), registry_uri=registry_uri,
                           model_name="", feature_service="meters_v1", test_metrics={"roc_auc": 0.9},
                           promote=True, reason="no champion yet", gate_metric="", margin=0.0,
                           pipeline_run_id="run-1")
    assert (result.name, result.version, result.champion) == ("meters", 1, True)
    registry = ModelRegistry(Store(registry_uri))
    mv = registry.get("meters", 1)
    m = mv.metadata
    assert m.gate == {"metric": "roc_auc", "promote": True, "reason": "no champion yet"}  # the evaluate record
    assert m.dataset["partitions"] == ["2026-01-02"] and m.statistics_uri.endswith("stats.pb")
    assert m.pipeline_run_id == "run-1" and m.feature_service == "meters_v1" and m.metrics == {"roc_auc": 0.9}
    onnx_exact = m.extra["onnx"]["exact"]
    assert onnx_exact  # a logistic regression converts exactly
    folder = Path(mv.uri.removeprefix("file://"))
    names = {p.name for p in folder.iterdir()}
    assert {REPORT_FILE, STATISTICS_FILE, "model.onnx", DRIFT_REFERENCE_FILE} <= names
    assert (folder / STATISTICS_FILE).read_bytes() == b"\x0a\x00"
    assert registry.champion_version("meters") == 1
    assert DRIFT_REFERENCE_FILE in m.files


def test_the_monitor_uses_the_published_drift_reference_without_reading_the_lake(step_inputs, tmp_path):
    from skiff.config import Settings
    from skiff.monitoring.reference import REFERENCE_FILE, reference_for_version

    assert DRIFT_REFERENCE_FILE == REFERENCE_FILE
    settings = Settings(root=str(tmp_path / "root"))  # an empty lake: building a reference there would fail
    register_step(_artifacts(step_inputs), spec_to_text(SPEC), registry_uri=settings.registry_uri,
                  model_name="", feature_service="meters_v1", test_metrics={"roc_auc": 0.9}, promote=True,
                  reason="no champion yet", gate_metric="", margin=0.0)
    ref = reference_for_version(settings, "meters", 1)
    assert (ref.model, ref.version) == ("meters", 1)
    assert set(ref.features) == {"a", "b"}
    training = pd.read_parquet(step_inputs / "training.parquet")
    assert ref.features["a"].rows == len(training)  # the training split's rows, binned
    assert ref.prediction is not None and set(ref.prediction.categories) <= {"yes", "no"}
    assert not (tmp_path / "root" / "artifacts").exists(), "nothing was built or cached"


def test_the_step_registers_a_candidate_without_statistics_when_the_gate_kept_the_champion(step_inputs, tmp_path):
    registry_uri = str(tmp_path / "models")
    result = register_step(_artifacts(step_inputs, statistics=step_inputs / "absent", report_metadata={}),
                           spec_to_text(SPEC), registry_uri=registry_uri, model_name="meters-model",
                           feature_service="meters_v1", test_metrics={"roc_auc": 0.5}, promote=False,
                           reason="kept the champion", gate_metric="roc_auc", margin=0.01)
    assert (result.name, result.champion) == ("meters-model", False)
    mv = ModelRegistry(Store(registry_uri)).get("meters-model", result.version)
    assert mv.metadata.gate == {"metric": "roc_auc", "margin": 0.01, "promote": False,
                                "reason": "kept the champion"}  # what the step was told
    assert STATISTICS_FILE not in {p.name for p in Path(mv.uri.removeprefix("file://")).iterdir()}


@pytest.mark.integration
@pytest.mark.filterwarnings("ignore:You may be attemping to run a task:RuntimeWarning")
def test_train_evaluate_and_register_components_publish_a_version_under_kfp_local(tmp_path, monkeypatch):
    """The register component's body only unpacks KFP's artifacts (paths and metadata) for register_step."""
    from kfp import dsl, local
    from kfp.dsl import Artifact, Dataset, Output

    from components.evaluate.component import evaluate as evaluate_op
    from components.register.component import register as register_op
    from components.train.component import train as train_op
    from skiff.spec import load_spec

    monkeypatch.chdir(tmp_path)  # the steps' settings: the defaults, no skiff.yaml of the repository
    spec = spec_to_text(load_spec(Path(__file__).resolve().parents[2] / "examples" / "churn.yaml"))
    registry_uri = str(tmp_path / "models")

    @dsl.component(base_image="python:3.11-slim", install_kfp_package=False)
    def make_churn(n: int, out: Output[Dataset]):
        from skiff.datagen import churn

        churn(n, seed=7).to_parquet(out.path, index=False)
        out.metadata["partitions"] = ["2026-01-03"]

    @dsl.component(base_image="python:3.11-slim", install_kfp_package=False)
    def skipped_validation(statistics: Output[Artifact]):
        statistics.metadata["uri"] = "file:///nowhere/stats.pb"  # metadata only: no statistics file

    @dsl.pipeline(name="train-evaluate-register")
    def flow(spec: str, registry_uri: str) -> int:
        data = make_churn(n=400)
        trained = train_op(training_data=data.outputs["out"], spec=spec, config={"cv_folds": 3})
        evaluated = evaluate_op(model=trained.outputs["model"], test_data=trained.outputs["test_data"], spec=spec)
        stats = skipped_validation()
        return register_op(
            model=trained.outputs["model"], test_data=trained.outputs["test_data"],
            training_data=data.outputs["out"], report=evaluated.outputs["report"],
            statistics=stats.outputs["statistics"], spec=spec, registry_uri=registry_uri, model_name="",
            feature_service="churn_v1", test_metrics=evaluated.outputs["test_metrics"],
            promote=evaluated.outputs["promote"], reason=evaluated.outputs["reason"], gate_metric="", margin=0.0,
            run_id="kfp-local-1",
        ).outputs["version"]

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    assert flow(spec=spec, registry_uri=registry_uri).output == 1
    mv = ModelRegistry(Store(registry_uri)).get("churn", 1)
    assert mv.champion and mv.metadata.pipeline_run_id == "kfp-local-1"
    assert mv.metadata.gate["metric"] == "roc_auc" and mv.metadata.gate["promote"] is True  # the evaluate record
    assert mv.metadata.dataset["partitions"] == ["2026-01-03"]
    assert mv.metadata.statistics_uri == "file:///nowhere/stats.pb"
    names = {p.name for p in Path(mv.uri.removeprefix("file://")).iterdir()}
    assert REPORT_FILE in names and STATISTICS_FILE not in names
