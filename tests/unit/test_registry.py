import json
import multiprocessing as mp

import pytest

from skiff.cli import main
from skiff.errors import NotFoundError, UsageError
from skiff.registry import ModelRegistry, VersionMetadata
from skiff.storage import Store


def _reg(path) -> ModelRegistry:
    return ModelRegistry(Store(str(path)))


def _register_one(root: str, tag: int) -> int:
    return _reg(root).register("churn", {"tag": tag}, {"estimator": "x"}).version


def test_register_read_and_immutable_files(tmp_path):
    reg = _reg(tmp_path)
    report = tmp_path / "r.html"
    report.write_text("<html></html>")
    mv = reg.register("churn", {"w": [1, 2]}, {"metrics": {"roc_auc": 0.84}, "estimator": "lr"},
                      files={"report.html": report})
    assert mv.version == 1 and not mv.champion
    assert reg.load_model("churn", 1) == {"w": [1, 2]}
    assert set(mv.metadata.files) == {"model.joblib", "metadata.json", "MODEL_CARD.md", "report.html"}
    assert mv.metadata.code_version["skiff"]
    card = (tmp_path / "churn" / "1" / "MODEL_CARD.md").read_text()
    assert "roc_auc | 0.8400" in card
    assert reg.register("churn", {"w": 3}, {}).version == 2
    assert reg.get("churn").version == 2  # no champion: latest
    reg.set_champion("churn", 1, "first gate")
    assert reg.get("churn").version == 1 and reg.get("churn", "latest").version == 2
    assert [h["version"] for h in reg.champion_history("churn")] == [1]


def test_failed_registration_leaves_nothing(tmp_path):
    reg = _reg(tmp_path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError):
        reg.register("churn", Unpicklable(), {})
    assert reg.version_numbers("churn") == []
    # no version and no staging folder; only the (hidden) lock file of the model's writers may remain
    assert [p.name for p in (tmp_path / "churn").iterdir() if not p.name.endswith(".lock")] == []


def test_concurrent_registrations_get_distinct_versions(tmp_path):
    with mp.get_context("spawn").Pool(4) as pool:
        versions = pool.starmap(_register_one, [(str(tmp_path), i) for i in range(8)])
    assert sorted(versions) == list(range(1, 9))
    reg = _reg(tmp_path)
    tags = sorted(reg.load_model("churn", v)["tag"] for v in versions)
    assert tags == list(range(8))


def test_errors(tmp_path):
    reg = _reg(tmp_path)
    with pytest.raises(NotFoundError, match="no versions"):
        reg.get("nope")
    reg.register("m", 1, {})
    with pytest.raises(NotFoundError, match="no version 7"):
        reg.get("m", 7)
    with pytest.raises(NotFoundError, match="no champion"):
        reg.get("m", "champion")
    with pytest.raises(UsageError):
        reg.get("m", "abc")
    with pytest.raises(UsageError):
        reg.register("bad name", 1, {})
    with pytest.raises(UsageError):
        reg.register("m", 1, {}, files={"../x": tmp_path})
    with pytest.raises(Exception, match="extra"):
        VersionMetadata.model_validate({"name": "m", "bogus": 1})


def test_models_cli(skiff_env, capsys):
    reg = ModelRegistry(Store(str(skiff_env / ".skiff" / "models")))
    reg.register("churn", 1, {"metrics": {"roc_auc": 0.8}, "estimator": "lr"})
    assert main(["models", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [{"name": "churn", "version": 1, "champion": False, "created_at": rows[0]["created_at"],
                     "estimator": "lr", "metrics": {"roc_auc": 0.8}}]
    assert main(["models", "set-champion", "churn", "1", "--reason", "ok"]) == 0
    capsys.readouterr()
    assert main(["models", "show", "churn", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["champion"] is True
    assert main(["models", "show", "churn", "9"]) == 2
    assert "no version 9" in capsys.readouterr().err


# -- what a version records about the gate and its inputs' rules ------------------------------------
def test_gate_metric_and_values_are_recorded_when_the_pipeline_left_metric_empty(tmp_path):
    from components.evaluate.logic import gate
    from components.register.logic import gate_record

    decision = gate({"roc_auc": 0.86, "f1": 0.7}, {"roc_auc": 0.84}, "roc_auc", margin=0.01)
    # what the evaluate step leaves on its report artifact; the pipeline's own `metric` parameter is ""
    evaluated = {"gate_metric": "roc_auc", "promote": decision.promote, "reason": decision.reason,
                 "gate": decision.record()}
    record = gate_record(evaluated, metric="", margin=0.01, promote=decision.promote, reason=decision.reason)
    mv = _reg(tmp_path).register("churn", {"w": 1}, {"gate": record})
    gate_meta = _reg(tmp_path).get("churn", mv.version).metadata.gate
    assert gate_meta["metric"] == "roc_auc"
    assert gate_meta["challenger"] == 0.86 and gate_meta["champion"] == 0.84
    assert gate_meta["margin"] == 0.01 and gate_meta["promote"] is True
    assert gate_meta["improvement"] == pytest.approx(0.02) and gate_meta["higher_is_better"] is True
    # an evaluate step that recorded nothing still gives the metric it resolved
    assert gate_record({"gate_metric": "rmse"}, metric="", margin=0.0, promote=False, reason="r")["metric"] == "rmse"


def test_no_champion_gate_record_is_json(tmp_path):
    from components.evaluate.logic import gate

    record = gate({"rmse": float("nan")}, None, "rmse").record()
    assert record["metric"] == "rmse" and record["champion"] is None and record["challenger"] is None
    json.dumps(record, allow_nan=False)


def test_input_rules_record_the_spec_rules_and_the_training_statistic():
    import pandas as pd

    from components.register.logic import input_rules
    from skiff.spec import parse_spec

    spec = parse_spec({
        "name": "meters", "entity_key": "meter_id", "target": "faulty", "problem_type": "binary",
        "columns": {
            "meter_id": {"type": "string"},
            "kwh": {"type": "float", "sentinels": [-200], "missing": "impute", "impute": "median", "min": 0},
            "seats": {"type": "integer", "missing": "impute", "impute": "mean"},
            "paper": {"type": "boolean", "true_values": ["Yes"], "false_values": ["No"], "missing": "reject"},
            "site": {"type": "category", "allowed": ["north", "south"], "description": "for people"},
            "faulty": {"type": "boolean"},
        }})
    training = pd.DataFrame({"kwh": [1.0, 2.0, 10.0], "seats": [1, 2, 4], "paper": [True, False, True],
                             "site": ["north", "south", "north"]})
    rules = input_rules(spec, ["kwh", "seats", "paper", "site"], training)
    assert rules["kwh"] == {"type": "float", "sentinels": [-200], "missing": "impute", "impute": "median",
                            "min": 0.0, "impute_value": 2.0}
    assert rules["seats"]["impute_value"] == 2  # integer mean rounded, as ingestion imputes it
    assert rules["paper"] == {"type": "boolean", "missing": "reject", "true_values": ["Yes"],
                              "false_values": ["No"]}
    assert rules["site"] == {"type": "category", "allowed": ["north", "south"]}


def test_version_metadata_is_built_without_kfp_and_round_trips_through_the_registry(tmp_path):
    import pandas as pd

    from components.register.logic import data_fingerprint, gate_record, version_metadata
    from skiff.spec import parse_spec
    from skiff.spec_text import spec_to_text

    spec = parse_spec({
        "name": "meters", "entity_key": "meter_id", "target": "faulty", "problem_type": "binary",
        "columns": {"meter_id": {"type": "string"},
                    "kwh": {"type": "float", "missing": "impute", "impute": "median"},
                    "site": {"type": "category", "allowed": ["north", "south"]},
                    "faulty": {"type": "boolean"}}})
    training = pd.DataFrame({"meter_id": ["a", "b", "c"], "kwh": [1.0, 3.0, 10.0],
                             "site": ["north", "south", "north"], "faulty": [True, False, True]})
    info = {"feature_columns": ["site", "kwh"], "estimator": "logistic_regression", "params": {"C": 1.0},
            "threshold": 0.4, "classes": [False, True], "positive_class": True, "scoring": "roc_auc",
            "cv_means": {"roc_auc": 0.8}}
    cv = pd.DataFrame({"fold": ["1", "mean"], "roc_auc": [0.8, 0.8]})
    gate = gate_record({}, metric="roc_auc", margin=0.0, promote=True, reason="no champion")
    meta = version_metadata(spec, spec_to_text(spec), info, cv, training, name="meters-model",
                            test_metrics={"roc_auc": 1}, gate=gate, partitions=["2026-01-01"],
                            feature_service="meters_v1", statistics_uri="file:///lake/stats.pb",
                            pipeline_run_id="run-7", onnx={"exact": False})

    assert meta.features == ["site", "kwh"]  # training's order, not the spec's
    assert meta.input_schema == {"site": "category", "kwh": "float"}
    assert meta.input_rules["kwh"]["impute_value"] == 3.0  # the median of the training rows
    assert meta.problem_type == "binary" and meta.target == "faulty" and meta.threshold == 0.4
    assert meta.metrics == {"roc_auc": 1.0} and isinstance(meta.metrics["roc_auc"], float)
    assert meta.cv == [{"fold": "1", "roc_auc": 0.8}, {"fold": "mean", "roc_auc": 0.8}]
    assert meta.gate == {"metric": "roc_auc", "margin": 0.0, "promote": True, "reason": "no champion"}
    assert meta.dataset == {"name": "meters", "partitions": ["2026-01-01"], "rows": 3,
                            "spec": json.loads(spec_to_text(spec))}
    assert meta.data_fingerprint == data_fingerprint(training)
    assert meta.extra == {"onnx": {"exact": False}, "cv_means": {"roc_auc": 0.8}, "positive_class": True,
                          "scoring": "roc_auc",
                          "engine": {"engine": "sklearn", "compiler": None, "reason": "no exact export"}}
    mv = _reg(tmp_path).register("meters-model", {"weights": [1]}, meta)  # what the registry keeps
    assert mv.metadata.model_dump(exclude={"version", "created_at", "code_version", "files"}) == \
        meta.model_dump(exclude={"version", "created_at", "code_version", "files"})
