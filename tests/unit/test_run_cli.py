"""skiff run / compile: parameters, preflight errors before anything runs, and cluster submission."""

import json

import pytest
import yaml

from pipelines import runner
from pipelines.definitions import TABULAR
from skiff.cli import main
from skiff.cli.run import parse_params
from skiff.config import load_settings
from skiff.errors import UsageError
from skiff.spec import load_spec
from tests.conftest import REPO

SPEC = str(REPO / "examples" / "churn.yaml")


def pipeline_arguments(params, local, spec=SPEC):
    """The tabular run's arguments as ``skiff run`` and the REST API build them."""
    return TABULAR.arguments(load_spec(spec), params, load_settings(), local=local)


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
        (["train_config=[1]"], "pipeline parameter 'train_config' must be a JSON object"),
        (["warn_only=maybe"], "pipeline parameter 'warn_only' must be a JSON boolean"),
    ],
)
def test_bad_parameters_fail_before_anything_runs(skiff_env, capsys, params, message):
    argv = ["run", "tabular", "--local", "--param", f"spec={SPEC}"]
    for p in params:
        argv += ["--param", p]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (skiff_env / ".skiff" / "pipeline_runs").exists()  # nothing ran


def test_the_spec_comes_from_spec_dataset_or_the_param_alias(skiff_env, capsys):
    """``--spec FILE``, ``--dataset NAME`` and ``--param spec=FILE`` name the same spec (the bogus
    estimator is found only once the spec is read, before anything runs)."""
    (skiff_env / "datasets").mkdir()
    (skiff_env / "datasets" / "churn.yaml").write_text((REPO / "examples" / "churn.yaml").read_text())
    for how in (["--spec", SPEC], ["--dataset", "churn"], ["--param", f"spec={SPEC}"],
                ["--dataset", "churn", "--spec", SPEC]):
        assert main(["run", "tabular", "--local", *how, "--param", "estimator=bogus"]) == 2, how
        assert "unknown estimator 'bogus' for binary" in capsys.readouterr().err, how
    assert main(["run", "tabular", "--local", "--spec", SPEC, "--param", f"spec={SPEC}"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["run", "tabular", "--local", "--dataset", "orders", "--spec", SPEC]) == 2
    assert "describes dataset 'churn', not 'orders'" in capsys.readouterr().err
    assert main(["run", "tabular", "--local", "--dataset", "nope"]) == 2
    assert "dataset spec not found" in capsys.readouterr().err
    assert not (skiff_env / ".skiff" / "pipeline_runs").exists()  # nothing ran


def test_skiff_run_parses_the_spec_once(skiff_env, capsys, monkeypatch):
    import skiff.spec
    import skiff.spec_text

    calls = []
    for module in (skiff.spec, skiff.spec_text):
        real = module.parse_spec
        monkeypatch.setattr(module, "parse_spec", lambda raw, *a, _real=real, **kw: calls.append(1) or _real(raw, *a, **kw))
    assert main(["run", "tabular", "--local", "--spec", SPEC, "--param", "estimator=bogus"]) == 2
    assert "unknown estimator" in capsys.readouterr().err  # preflight ran, on the one parsed spec
    assert len(calls) == 1


def test_spec_problems_are_usage_errors(skiff_env, capsys):
    assert main(["run", "tabular", "--local"]) == 2
    assert "give --dataset NAME or --spec FILE" in capsys.readouterr().err
    assert main(["run", "tabular", "--local", "--param", "spec=nope.yaml"]) == 2
    assert "dataset spec not found" in capsys.readouterr().err
    unlabeled = skiff_env / "feed.yaml"
    unlabeled.write_text(yaml.safe_dump({"name": "feed", "entity_key": "id", "columns": {"id": {"type": "string"}}}))
    assert main(["run", "tabular", "--local", "--param", f"spec={unlabeled}"]) == 2
    assert "no target" in capsys.readouterr().err
    assert main(["run", "tabular", "--local", "--host", "http://kfp", "--param", f"spec={SPEC}"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["run", "nope", "--param", f"spec={SPEC}"]) == 2
    assert "unknown pipeline 'nope'; known: ['image', 'recommender', 'tabular']" in capsys.readouterr().err


def test_cluster_arguments_use_the_settings_uris(skiff_env, monkeypatch):
    monkeypatch.setenv("SKIFF_ROOT", "s3://bucket/skiff")
    args = pipeline_arguments({"estimator": "random_forest"}, local=False)
    assert args["lake_uri"] == "s3://bucket/skiff/lake"
    assert args["registry_uri"] == "s3://bucket/skiff/models"
    assert args["feature_repo"] == "/app/feature_repo"
    assert args["train_config"] == {"estimator": "random_forest"}
    assert json.loads(args["spec"])["sources"][0]["path"] == "data/churn.csv"  # left as the user wrote it
    assert args["run_id"].startswith("run-")


class _RecordingClient:
    """Stands in for kfp.Client (no Kubeflow Pipelines backend runs here); records the submission."""

    calls: list = []

    def __init__(self, host, namespace=None):
        self.host, self.namespace = host, namespace

    def create_run_from_pipeline_func(self, func, arguments, experiment_name, run_name, enable_caching, **run):
        self.calls.append({"host": self.host, "func": func, "arguments": arguments,
                           "experiment": experiment_name, "run_name": run_name, "caching": enable_caching,
                           "namespace": self.namespace, **run})
        return type("Run", (), {"run_id": "run-42"})()


def test_submit_sends_the_compiled_pipeline_with_arguments(skiff_env):
    args = pipeline_arguments({}, local=False)
    result = runner.submit("tabular", args, "https://kfp.example.com", "churn", "nightly",
                           client_factory=_RecordingClient)
    assert result == {"run_id": "run-42", "host": "https://kfp.example.com", "experiment": "churn",
                      "pipeline": "tabular", "namespace": "skiff", "service_account": "skiff-pipeline"}
    call = _RecordingClient.calls[-1]
    assert call["func"].name == "skiff-tabular" and call["caching"] is False
    assert json.loads(call["arguments"]["spec"])["name"] == "churn" and call["run_name"] == "nightly"


def test_compile_writes_ir_yaml(skiff_env, capsys):
    assert main(["compile", "tabular", "-o", "out/tabular.yaml"]) == 0
    ir = next(yaml.safe_load_all((skiff_env / "out" / "tabular.yaml").read_text()))
    assert ir["pipelineInfo"]["name"] == "skiff-tabular"
    assert set(ir["root"]["inputDefinitions"]["parameters"]) >= {"spec", "lake_uri", "registry_uri", "margin"}
    assert json.dumps(ir)  # plain data


#: Columns deliberately not in alphabetical order (nor in any order a hash or a sort would give).
ORDERED = {
    "name": "orders",
    "entity_key": "order_id",
    "target": "returned",
    "problem_type": "binary",
    "columns": {
        "order_id": {"type": "string", "required": True},
        "zone": {"type": "category", "allowed": ["north", "south"]},
        "amount": {"type": "float", "min": 0},
        "weight": {"type": "float"},
        "items": {"type": "integer"},
        "express": {"type": "boolean"},
        "returned": {"type": "boolean", "required": True},
    },
}
ORDER = ["zone", "amount", "weight", "items", "express"]


def _as_cluster_parameter(value):
    """A run argument as a Kubeflow Pipelines backend receives it: a protobuf Value in the run's
    runtime config (kfp.Client encodes arguments this way), read back as JSON."""
    from google.protobuf import json_format, struct_pb2

    return json_format.MessageToDict(json_format.ParseDict(value, struct_pb2.Value()))


def test_spec_parameter_keeps_the_column_order_across_runs(skiff_env, tmp_path):
    from components.features.logic import feature_service_name
    from skiff.spec import spec_fingerprint
    from skiff.spec_text import spec_from_text

    path = tmp_path / "orders.yaml"
    path.write_text(yaml.safe_dump(ORDERED, sort_keys=False))
    ir = next(yaml.safe_load_all(runner.compile_pipeline("tabular", tmp_path / "t.yaml").read_text()))
    # the spec is text in the IR: a dict parameter would be a protobuf Struct, whose keys come back in any order
    assert ir["root"]["inputDefinitions"]["parameters"]["spec"]["parameterType"] == "STRING"
    for name, comp in ir["components"].items():
        spec_param = comp.get("inputDefinitions", {}).get("parameters", {}).get("spec")
        assert spec_param is None or spec_param["parameterType"] == "STRING", name

    seen = []
    for local in (False, True, False):  # two cluster submissions and a local run
        args = pipeline_arguments({}, local=local, spec=path)
        spec = spec_from_text(_as_cluster_parameter(args["spec"]))
        seen.append((spec.feature_columns, feature_service_name(spec), spec_fingerprint(spec)))
    assert seen[0][0] == ORDER
    assert seen[0] == seen[1] == seen[2]


def test_spec_text_is_the_spec_in_its_own_order():
    from skiff.spec import parse_spec
    from skiff.spec_text import spec_from_text, spec_to_text

    text = spec_to_text(parse_spec(ORDERED))
    assert text == spec_to_text(parse_spec(ORDERED))  # deterministic: the same spec, the same text
    assert list(json.loads(text)["columns"]) == ["order_id", *ORDER, "returned"]
    assert spec_from_text(text).feature_columns == ORDER
    reordered = {**ORDERED, "columns": dict(reversed(list(ORDERED["columns"].items())))}
    assert spec_from_text(spec_to_text(reordered)).feature_columns == list(reversed(ORDER))


@pytest.mark.parametrize(("text", "message"), [("{not json", "not the JSON text"), ("[1]", "is a JSON object"),
                                               ('{"name": "x"}', "invalid dataset spec")])
def test_spec_text_errors_name_the_parameter(text, message):
    from skiff.errors import SpecError
    from skiff.spec_text import spec_from_text

    with pytest.raises(SpecError, match=message) as info:
        spec_from_text(text)
    assert "pipeline parameter 'spec'" in str(info.value)


KFP_LOG = """\
2026-12-02 17:28:19,797 INFO root: Executing task 'ingest-op'
2026-12-02 17:28:19,797 INFO root: Streamed logs:

    [KFP Executor 2026-12-02 17:28:19,882 INFO]: Looking for component `ingest_op`
    Traceback (most recent call last):
      File "/x/executor.py", line 453, in execute
        result = self.func(**func_kwargs)
    KeyError: 'returned'

    The above exception was the direct cause of the following exception:

    Traceback (most recent call last):
      File "/x/ephemeral_component.py", line 9, in ingest_op
        raise InputError("...") from e
    skiff.errors.InputError: data.csv: required column 'returned' missing
    (columns found: id, amount)

2026-12-02 17:28:19,903 ERROR root: Task 'ingest-op' finished with status FAILURE
"""


def test_failed_step_error_is_the_steps_own_exception():
    assert runner.failed_step_error(KFP_LOG, "ingest-op") == (
        "skiff.errors.InputError: data.csv: required column 'returned' missing\n(columns found: id, amount)")
    assert runner.failed_step_error(KFP_LOG, "train") is None  # a step that did not run left nothing
    killed = ("Executing task 'train'\n    loading 10 GB\n    Killed\n"
              "2026-12-02 17:28:19,903 ERROR root: Task 'train' finished with status FAILURE\n")
    assert runner.failed_step_error(killed, "train") == "loading 10 GB\nKilled"  # no traceback: its last lines
