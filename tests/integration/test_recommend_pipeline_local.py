"""The recommender pipeline end to end under kfp.local: a generated interaction log with broken rows is
ingested (quarantined with reasons), the models are evaluated on the last days against popularity, the best
is registered as the champion; a second run is gated against that champion refit on the same split."""

import pytest

from pipelines.definitions import get_pipeline
from pipelines.runner import run_local
from skiff.config import Settings
from skiff.datagen_recs import RECS_SPEC
from skiff.datagen_recs import interactions as generate
from skiff.errors import UsageError
from skiff.registry import ModelRegistry
from skiff.spec import parse_spec
from skiff.storage import Store

pytestmark = pytest.mark.integration  # kfp.local

CONFIG = {"test_days": 7, "als": {"factors": 32, "iterations": 10}, "ann": {"threshold": 100, "recall_users": 200}}


def _log(tmp_path):
    df = generate(600, 300, days=40, seed=5)
    df["timestamp"] = df["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    bad = df.head(3).copy()
    bad["event_type"] = "hover"  # not an allowed event type: quarantined by ingestion
    path = tmp_path / "events.csv"
    df._append(bad, ignore_index=True).to_csv(path, index=False)
    return path, len(df)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_recommender_pipeline_trains_evaluates_gates_and_registers(tmp_path, monkeypatch):
    monkeypatch.setenv("SKIFF_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path, good = _log(tmp_path)
    settings = Settings(root=str(tmp_path / "root"))
    spec = parse_spec({**RECS_SPEC, "sources": [{"type": "file", "path": str(path)}]})
    definition = get_pipeline("recommender")
    args = definition.arguments(spec, {"recs_config": CONFIG}, settings, local=True)
    run = run_local("recommender", {**args, "run_id": "run-1"}, tmp_path / "runs")
    summary = definition.summarize(run, settings)
    assert summary["status"] == "SUCCESS", summary["error"]
    assert summary["ingest"]["counts"]["quarantined"] == 3
    reg = summary["registered"]
    assert reg["version"] == 1 and reg["champion"] is True
    lines = definition.summary_lines(summary)
    assert any(line.startswith("als: precision@10") for line in lines) and any("gate:" in x for x in lines)
    registry = ModelRegistry(Store(str(tmp_path / "root" / "models")))
    meta = registry.get("shop_events", 1).metadata
    assert meta.flavor == "recommender" and meta.problem_type == "recommendation"
    recs = meta.extra["recs"]
    assert set(recs["models"]) == {"popularity", "item_item", "als"}
    assert meta.estimator == max(recs["models"], key=lambda k: recs["models"][k]["ndcg@10"])
    assert meta.metrics["ndcg@10"] == recs["models"][meta.estimator]["ndcg@10"]
    assert meta.metrics["baseline_ndcg@10"] == recs["models"]["popularity"]["ndcg@10"]
    assert recs["events"]["used"] == good  # the quarantined rows never reached training
    assert recs["split"]["train_events"] + recs["split"]["test_events"] == good
    assert {"recs.npz", "evaluation.json"} <= set(meta.files)
    if meta.estimator == "als":  # 300 items > threshold 100: the catalogue index, with its recall measured
        assert "items.faiss" in meta.files and 0.5 < recs["ann"]["recall@10"] <= 1.0
    # the same data again: the challenger equals the champion refit on the same split, so it is not promoted
    run2 = run_local("recommender", {**args, "run_id": "run-2"}, tmp_path / "runs")
    summary2 = definition.summarize(run2, settings)
    assert summary2["status"] == "SUCCESS", summary2["error"]
    assert summary2["registered"]["version"] == 2 and summary2["registered"]["champion"] is False
    assert "does not beat champion v1" in summary2["registered"]["gate_reason"]
    assert registry.champion_version("shop_events") == 1


def test_recommender_preflight_refuses_a_table_that_is_not_events(tmp_path):
    settings = Settings(root=str(tmp_path / "root"))
    definition = get_pipeline("recommender")
    churn = parse_spec({"name": "c", "entity_key": "id", "target": "y", "problem_type": "binary",
                        "columns": {"id": {"type": "string"}, "y": {"type": "boolean"}}})
    with pytest.raises(UsageError, match="problem_type must be recommendation"):
        definition.arguments(churn, {}, settings, local=True)
    with pytest.raises(UsageError, match="recs_config"):
        definition.arguments(parse_spec(RECS_SPEC), {"recs_config": {"k": 0}}, settings, local=True)
