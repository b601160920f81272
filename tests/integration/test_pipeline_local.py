"""The whole tabular pipeline under kfp.local, through the CLI, on a small churn export.

One module-scoped sequence (each run costs ~40 s of fixed step overhead on this machine):
1. a first run ingests, validates, builds features, trains, evaluates and registers version 1 as
   champion;
2. the same export again: ingestion is idempotent, a second version is trained and registered, and
   the gate keeps version 1 (same data, same score: no improvement);
3. a later partition whose MonthlyCharges drifted: validation blocks, the run exits 1 and nothing is
   registered;
4. a second export ingested into the first partition under the same spec, then a run pinning the
   first run (``lake_run``): nothing is ingested, and validation, features and training read that run
   alone.
"""

import json

import pytest

from skiff import datagen
from skiff.cli import main
from skiff.registry import ModelRegistry
from skiff.storage import Store
from tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.tfdv, pytest.mark.slow]


def _run(capsys, *params: str) -> tuple[int, dict]:
    argv = ["run", "tabular", "--local", "--json"]
    for p in params:
        argv += ["--param", p]
    code = main(argv)
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    work = tmp_path_factory.mktemp("pipeline")
    mp = pytest.MonkeyPatch()
    mp.chdir(work)
    mp.setenv("SKIFF_ROOT", str(work / ".skiff"))
    mp.setenv("OMP_NUM_THREADS", "1")
    raw = datagen.dirty(datagen.churn(n=900, seed=3), seed=3)
    raw.to_csv(work / "churn.csv", index=False)
    drifted = datagen.churn(n=900, seed=4)
    drifted["MonthlyCharges"] = drifted["MonthlyCharges"] * 3 + 40
    drifted["TotalCharges"] = drifted["TotalCharges"] * 3
    datagen.dirty(drifted, seed=4).to_csv(work / "churn_drifted.csv", index=False)
    more = datagen.churn(n=300, seed=5)
    more["customerID"] = [f"9{i:03d}-ZZZZZ" for i in range(len(more))]  # other customers: a new run's rows
    datagen.dirty(more, seed=5).to_csv(work / "churn_more.csv", index=False)  # spelled as the export is
    spec = f"spec={REPO / 'examples' / 'churn.yaml'}"
    cfg = 'train_config={"estimator": "logistic_regression", "cv_folds": 3}'
    results = {}
    capsys = _Capture()
    with capsys:
        results["first"] = _run(capsys, spec, cfg, f'sources=["{work / "churn.csv"}"]', "ingest_date=2026-01-01")
        results["again"] = _run(capsys, spec, cfg, f'sources=["{work / "churn.csv"}"]', "ingest_date=2026-01-01")
        results["drift"] = _run(capsys, spec, cfg, f'sources=["{work / "churn_drifted.csv"}"]',
                                "ingest_date=2026-01-02")
        results["versions_after_drift"] = ModelRegistry(Store(str(work / ".skiff" / "models"))).version_numbers("churn")
        assert main(["ingest", str(work / "churn_more.csv"), "--spec", str(REPO / "examples" / "churn.yaml"),
                     "--date", "2026-01-01", "--run-id", "second-export", "--json"]) == 0
        capsys.readouterr()
        results["pinned"] = _run(capsys, spec, cfg, f"lake_run={results['first'][1]['ingest']['run_id']}")
    results["registry"] = ModelRegistry(Store(str(work / ".skiff" / "models")))
    yield results
    mp.undo()


class _Capture:
    """capsys is function-scoped; capture stdout for the module-scoped sequence ourselves."""

    def __enter__(self):
        import contextlib
        import io

        self._buf = io.StringIO()
        self._ctx = contextlib.redirect_stdout(self._buf)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)

    def readouterr(self):
        out = self._buf.getvalue()
        self._buf.seek(0)
        self._buf.truncate()
        return type("Out", (), {"out": out})()


def test_first_run_registers_a_champion(runs):
    code, summary = runs["first"]
    assert code == 0, summary.get("error")
    assert summary["status"] == "SUCCESS"
    # the exit handler's task runs after every run (it marks a failed one failed in MLflow)
    assert set(summary["steps"]) == {"ingest-op", "validate", "features", "train", "evaluate", "register",
                                     "track-final-status-op"}
    assert all(s["status"] == "SUCCESS" for s in summary["steps"].values())
    counts = summary["ingest"]["counts"]
    assert counts["read"] == counts["accepted"] + counts["quarantined"] + counts["duplicates"]
    assert counts["quarantined"] > 0 and counts["duplicates"] > 0  # the export's dirt was caught
    reg = summary["registered"]
    assert reg["version"] == 1 and reg["champion"] is True
    assert 0.75 < reg["metrics"]["roc_auc"] < 0.95
    assert summary["validation"]["status"] == "passed"


def test_registered_version_records_its_lineage(runs):
    mv = runs["registry"].get("churn", 1)
    meta = mv.metadata
    assert meta.pipeline_run_id == runs["first"][1]["run_id"]
    assert meta.dataset["partitions"] == ["2026-01-01"]
    assert meta.feature_service and meta.feature_service.startswith("churn_v")
    assert meta.data_fingerprint.startswith("sha256:")
    assert meta.statistics_uri.endswith("stats.pb")
    assert {"report.html", "statistics.pb", "MODEL_CARD.md"} <= set(meta.files)
    assert meta.threshold is not None and 0 < meta.threshold < 1
    assert len(meta.cv) == 5  # 3 folds + mean + std
    assert meta.extra["onnx"]["exact"] is True and "model.onnx" in meta.files


def test_rerun_is_idempotent_and_the_gate_keeps_the_champion(runs):
    code, summary = runs["again"]
    assert code == 0, summary.get("error")
    assert summary["ingest"]["status"] == "unchanged"
    reg = summary["registered"]
    assert reg["version"] == 2 and reg["champion"] is False
    assert "kept the champion" in reg["gate_reason"]
    assert runs["registry"].champion_version("churn") == 1


def test_the_same_spec_and_data_give_the_same_model_inputs(runs):
    """Two runs of one spec: the feature order is the spec's column order, and the feature service and
    data fingerprint are the same (a dict parameter used to reorder the columns between runs)."""
    from skiff.spec import load_spec

    spec = load_spec(REPO / "examples" / "churn.yaml")
    first, again = (runs["registry"].get("churn", v).metadata for v in (1, 2))
    assert first.features == again.features == spec.feature_columns
    assert first.feature_service == again.feature_service
    assert first.data_fingerprint == again.data_fingerprint
    assert list(first.dataset["spec"]["columns"]) == list(spec.columns)


def test_the_summary_names_the_runs_validation_and_training_read(runs):
    summary = runs["again"][1]
    validated = summary["runs"]["validated"]
    assert [r["run_id"] for r in validated] == [summary["ingest"]["run_id"]]  # the unchanged input's run
    assert [r["run_id"] for r in summary["runs"]["features"]] == [r["run_id"] for r in validated]
    assert all(r["current_spec"] for r in validated)


def test_drifted_partition_is_blocked(runs):
    code, summary = runs["drift"]
    assert code == 1
    assert summary["status"] in ("GATE_FAILED", "FAILURE") and summary["gate_failed"] is True
    assert "MonthlyCharges" in summary["validation"]["drifted"]
    assert "train" not in summary["steps"]
    assert runs["versions_after_drift"] == [1, 2]


def test_a_pinned_run_is_the_only_one_validated_and_trained_on(runs):
    first = runs["first"][1]["ingest"]["run_id"]
    code, summary = runs["pinned"]
    assert code == 0, summary.get("error")
    assert summary["ingest"]["status"] == "pinned" and summary["ingest"]["run_id"] == first
    assert summary["runs"]["selection"] == "pinned" and summary["runs"]["pinned"] == first
    # the partition holds two runs of this spec; only the pinned one is read
    assert [r["run_id"] for r in summary["runs"]["validated"]] == [first]
    assert [r["run_id"] for r in summary["runs"]["features"]] == [first]
    reg = summary["registered"]
    meta = runs["registry"].get("churn", reg["version"]).metadata
    earlier = runs["registry"].get("churn", 1).metadata
    assert meta.dataset["rows"] == earlier.dataset["rows"]  # the second export's 300 rows left out
    assert meta.data_fingerprint == earlier.data_fingerprint
