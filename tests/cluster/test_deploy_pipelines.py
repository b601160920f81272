"""Cluster runs connect to their identity and data (issue 11, finding 4).

The compiled IR's kubernetes platform spec (what the KFP driver turns into each step's pod) and the run
the real ``kfp.Client`` sends: every step mounts the namespace's settings and reads only the Secrets it
needs; the run executes as the pipeline service account in the pipeline namespace with its pipeline root
under the skiff root. The client talks HTTP to a recording server on 127.0.0.1 (no KFP backend runs
here), so what is checked is the request body KFP's API server would receive.
"""


import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from pipelines import runner
from skiff import cluster
from skiff.config import load_settings

STEPS = {"ingest-op", "validate", "features", "train", "evaluate", "register", "validation-blocked",
         "track-final-status-op"}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = runner.compile_pipeline("tabular", tmp_path_factory.mktemp("ir") / "tabular.yaml")
    pipeline_spec, platform_spec = yaml.safe_load_all(out.read_text())
    return pipeline_spec, platform_spec


def _executors(platform_spec: dict) -> dict[str, dict]:
    return platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_every_step_reads_the_namespace_settings(compiled):
    pipeline_spec, platform_spec = compiled
    executors = _executors(platform_spec)
    assert set(executors) == set(pipeline_spec["deploymentSpec"]["executors"]) == {f"exec-{s}" for s in STEPS}
    for name, config in executors.items():
        (volume,) = [v for v in config["configMapAsVolume"] if v["configMapName"] == cluster.SETTINGS_CONFIG_MAP]
        assert volume["configMapName"] == cluster.SETTINGS_CONFIG_MAP == "skiff-settings", name
        assert volume["mountPath"] == cluster.SETTINGS_MOUNT and volume["optional"] is False, name
        (env,) = [e for e in config["configMapAsEnv"] if e["configMapName"] == cluster.SETTINGS_CONFIG_MAP]
        assert env["configMapName"] == cluster.SETTINGS_CONFIG_MAP
        assert env["keyToEnv"] == [{"configMapKey": cluster.SETTINGS_PATH_KEY, "envVar": "SKIFF_CONFIG"}], name
        assert config["podMetadata"]["labels"] == {"azure.workload.identity/use": "true"}, name


def test_only_the_steps_that_need_a_secret_read_it(compiled):
    _, platform_spec = compiled
    secrets = {
        name.removeprefix("exec-"): [
            (s["secretName"], k["secretKey"], k["envVar"], s["optional"])
            for s in config.get("secretAsEnv", [])
            for k in s["keyToEnv"]
        ]
        for name, config in _executors(platform_spec).items()
    }
    assert secrets.pop("features") == [("skiff-redis", "connection-string", "SKIFF_REDIS", True)]
    mlflow = [(s.name, s.key, s.env, True) for s in cluster.MLFLOW_SECRETS]
    assert secrets.pop("register") == [("skiff-database", "url", "SKIFF_DATABASE_URL", True), *mlflow]
    assert secrets.pop("validation-blocked") == mlflow
    assert secrets.pop("track-final-status-op") == mlflow
    assert all(not s for s in secrets.values()), secrets
    # the names are the core's (the chart's defaults are held to the same, tests/unit/test_helm.py)
    assert (cluster.REDIS_SECRET.name, cluster.DATABASE_SECRET.name) == ("skiff-redis", "skiff-database")


def test_the_step_env_never_comes_from_the_container_spec(compiled):
    """kfp.local applies a container's env to local runs: SKIFF_CONFIG there would point local steps at a
    file only the cluster has, so it comes from the platform spec (the ConfigMap) alone."""
    pipeline_spec, _ = compiled
    for name, executor in pipeline_spec["deploymentSpec"]["executors"].items():
        names = {e["name"] for e in executor["container"].get("env", [])}
        assert not names & {"SKIFF_CONFIG", "SKIFF_REDIS", "SKIFF_DATABASE_URL"}, name


class _KfpApi(BaseHTTPRequestHandler):
    """The two calls of KFP's v2beta1 API a submission makes: find the experiment, create the run."""

    requests: list[tuple[str, str, dict]] = []

    def _reply(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.requests.append(("GET", self.path, {}))
        self._reply({"experiments": [{"experiment_id": "e1", "display_name": "skiff"}], "total_size": 1})

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        self.requests.append(("POST", self.path, body))
        self._reply({"run_id": "run-1", "experiment_id": "e1"})

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def kfp_api():
    _KfpApi.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KfpApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", _KfpApi.requests
    server.shutdown()
    server.server_close()


ARGS = {"spec": "{}", "lake_uri": "s3://skiff-prod/skiff/lake", "registry_uri": "s3://skiff-prod/skiff/models",
        "feature_repo": "feature_repo", "feast_dir": "s3://skiff-prod/skiff/feast"}


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_a_submitted_run_runs_as_the_pipeline_service_account(kfp_api, skiff_env, monkeypatch):
    host, requests = kfp_api
    monkeypatch.setenv("SKIFF_ROOT", "s3://skiff-prod/skiff")
    settings = load_settings()
    result = runner.submit("tabular", ARGS, host, "skiff", "nightly", target=runner.RunTarget.from_settings(settings))
    assert result["run_id"] == "run-1" and result["service_account"] == "skiff-pipeline"

    (find,) = [r for r in requests if r[0] == "GET" and "/experiments" in r[1]]
    assert find[1].endswith("&namespace=skiff")  # the experiment is the profile namespace's
    (run,) = [body for method, path, body in requests if method == "POST" and path.endswith("/runs")]
    assert run["service_account"] == cluster.PIPELINE_SERVICE_ACCOUNT == "skiff-pipeline"
    assert run["runtime_config"]["pipeline_root"] == "s3://skiff-prod/skiff/artifacts"
    assert run["runtime_config"]["parameters"]["feast_dir"] == "s3://skiff-prod/skiff/feast"
    sent = run["pipeline_spec"]
    assert set(sent) == {"pipeline_spec", "platform_spec"}  # the Secrets and ConfigMaps travel with the run
    assert "exec-features" in sent["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_standalone_mode_leaves_the_namespace_to_kfp(kfp_api, skiff_env, monkeypatch):
    host, requests = kfp_api
    monkeypatch.setenv("SKIFF_KFP_NAMESPACE", "")
    monkeypatch.setenv("SKIFF_KFP_SERVICE_ACCOUNT", "skiff-pipeline-runner")
    runner.submit("tabular", ARGS, host, target=runner.RunTarget.from_settings(load_settings()))
    (find,) = [r for r in requests if r[0] == "GET" and "/experiments" in r[1]]
    assert "namespace=skiff" not in find[1] and not find[1].endswith("namespace=skiff")
    (run,) = [body for method, path, body in requests if method == "POST"]
    assert run["service_account"] == "skiff-pipeline-runner"
    assert "pipeline_root" not in run["runtime_config"]  # a local root: KFP's default artifact store


def test_a_run_without_a_service_account_is_refused(skiff_env):
    from skiff.errors import UsageError

    with pytest.raises(UsageError, match="pipeline service account"):
        runner.submit("tabular", ARGS, "http://127.0.0.1:9", target=runner.RunTarget(service_account=""))


def test_submit_without_a_target_takes_the_settings(kfp_api, skiff_env, monkeypatch):
    host, requests = kfp_api
    monkeypatch.setenv("SKIFF_KFP_SERVICE_ACCOUNT", "custom-runner")
    with pytest.warns(FutureWarning):
        runner.submit("tabular", ARGS, host)
    (run,) = [body for method, path, body in requests if method == "POST"]
    assert run["service_account"] == "custom-runner"


def test_a_local_run_ignores_the_cluster_wiring(tmp_path, monkeypatch):
    """kfp.local runs the same wired tasks with the local environment: no cluster path or Secret leaks in.
    (This module has no ``from __future__ import annotations``: KFP reads the component's real annotations.)"""
    from kfp import dsl, local

    from pipelines.cluster_wiring import in_namespace

    monkeypatch.delenv("SKIFF_CONFIG", raising=False)

    @dsl.component(install_kfp_package=False)
    def environment() -> str:
        import json
        import os

        return json.dumps({k: os.environ.get(k) for k in ("SKIFF_CONFIG", "SKIFF_REDIS", "SKIFF_DATABASE_URL")})

    @dsl.pipeline
    def wired() -> str:
        task = environment()
        in_namespace(task, "features")
        return task.output

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path))
    assert json.loads(wired().output) == {"SKIFF_CONFIG": None, "SKIFF_REDIS": None, "SKIFF_DATABASE_URL": None}


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_skiff_run_host_submits_as_the_settings_name_it(kfp_api, skiff_env, monkeypatch, capsys):
    """The face: ``skiff run tabular --host`` passes the settings' namespace, account and pipeline root."""
    from skiff.cli import main
    from tests.conftest import REPO

    host, requests = kfp_api
    monkeypatch.setenv("SKIFF_ROOT", "s3://skiff-prod/skiff")
    monkeypatch.setenv("SKIFF_KFP_NAMESPACE", "team-a")
    code = main(["run", "tabular", "--spec", str(REPO / "examples/churn.yaml"), "--host", host, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["service_account"] == "skiff-pipeline"  # stdout is the JSON alone
    assert "Run details:" in err  # kfp's links go to stderr
    (find,) = [r for r in requests if r[0] == "GET" and "/experiments" in r[1]]
    assert find[1].endswith("&namespace=team-a")
    (run,) = [body for method, path, body in requests if method == "POST" and path.endswith("/runs")]
    assert run["service_account"] == "skiff-pipeline"
    assert run["runtime_config"]["pipeline_root"] == "s3://skiff-prod/skiff/artifacts"
    assert run["runtime_config"]["parameters"]["registry_uri"] == "s3://skiff-prod/skiff/models"
