"""Golden compile tests: each pipeline compiles to the checked-in IR YAML (volatile keys ignored).

A change to a pipeline or to a component's code changes the IR a cluster runs; review it, then
regenerate with ``UPDATE_GOLDEN=1 make test PYTEST_ARGS=tests/golden``.
"""

import os
from pathlib import Path

import pytest
import yaml
from kfp import dsl

from pipelines.definitions import PIPELINES
from pipelines.runner import compile_pipeline

GOLDEN = Path(__file__).parent
VOLATILE = {"sdkVersion"}


def _strip(node):
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k not in VOLATILE}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _compile(name: str, out: Path) -> Path:
    if name == "monitor":  # the scheduled monitoring job (skiff monitor schedule), not a run definition
        from pipelines.monitor import compile_monitor

        return compile_monitor(out)
    return compile_pipeline(name, out)


@pytest.mark.parametrize("name", [*sorted(PIPELINES), "monitor"])
def test_pipeline_compiles_to_golden(name, tmp_path):
    out = _compile(name, tmp_path / f"{name}.yaml")
    # the pipeline spec and, second, the kubernetes platform spec (kfp-kubernetes: Secrets, ConfigMaps)
    got = _strip(list(yaml.safe_load_all(out.read_text())))
    golden = GOLDEN / f"{name}.yaml"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(out.read_text())
    assert golden.exists(), f"no golden file {golden}; run with UPDATE_GOLDEN=1 once and review it"
    expected = _strip(list(yaml.safe_load_all(golden.read_text())))
    assert got == expected, f"{name} IR differs from {golden.name}; review and regenerate with UPDATE_GOLDEN=1"


def _exit_handled(ir: dict, pipeline: str) -> dict:
    """The tasks inside the pipeline's exit handler, after checking that the whole body is in it and that
    its exit task (the final status of the run, marked in MLflow) runs after it whatever happened."""
    root = ir["root"]["dag"]["tasks"]
    assert set(root) == {"exit-handler-1", "track-final-status-op"}
    final = root["track-final-status-op"]
    assert final["dependentTasks"] == ["exit-handler-1"]
    assert final["triggerPolicy"] == {"strategy": "ALL_UPSTREAM_TASKS_COMPLETED"}
    assert final["cachingOptions"] == {}
    parameters = final["inputs"]["parameters"]
    assert parameters["status"] == {"taskFinalStatus": {"producerTask": "exit-handler-1"}}
    assert parameters["pipeline"]["runtimeValue"]["constant"] == pipeline
    # the run's KFP id, by which the exit task asks the Kubeflow Pipelines API which step failed
    assert parameters["kfp_run_id"]["runtimeValue"]["constant"] == dsl.PIPELINE_JOB_ID_PLACEHOLDER
    assert {k: v["componentInputParameter"] for k, v in parameters.items() if "componentInputParameter" in v} == {
        k: k for k in ("run_id", "lake_uri", "model_name", "spec", "tracking_uri")}
    return ir["components"]["comp-exit-handler-1"]["dag"]["tasks"]


def test_tabular_ir_has_the_gate_and_every_step(tmp_path):
    ir = next(yaml.safe_load_all(compile_pipeline("tabular", tmp_path / "t.yaml").read_text()))
    tasks = _exit_handled(ir, "tabular")
    assert set(tasks) == {"ingest-op", "validate", "condition-branches-2"}
    assert tasks["ingest-op"]["cachingOptions"] == {}  # caching off for ingestion
    branches = ir["components"]["comp-condition-branches-2"]["dag"]["tasks"]
    passed = ir["components"]["comp-condition-3"]["dag"]["tasks"]
    assert set(passed) == {"features", "train", "evaluate", "register"}
    assert "validation-blocked" in ir["components"]["comp-condition-4"]["dag"]["tasks"]
    assert "== true" in branches["condition-3"]["triggerPolicy"]["condition"]
    images = {e["container"]["image"] for e in ir["deploymentSpec"]["executors"].values()}
    assert any("skiff-tfdv" in i for i in images) and any(i.endswith("/skiff:" + i.rsplit(":", 1)[-1]) for i in images)


def test_recommender_ir_ingests_trains_gates_and_registers(tmp_path):
    ir = next(yaml.safe_load_all(compile_pipeline("recommender", tmp_path / "r.yaml").read_text()))
    tasks = _exit_handled(ir, "recommender")
    assert set(tasks) == {"ingest-op", "train-recs-op", "evaluate-recs-op", "register-recs-op", "track-run-op"}
    assert all(t["cachingOptions"] == {} for t in tasks.values())  # events come from outside KFP: never cached
    assert tasks["train-recs-op"]["dependentTasks"] == ["ingest-op"]
    assert set(tasks["register-recs-op"]["dependentTasks"]) == {"evaluate-recs-op", "train-recs-op"}
    # the run is logged to MLflow after registration, from the version it registered
    track = tasks["track-run-op"]
    assert track["dependentTasks"] == ["register-recs-op"]
    assert track["inputs"]["parameters"]["version"]["taskOutputParameter"] == {
        "outputParameterKey": "version", "producerTask": "register-recs-op"}
    assert track["inputs"]["parameters"]["pipeline"]["runtimeValue"]["constant"] == "recommender"


def test_every_step_that_logs_to_mlflow_reads_its_credentials_and_no_other_does(tmp_path):
    """The tracking server's credentials (Secret skiff-mlflow, every key optional) reach the register steps,
    the validation gate (it marks a blocked run failed), the tracking step and the exit task (it marks a run
    that did not succeed failed), and no other step."""
    from skiff.cluster import MLFLOW_SECRET_NAME

    logging_steps = {"tabular": {"register", "validation-blocked", "track-final-status-op"},
                     "image": {"register-image-op", "register-image-op-2", "track-run-op", "track-run-op-2",
                               "track-final-status-op"},
                     "recommender": {"register-recs-op", "track-run-op", "track-final-status-op"}}
    for name, wanted in logging_steps.items():
        _, platform = yaml.safe_load_all(compile_pipeline(name, tmp_path / f"{name}.yaml").read_text())
        executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        reading = set()
        for executor, config in executors.items():
            for secret in config.get("secretAsEnv", []):
                if secret["secretName"] == MLFLOW_SECRET_NAME:
                    assert secret["optional"] is True
                    assert {k["envVar"] for k in secret["keyToEnv"]} == {
                        "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"}
                    reading.add(executor.removeprefix("exec-"))
        assert reading == wanted, name
