"""The REST API over a real registry, lake, GitOps environments and rollout state in a tmp folder:
auth and scopes, every error mapping, promote/rollback file edits, drift results, pipeline runs
(a local one through kfp.local that fails in its first step; a cluster submission through a recording
client), and one real uvicorn server started by ``skiff api``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from sklearn.dummy import DummyClassifier

from serving.deploy.gitops import Environments
from serving.rollout.store import Decision, RolloutState, RolloutStore
from skiff.api import create_app
from skiff.api.auth import ADMIN_ENV, READ_ENV, TokenSet, hash_token
from skiff.config import load_settings
from skiff.lake import Lake
from skiff.registry import ModelRegistry
from skiff.rollout_policy import RolloutPolicy
from skiff.storage import Store
from tests.conftest import REPO, wait_until_ready

ADMIN, READER = "admin-token-for-tests", "read-token-for-tests"
A = {"Authorization": f"Bearer {ADMIN}"}
R = {"Authorization": f"Bearer {READER}"}
V1 = "/api/v1"

ENV_YAML = """\
# {name}: owned by the platform team
name: {name}
namespace: skiff
registry: s3://bucket/skiff/models
ingress_domain: models.example.com
"""
MODEL_YAML = """\
# churn in prod: owned by the churn team
name: churn
version: 1   # first release
history:
  - version: 1
    action: promote
    reason: first
    at: "2026-01-01T00:00:00+00:00"
"""


class _RecordingClient:
    """Stands in for kfp.Client (no Kubeflow Pipelines backend runs here); records the submission."""

    calls: list = []

    def __init__(self, host, namespace=None):
        self.host, self.namespace = host, namespace

    def create_run_from_pipeline_func(self, func, arguments, experiment_name, run_name, enable_caching, **run):
        self.calls.append({"host": self.host, "arguments": arguments, "experiment": experiment_name})
        return type("Run", (), {"run_id": "kfp-run-1"})()


def _validation(lake: Lake, date: str, *, drifted: bool, blocking: bool) -> None:
    parts = ("validation", "churn", f"ingest_date={date}")
    anomalies = [{"feature": "tenure", "anomaly": "FLOAT_TYPE_BIG_FLOAT", "short": "Out-of-range values",
                  "description": "values above 120", "severity": "error" if blocking else "warning"}]
    doc = {
        "dataset": "churn", "date": date, "previous_date": "2026-11-01" if date != "2026-11-01" else None,
        "status": "failed" if blocking else "passed", "num_examples": 500, "schema_inferred": False,
        "anomalies": anomalies,
        "drift": {"MonthlyCharges": {"measure": "jensen_shannon_divergence", "value": 0.31 if drifted else 0.02,
                                     "threshold": 0.1, "drifted": drifted},
                  "Contract": {"measure": "l_infinity", "value": 0.01, "threshold": 0.1, "drifted": False}},
        "notes": [], "passed": not blocking,  # the computed fields the runner also writes
    }
    lake.store.write_json(doc, *parts, "result.json")
    lake.store.write_text(f"<html><body>report {date}</body></html>", *parts, "report.html")


@pytest.fixture
def world(skiff_env):
    settings = load_settings()
    reg = ModelRegistry.from_settings(settings)
    model = DummyClassifier().fit([[0], [1]], [0, 1])
    reg.register("churn", model, {"gate": {"promote": True, "reason": "first model"}})
    reg.register("churn", model, {"gate": {"promote": True, "reason": "beat v1"}})
    reg.register("churn", model, {"gate": {"promote": False, "reason": "roc_auc 0.71 < champion 0.80"}})
    root = skiff_env / "infra/environments"
    for env in ("dev", "prod"):
        (root / env / "models").mkdir(parents=True)
        (root / env / "environment.yaml").write_text(ENV_YAML.format(name=env))
    (root / "prod/models/churn.yaml").write_text(MODEL_YAML)
    lake = Lake.from_settings(settings)
    _validation(lake, "2026-11-01", drifted=False, blocking=False)
    _validation(lake, "2026-11-02", drifted=True, blocking=True)
    tokens = TokenSet.of(admin=[hash_token(ADMIN)], read=[hash_token(READER)])
    _RecordingClient.calls = []
    app = create_app(settings, tokens=tokens, environments=root, kfp_client_factory=_RecordingClient)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, reg, Environments(root), settings


def _error(resp: httpx.Response, status: int, error: str) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["error"] == error, body
    return body


# -- auth ----------------------------------------------------------------------------------------------
def test_auth_missing_wrong_read_only_and_admin(world):
    client, reg, *_ = world
    assert client.get("/healthz").json()["status"] == "ok"  # no token needed
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {ADMIN}"},
                    {"Authorization": f"Bearer {hash_token(ADMIN)}"}):
        resp = client.get(f"{V1}/models", headers=headers)
        _error(resp, 401, "Unauthorized")
        assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert client.get(f"{V1}/models", headers=R).status_code == 200
    body = _error(client.post(f"{V1}/models/churn/champion", json={"version": 2, "reason": "x"}, headers=R),
                  403, "Forbidden")
    assert "read-only" in body["message"]
    assert reg.champion_version("churn") is None  # nothing changed
    # the docs are served and describe the bearer scheme
    spec = client.get("/openapi.json").json()
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    assert client.get("/docs").status_code == 200


# -- models --------------------------------------------------------------------------------------------
def test_models_versions_and_champion(world):
    client, reg, *_ = world
    assert client.get(f"{V1}/models", headers=R).json() == [
        {"name": "churn", "versions": [1, 2, 3], "latest": 3, "champion": None}]
    versions = client.get(f"{V1}/models/churn/versions", headers=R).json()
    assert [v["version"] for v in versions] == [1, 2, 3]
    assert versions[2]["metadata"]["gate"]["reason"] == "roc_auc 0.71 < champion 0.80"
    assert client.get(f"{V1}/models/churn/versions/latest", headers=R).json()["version"] == 3
    _error(client.get(f"{V1}/models/churn/versions/champion", headers=R), 404, "NotFoundError")

    resp = client.post(f"{V1}/models/churn/champion", json={"version": 2, "reason": "manual pick"}, headers=A)
    assert resp.status_code == 200 and resp.json()["previous"] is None
    assert reg.champion_version("churn") == 2
    got = client.get(f"{V1}/models/churn/versions/champion", headers=R).json()
    assert (got["version"], got["champion"]) == (2, True)
    hist = client.get(f"{V1}/models/churn/champion/history", headers=R).json()
    assert [(h["version"], h["reason"]) for h in hist] == [(2, "manual pick")]


def test_model_errors_map_to_status_codes(world):
    client, reg, *_ = world
    body = _error(client.get(f"{V1}/models/nope/versions", headers=R), 404, "NotFoundError")
    assert "nope" in body["message"]
    _error(client.get(f"{V1}/models/churn/versions/9", headers=R), 404, "NotFoundError")
    body = _error(client.get(f"{V1}/models/churn/versions/first", headers=R), 400, "UsageError")
    assert "'latest' or 'champion'" in body["message"]
    _error(client.post(f"{V1}/models/churn/champion", json={"version": 9, "reason": "x"}, headers=A),
           404, "NotFoundError")
    body = _error(client.post(f"{V1}/models/churn/champion", json={"version": "two", "reason": "x"}, headers=A),
                  422, "RequestValidationError")
    assert "body.version" in body["message"]
    body = _error(client.post(f"{V1}/models/churn/champion", json={"version": 2, "reason": "x", "by": "me"},
                              headers=A), 422, "RequestValidationError")
    assert "body.by" in body["message"]  # extra fields are refused
    body = _error(client.post(f"{V1}/models/churn/champion", content=b"{not json", headers={
        **A, "Content-Type": "application/json"}), 422, "RequestValidationError")
    _error(client.get(f"{V1}/models/..%2Fetc/versions", headers=R), 404, "NotFound")  # no such route
    body = _error(client.get(f"{V1}/nothing-here", headers=R), 404, "NotFound")
    assert "/api/v1/nothing-here" in body["message"]
    _error(client.get(f"{V1}/models/bad.name/versions", headers=R), 422, "RequestValidationError")
    assert reg.champion_version("churn") is None


# -- deployments -----------------------------------------------------------------------------------------
def test_promote_and_rollback_edit_the_environment_file(world):
    client, reg, envs, _ = world
    deps = client.get(f"{V1}/environments/prod/deployments", headers=R).json()
    assert [(d["name"], d["version"]) for d in deps] == [("churn", 1)]
    assert [e["name"] for e in client.get(f"{V1}/environments", headers=R).json()] == ["dev", "prod"]

    resp = client.post(f"{V1}/environments/prod/deployments/churn/promote", json={"version": 2}, headers=A)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert (out["version"], out["previous"], out["changed"], out["reason"]) == (2, 1, True, "beat v1")
    text = envs.model_path("prod", "churn").read_text()
    assert "# churn in prod: owned by the churn team" in text and "# first release" in text
    assert envs.deployment("prod", "churn").version == 2

    # the gate is checked: v3 lost, so it needs force and a reason
    body = _error(client.post(f"{V1}/environments/prod/deployments/churn/promote", json={"version": 3},
                              headers=A), 422, "GateFailed")
    assert "roc_auc 0.71" in body["message"] and body["detail"]["gate"]["promote"] is False
    _error(client.post(f"{V1}/environments/prod/deployments/churn/promote", json={"version": 3, "force": True},
                       headers=A), 400, "UsageError")
    assert envs.deployment("prod", "churn").version == 2

    resp = client.post(f"{V1}/environments/prod/deployments/churn/rollback", json={"reason": "latency"}, headers=A)
    assert resp.status_code == 200, resp.text
    assert (resp.json()["version"], resp.json()["previous"]) == (1, 2)
    dep = envs.deployment("prod", "churn")
    assert dep.version == 1
    assert [(h.version, h.previous, h.action, h.reason) for h in dep.history] == [
        (1, None, "promote", "first"), (2, 1, "promote", "beat v1"), (1, 2, "rollback", "latency")]
    # a canary of v2 on the Serverless prod environment
    resp = client.post(f"{V1}/environments/prod/deployments/churn/promote",
                       json={"version": "2", "canary_percent": 10}, headers=A)
    assert resp.json()["canary"] == {"version": 2, "percent": 10}
    _error(client.post(f"{V1}/environments/prod/deployments/churn/promote",
                       json={"version": 2, "canary_percent": 101}, headers=A), 422, "RequestValidationError")


def test_deployment_errors_and_read_only_tokens(world):
    client, reg, envs, _ = world
    before = envs.model_path("prod", "churn").read_text()
    _error(client.post(f"{V1}/environments/prod/deployments/churn/promote", json={"version": 2}, headers=R),
           403, "Forbidden")
    _error(client.post(f"{V1}/environments/prod/deployments/churn/rollback", json={}, headers=R), 403, "Forbidden")
    body = _error(client.get(f"{V1}/environments/qa/deployments", headers=R), 404, "NotFoundError")
    assert "environment 'qa' not found" in body["message"]
    _error(client.post(f"{V1}/environments/prod/deployments/churn/promote", json={"version": 9}, headers=A),
           404, "NotFoundError")
    # v1 runs with no earlier version in the history: nothing to roll back to
    _error(client.post(f"{V1}/environments/prod/deployments/churn/rollback", json={}, headers=A), 400, "UsageError")
    _error(client.post(f"{V1}/environments/dev/deployments/churn/rollback", json={}, headers=A),
           404, "NotFoundError")
    assert envs.model_path("prod", "churn").read_text() == before


def test_rollout_state_and_decisions(world):
    client, _, _, settings = world
    _error(client.get(f"{V1}/environments/prod/rollouts/churn", headers=R), 404, "NotFoundError")
    now = "2026-11-25T10:00:00+00:00"
    state = RolloutState(
        id="r1", model="churn", env="prod", stable_version="1", canary_version="2", phase="rolled_back",
        canary_percent=0, policy=RolloutPolicy(), started_at=now, updated_at=now, finished_at=now,
        reason="canary 5xx rate 0.2 > stable + 0.02",
        decisions=[Decision(at=now, ts=1.0, step=10, action="rollback", canary_percent=0,
                            reason="canary 5xx rate 0.2 > stable + 0.02")])
    RolloutStore(Store(settings.root)).save(state)
    got = client.get(f"{V1}/environments/prod/rollouts/churn", headers=R).json()
    assert (got["phase"], got["canary_version"]) == ("rolled_back", "2")
    assert [d["action"] for d in got["decisions"]] == ["rollback"]


# -- monitoring ------------------------------------------------------------------------------------------
def test_drift_results_and_report(world):
    client, *_ = world
    doc = client.get(f"{V1}/monitoring/datasets/churn/drift", headers=R).json()
    assert [p["date"] for p in doc["partitions"]] == ["2026-11-01", "2026-11-02"]
    first, second = doc["partitions"]
    assert (first["status"], first["drifted"], first["blocking"]) == ("passed", [], [])
    assert second["status"] == "failed" and second["previous_date"] == "2026-11-01"
    assert second["drifted"] == [{"feature": "MonthlyCharges", "measure": "jensen_shannon_divergence",
                                  "value": 0.31, "threshold": 0.1}]
    assert [(a["feature"], a["severity"]) for a in second["blocking"]] == [("tenure", "error")]
    assert first["warnings"][0]["feature"] == "tenure"
    one = client.get(f"{V1}/monitoring/datasets/churn/drift", params={"date": "2026-11-01"}, headers=R).json()
    assert [p["date"] for p in one["partitions"]] == ["2026-11-01"]

    html = client.get(second["report"], headers=R)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "report 2026-11-02" in html.text
    assert "report 2026-11-02" in client.get(f"{V1}/monitoring/datasets/churn/report", headers=R).text  # latest

    _error(client.get(f"{V1}/monitoring/datasets/churn/drift", params={"date": "2026-10-01"}, headers=R),
           404, "NotFoundError")
    _error(client.get(f"{V1}/monitoring/datasets/other/drift", headers=R), 404, "NotFoundError")
    body = _error(client.get(f"{V1}/monitoring/datasets/churn/drift", params={"date": "../../x"}, headers=R),
                  422, "RequestValidationError")
    assert "query.date" in body["message"]
    _error(client.get(f"{V1}/monitoring/datasets/churn/report"), 401, "Unauthorized")


def test_unreadable_stored_result_is_a_json_error_not_a_traceback(world):
    client, _, _, settings = world
    Lake.from_settings(settings).store.write_json({"dataset": "churn"}, "validation", "churn",
                                                  "ingest_date=2026-11-03", "result.json")
    body = _error(client.get(f"{V1}/monitoring/datasets/churn/drift", headers=R), 503, "StorageError")
    assert "result.json" in body["message"] and "Traceback" not in json.dumps(body)


# -- pipelines --------------------------------------------------------------------------------------------
SPEC = "churn"  # a dataset name: datasets/churn.yaml in the server's working folder


@pytest.fixture
def datasets(skiff_env):
    """The server's datasets folder: the churn example and a spec whose source file is missing."""
    folder = skiff_env / "datasets"
    folder.mkdir()
    text = (REPO / "examples" / "churn.yaml").read_text()
    (folder / "churn.yaml").write_text(text)
    missing = skiff_env / "missing.csv"
    (folder / "broken.yaml").write_text(text.replace("name: churn", "name: broken").replace(
        "path: data/churn.csv", f"path: {missing}"))
    return folder


def test_pipelines_list_and_preflight_errors(world, skiff_env, datasets):
    client, *_ = world
    listed = client.get(f"{V1}/pipelines", headers=R).json()
    by_name = {p["name"]: p for p in listed}
    assert set(by_name) == {"image", "recommender", "tabular"} and "estimator" in by_name["tabular"]["parameters"]
    cases = [
        ({"spec": SPEC, "estimator": "bogus"}, 400, "unknown estimator 'bogus'"),
        ({"spec": SPEC, "colour": "blue"}, 422, "body.params.colour"),
        ({}, 422, "body.params.spec"),
        ({"spec": "nope"}, 404, "no dataset 'nope'"),
    ]
    for params, status, message in cases:
        resp = client.post(f"{V1}/pipelines/tabular/runs", json={"params": params}, headers=A)
        assert resp.status_code == status, resp.text
        assert message in resp.json()["message"]
    _error(client.post(f"{V1}/pipelines/nope/runs", json={"params": {"spec": SPEC}}, headers=A), 404, "NotFoundError")
    _error(client.post(f"{V1}/pipelines/tabular/runs", json={"params": {"spec": SPEC}}, headers=R), 403, "Forbidden")
    _error(client.post(f"{V1}/pipelines/tabular/runs", json={"parameters": {}}, headers=A),
           422, "RequestValidationError")
    _error(client.get(f"{V1}/pipelines/runs/run-nope", headers=R), 404, "NotFoundError")
    assert not (skiff_env / ".skiff" / "pipeline_runs").exists()  # nothing ran


def test_cluster_submission_goes_through_the_client(world, datasets):
    client, *_ = world
    resp = client.post(f"{V1}/pipelines/tabular/runs", headers=A,
                       json={"params": {"spec": SPEC, "estimator": "random_forest"}, "host": "http://kfp:8888"})
    assert resp.status_code == 202, resp.text
    assert resp.json() == {"run_id": "kfp-run-1", "host": "http://kfp:8888", "experiment": "skiff",
                           "pipeline": "tabular"}
    (call,) = _RecordingClient.calls
    assert call["host"] == "http://kfp:8888"
    assert call["arguments"]["train_config"] == {"estimator": "random_forest"}
    assert call["arguments"]["feature_repo"] == "/app/feature_repo"
    spec = call["arguments"]["spec"]  # the spec travels as JSON text (skiff.spec_text)
    assert (json.loads(spec) if isinstance(spec, str) else spec)["name"] == "churn"  # from datasets/churn.yaml


def test_local_run_is_accepted_then_fails_in_its_first_step(world, skiff_env, datasets):
    client, *_ = world
    resp = client.post(f"{V1}/pipelines/tabular/runs", headers=A, json={"params": {"spec": "broken"}})
    assert resp.status_code == 202, resp.text
    run_id = resp.json()["run_id"]
    assert resp.json()["status"] in ("queued", "running")
    second = client.post(f"{V1}/pipelines/tabular/runs", headers=A, json={"params": {"spec": SPEC}})
    _error(second, 409, "ConflictError")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rec = client.get(f"{V1}/pipelines/runs/{run_id}", headers=R).json()
        if rec["status"] not in ("queued", "running"):
            break
        time.sleep(0.3)
    assert rec["status"] == "failed", rec
    assert rec["summary"]["status"] == "FAILURE" and rec["summary"]["run_id"] == run_id
    assert "ingest" in rec["error"]
    assert rec["summary"]["registered"] is None


def test_compile_returns_ir_yaml(world):
    client, *_ = world
    resp = client.post(f"{V1}/pipelines/tabular/compile", headers=R)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/yaml")
    assert "pipelineInfo:" in resp.text and "skiff-tabular" in resp.text


# -- a real server ------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_skiff_api_serves_on_loopback_with_hashed_tokens(world, skiff_env):
    _, reg, _, settings = world
    port = _free_port()
    env = {**os.environ, ADMIN_ENV: hash_token(ADMIN), READ_ENV: "", "SKIFF_ROOT": settings.root,
           "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "skiff", "api", "--port", str(port), "--environments",
                             str(skiff_env / "infra/environments")], env=env, cwd=skiff_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_ready(f"{base}/healthz", proc, timeout=30)
        assert httpx.get(f"{base}{V1}/models").status_code == 401
        models = httpx.get(f"{base}{V1}/models", headers=A).json()
        assert models[0]["name"] == "churn" and models[0]["latest"] == 3
        resp = httpx.post(f"{base}{V1}/models/churn/champion", json={"version": 1, "reason": "real server"},
                          headers=A)
        assert resp.status_code == 200
        assert reg.champion_version("churn") == 1
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert ADMIN not in out  # the token never reaches the log
    assert f"127.0.0.1:{port}" in out


def test_broken_stored_files_give_json_errors_without_tracebacks(world, caplog):
    client, reg, envs, _ = world
    # a hand-edited environment file that no longer validates: the server is misconfigured (500, named)
    (envs.root / "dev" / "environment.yaml").write_text("name: dev\nnamespace: Not_A_DNS_Label\n")
    body = _error(client.get(f"{V1}/environments", headers=R), 500, "ConfigError")
    assert "environment.yaml" in body["message"] and "namespace" in body["message"]
    # a version whose metadata file was damaged: an unexpected error, logged here, a bare 500 there
    reg.store.write_text("{not json", "churn", "2", "metadata.json")
    with caplog.at_level("ERROR", logger="skiff.api"):
        resp = client.get(f"{V1}/models/churn/versions/2", headers=R)
    body = _error(resp, 500, "InternalServerError")
    assert "Traceback" not in resp.text and "not json" not in resp.text
    assert any("GET /api/v1/models/churn/versions/2" in r.getMessage() and r.exc_info for r in caplog.records)
    assert client.get(f"{V1}/models/churn/versions/1", headers=R).status_code == 200  # the rest still serves


def test_concurrent_changes_lose_no_history(world):
    from concurrent.futures import ThreadPoolExecutor

    client, reg, *_ = world

    def pick(i: int) -> int:
        return client.post(f"{V1}/models/churn/champion", json={"version": 1 + i % 2, "reason": f"r{i}"},
                           headers=A).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(pick, range(16))) == {200}
    assert sorted(h["reason"] for h in reg.champion_history("churn")) == sorted(f"r{i}" for i in range(16))
