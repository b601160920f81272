"""skiff run / compile: parameters, preflight errors before anything runs, and cluster submission."""

import json

import pytest
import yaml

from pipelines import runner
from skiff.cli import main
from skiff.cli.run import parse_params, pipeline_arguments
from skiff.config import load_settings
from skiff.errors import UsageError
from tests.conftest import REPO

SPEC = str(REPO / "examples" / "churn.yaml")


def test_parse_params_json_and_strings():
    assert parse_params(["a=1", "b=x", 'c={"k": [1]}', "d=true", "e="]) == {
        "a": 1, "b": "x", "c": {"k": [1]}, "d": True, "e": ""}
    with pytest.raises(UsageError, match="k=v"):
        parse_params(["novalue"])


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (["estimator=bogus"], "unknown estimator 'bogus'"),
        (['train_config={"params": {"C": 1}}'], "needs a named 'estimator'"),
        (['train_config={"estimator": "logistic_regression", "params": {"nope": 1}}'], "unknown parameter"),
        (['train_config={"cv_folds": "x"}'], "cv_folds"),
        (["colour=blue"], "unknown parameter"),
        (["margin=-1"], "margin"),
    ],
)
def test_bad_parameters_fail_before_anything_runs(skiff_env, capsys, params, message):
    argv = ["run", "tabular", "--local", "--param", f"spec={SPEC}"]
    for p in params:
        argv += ["--param", p]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (skiff_env / ".skiff" / "pipeline_runs").exists()  # nothing ran


def test_spec_problems_are_usage_errors(skiff_env, capsys):
    assert main(["run", "tabular", "--local"]) == 2
    assert "needs --param spec" in capsys.readouterr().err
    assert main(["run", "tabular", "--local", "--param", "spec=nope.yaml"]) == 2
    assert "dataset spec not found" in capsys.readouterr().err
    unlabeled = skiff_env / "feed.yaml"
    unlabeled.write_text(yaml.safe_dump({"name": "feed", "entity_key": "id", "columns": {"id": {"type": "string"}}}))
    assert main(["run", "tabular", "--local", "--param", f"spec={unlabeled}"]) == 2
    assert "no target" in capsys.readouterr().err
    assert main(["run", "tabular", "--local", "--host", "http://kfp", "--param", f"spec={SPEC}"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["run", "nope", "--param", f"spec={SPEC}"]) == 2


def test_cluster_arguments_use_the_settings_uris(skiff_env, monkeypatch):
    monkeypatch.setenv("SKIFF_ROOT", "s3://bucket/skiff")
    args = pipeline_arguments("tabular", {"spec": SPEC, "estimator": "random_forest"}, load_settings(), local=False)
    assert args["lake_uri"] == "s3://bucket/skiff/lake"
    assert args["registry_uri"] == "s3://bucket/skiff/models"
    assert args["feature_repo"] == "/app/feature_repo"
    assert args["train_config"] == {"estimator": "random_forest"}
    assert args["spec"]["sources"][0]["path"] == "data/churn.csv"  # left as the user wrote it
    assert args["run_id"].startswith("run-")


class _RecordingClient:
    """Stands in for kfp.Client (no Kubeflow Pipelines backend runs here); records the submission."""

    calls: list = []

    def __init__(self, host):
        self.host = host

    def create_run_from_pipeline_func(self, func, arguments, experiment_name, run_name, enable_caching):
        self.calls.append({"host": self.host, "func": func, "arguments": arguments,
                           "experiment": experiment_name, "run_name": run_name, "caching": enable_caching})
        return type("Run", (), {"run_id": "run-42"})()


def test_submit_sends_the_compiled_pipeline_with_arguments(skiff_env):
    args = pipeline_arguments("tabular", {"spec": SPEC}, load_settings(), local=False)
    result = runner.submit("tabular", args, "https://kfp.example.com", "churn", "nightly",
                           client_factory=_RecordingClient)
    assert result == {"run_id": "run-42", "host": "https://kfp.example.com", "experiment": "churn",
                      "pipeline": "tabular"}
    call = _RecordingClient.calls[-1]
    assert call["func"].name == "skiff-tabular" and call["caching"] is False
    assert call["arguments"]["spec"]["name"] == "churn" and call["run_name"] == "nightly"


def test_compile_writes_ir_yaml(skiff_env, capsys):
    assert main(["compile", "tabular", "-o", "out/tabular.yaml"]) == 0
    ir = yaml.safe_load((skiff_env / "out" / "tabular.yaml").read_text())
    assert ir["pipelineInfo"]["name"] == "skiff-tabular"
    assert set(ir["root"]["inputDefinitions"]["parameters"]) >= {"spec", "lake_uri", "registry_uri", "margin"}
    assert json.dumps(ir)  # plain data
