"""The tabular pipeline's ``lake_run``: one committed run pinned for validation, features and training."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.definitions import TABULAR
from skiff.config import load_settings
from skiff.errors import NotFoundError, UsageError
from skiff.lake import MANIFEST, Lake
from skiff.spec import load_spec
from tests.conftest import REPO


@pytest.fixture
def churn(skiff_env):
    """The churn spec and a local lake holding two runs of it in one partition."""
    settings = load_settings()
    lake = Lake.from_settings(settings)
    for run_id, finished in (("r-first", "2026-01-01T10:00:00+00:00"), ("r-second", "2026-01-01T11:00:00+00:00")):
        with lake.publish_run("churn", run_id, "2026-01-01") as staging:
            pq.write_table(pa.table({"customerID": ["0001-ABCDE"]}), staging / "part-00000.parquet")
            (staging / MANIFEST).write_text(json.dumps({"run_id": run_id, "finished_at": finished}))
    return load_spec(REPO / "examples" / "churn.yaml"), settings


def test_a_pinned_run_is_an_argument_of_the_steps(churn):
    spec, settings = churn
    args = TABULAR.arguments(spec, {"lake_run": "r-first"}, settings, local=True)
    assert args["lake_run"] == "r-first"
    assert args["run_id"] != "r-first"  # the pipeline run's own id is another thing


def test_an_unknown_run_fails_before_anything_runs_naming_the_runs_that_exist(churn):
    spec, settings = churn
    with pytest.raises(NotFoundError) as e:
        TABULAR.arguments(spec, {"lake_run": "r-nope"}, settings, local=True)
    message = str(e.value)
    assert "'churn'" in message and "'r-nope'" in message
    assert "2026-01-01/r-first" in message and "2026-01-01/r-second" in message


def test_a_pinned_run_and_sources_exclude_each_other(churn):
    spec, settings = churn
    with pytest.raises(UsageError, match="'lake_run' and 'sources' exclude each other"):
        TABULAR.arguments(spec, {"lake_run": "r-first", "sources": ["x.csv"]}, settings, local=True)


def test_the_summary_says_which_runs_were_read(churn, tmp_path):
    _, settings = churn
    features = tmp_path / "run" / "features"
    features.mkdir(parents=True)
    read = [{"ingest_date": "2026-01-01", "run_id": "r-first"}]
    (features / "executor_output.json").write_text(json.dumps(
        {"artifacts": {"training_data": {"artifacts": [{"metadata": {"runs": {"runs": read, "notes": []}}}]}}}))
    run = {"pipeline": "tabular", "status": "SUCCESS", "duration_s": 1.0, "steps": {}, "run_dir": str(features.parent),
           "arguments": {"run_id": "run-1", "lake_run": "r-first", "spec": json.dumps({"name": "churn"})}}
    summary = TABULAR.summarize(run, settings)
    assert summary["runs"]["selection"] == "pinned" and summary["runs"]["pinned"] == "r-first"
    assert summary["runs"]["features"] == read
    assert any(line.startswith("runs: pinned run r-first: ") for line in TABULAR.summary_lines(summary))

    del run["arguments"]["lake_run"]
    summary = TABULAR.summarize(run, settings)
    assert summary["runs"]["selection"] == "current_spec" and summary["runs"]["pinned"] is None
