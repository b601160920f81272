"""The serving containers' one entry point (`python -m serving predictor|transformer`): the command lines
the rendered ServingRuntime and InferenceService run, with what KServe appends, become the server
options they mean; serving never starts skiff's CLI."""

import re
import subprocess
import sys

import pytest

from serving.deploy.gitops import EnvironmentConfig, ModelDeployment
from serving.deploy.isvc import RuntimeImages, build_inference_service, build_serving_runtime, to_dict
from serving.runtime.entrypoint import options_from_args
from serving.runtime.server import ServerOptions
from skiff.errors import UsageError
from skiff.registry import VersionMetadata
from tests.conftest import REPO

ENV = EnvironmentConfig(name="prod", namespace="skiff", registry="s3://bucket/models", ingress_domain="example.com",
                        feature_server_url="http://feast:6566")
IMAGES = RuntimeImages(predictor="img", gpu_predictor="img-gpu", transformer="img")


def _meta(**kw) -> VersionMetadata:
    return VersionMetadata(name="churn", version=3, flavor="sklearn", features=["usage"],
                           input_schema={"usage": "float"}, problem_type="binary", **kw)


def test_predictor_container_command_line_serves_the_version_on_all_interfaces():
    runtime = to_dict(build_serving_runtime(ENV, "sklearn", IMAGES))["spec"]["containers"][0]
    isvc = to_dict(build_inference_service(ENV, ModelDeployment(name="churn", version=3), _meta(),
                                           registry_uri=ENV.registry, images=IMAGES))
    assert runtime["command"] == ["python", "-m", "serving", "predictor"]
    # KServe concatenates the runtime's arguments and the InferenceService's
    argv = runtime["command"][3:] + runtime["args"] + isvc["spec"]["predictor"]["model"]["args"]
    options, root, ignored = options_from_args(argv)
    assert options == ServerOptions(name="churn", version="3", host="0.0.0.0", port=8080)
    assert (root, ignored) == (None, [])


def test_transformer_container_command_line_with_what_kserve_appends():
    isvc = to_dict(build_inference_service(ENV, ModelDeployment(name="churn", version=3),
                                           _meta(feature_service="churn_fs"), registry_uri=ENV.registry,
                                           images=IMAGES))
    c = isvc["spec"]["transformer"]["containers"][0]
    assert c["command"] == ["python", "-m", "serving", "transformer"]
    kserve = ["--model_name", "churn", "--predictor_host", "churn-predictor.skiff", "--http_port", "8081",
              "--workers", "1"]
    options, _, ignored = options_from_args(c["command"][3:] + c["args"] + kserve)
    assert options == ServerOptions(name="churn", version="3", host="0.0.0.0", port=8081, with_features=True,
                                    predictor_host="churn-predictor.skiff", feature_service="churn_fs",
                                    feature_server_url="http://feast:6566", served_name="churn")
    assert ignored == ["--workers", "1"]


def test_local_transformer_without_a_predictor_host_scores_in_process():
    options, root, _ = options_from_args(["transformer", "--model", "churn", "--root", "/tmp/r", "--host",
                                          "127.0.0.1", "--port", "9000", "--engine", "sklearn"])
    assert options.with_features and options.predictor_host is None and options.engine == "sklearn"
    assert (options.host, options.port, root) == ("127.0.0.1", 9000, "/tmp/r")


def test_predictor_refuses_unknown_arguments(capsys):
    with pytest.raises(SystemExit) as e:
        options_from_args(["predictor", "churn", "--with-features"])
    assert e.value.code == 2 and "unrecognized arguments: --with-features" in capsys.readouterr().err


def test_a_predictor_host_needs_the_transformer():
    with pytest.raises(UsageError, match="--predictor-host is for the feature transformer"):
        ServerOptions(name="churn", predictor_host="h:1")


def test_python_dash_m_serving_is_the_entry_point():
    r = subprocess.run([sys.executable, "-m", "serving", "--help"], capture_output=True, text=True, cwd=REPO,
                       timeout=60)
    assert r.returncode == 0 and "predictor|transformer" in r.stdout


def test_serving_never_starts_the_cli():
    """Serving starts servers through its own entry point; `python -m skiff` in a subprocess is a face."""
    cli = re.compile(r"""["']-m["']\s*,\s*["']skiff["']|python -m skiff\b""")
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "serving").rglob("*.py") if cli.search(p.read_text())]
    assert offenders == []
