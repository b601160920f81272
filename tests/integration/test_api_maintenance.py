"""The REST API's maintenance routes over a real registry, lake, control plane and GitOps folder: labels and
per-version accuracy, drift and alerts; retrain policies in the environment file; ingestions and
evaluations started in the background and polled; predictions proxied to a real HTTP model server (and a
slow, a failing and an absent one: 504 and 502 with the JSON error body, never a 500)."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from skiff.api.runs import control_plane_for
from skiff.control_plane import Alert, PerformanceResult
from tests.integration.test_api import V1, A, R, _error, world  # noqa: F401 - the fixture is used by name

W = ("2026-05-01T10:00:00+00:00", "2026-05-01T11:00:00+00:00")


def test_labels_accuracy_drift_and_alerts_per_version(world):  # noqa: F811
    client, _reg, _envs, settings = world
    body = {"labels": [{"request_id": "r1", "label": "yes"}, {"request_id": "r1", "row": 1, "label": 0.5}]}
    assert client.post(f"{V1}/models/churn/labels", json=body, headers=A).json() == {
        "model": "churn", "inserted": 2, "replaced": 0}
    assert client.post(f"{V1}/models/churn/labels", json=body, headers=A).json()["replaced"] == 2
    _error(client.post(f"{V1}/models/churn/labels", json=body, headers=R), 403, "Forbidden")
    _error(client.post(f"{V1}/models/nope/labels", json=body, headers=A), 404, "NotFoundError")
    _error(client.post(f"{V1}/models/churn/labels", json={"labels": []}, headers=A), 422, "RequestValidationError")
    store = control_plane_for(settings)
    assert {(x.request_id, x.row, x.label) for x in store.labels("churn")} == {("r1", 0, "yes"), ("r1", 1, "0.5")}

    store.save_performance([PerformanceResult(
        model="churn", version=2, window_start=W[0], window_end=W[1], metric="accuracy", value=0.7, ci_low=0.65,
        ci_high=0.75, baseline=0.9, floor=0.85, decayed=True, labeled=300, logged=2000)])
    store.add_alert(Alert(model="churn", version=2, kind="accuracy_below_floor", message="accuracy 0.7", value=0.7))
    acc = client.get(f"{V1}/models/churn/versions/2/accuracy", headers=R).json()
    assert acc["version"] == 2 and acc["windows"][0]["decayed"] is True and acc["windows"][0]["floor"] == 0.85
    assert client.get(f"{V1}/models/churn/versions/1/accuracy", headers=R).json()["windows"] == []
    assert client.get(f"{V1}/models/churn/versions/2/drift", headers=R).json()["windows"] == []
    assert [a["kind"] for a in client.get(f"{V1}/models/churn/alerts", params={"version": 2}, headers=R).json()] \
        == ["accuracy_below_floor"]
    assert client.get(f"{V1}/models/churn/alerts", params={"version": 1}, headers=R).json() == []
    body = _error(client.get(f"{V1}/models/churn/alerts", params={"verison": 1}, headers=R), 422,
                  "RequestValidationError")  # a misspelt query parameter is refused, not ignored
    assert body["detail"]["errors"][0]["loc"] == "query.verison"
    _error(client.get(f"{V1}/models/churn/versions/9/accuracy", headers=R), 404, "NotFoundError")
    _error(client.get(f"{V1}/models/churn/versions/0/drift", headers=R), 422, "RequestValidationError")
    report = client.get(f"{V1}/models/churn/versions/2/reports", headers=R)
    assert report.status_code == 200 and "accuracy" in report.text and "<script" not in report.text
    assert report.headers["content-security-policy"].startswith("default-src 'none'")
    metrics = client.get(f"{V1}/metrics", headers=R).text
    assert 'skiff_model_performance_below_floor{metric="accuracy",model="churn",version="2"} 1.0' in metrics


def test_retrain_policy_read_and_update_in_the_environment_file(world):  # noqa: F811
    client, _reg, envs, _settings = world
    url = f"{V1}/environments/dev/retrain-policies/churn"
    assert client.get(url, headers=R).json() == {"env": "dev", "model": "churn", "policy": None}
    put = client.put(url, json={"on": ["drift", "schedule"], "schedule_hours": 24, "canary_percent": 20}, headers=A)
    assert put.status_code == 200 and put.json()["policy"]["canary_percent"] == 20
    assert envs.environment("dev").retrain["churn"].schedule_hours == 24
    text = (envs.root / "dev/environment.yaml").read_text()
    assert text.startswith("# dev: owned by the platform team")  # comments kept
    _error(client.put(url, json={"on": []}, headers=A), 422, "RequestValidationError")
    _error(client.put(url, json={"cooldown_hours": 1e17}, headers=A), 422, "RequestValidationError")
    _error(client.put(url, json={"on": ["drift"]}, headers=R), 403, "Forbidden")
    _error(client.get(f"{V1}/environments/nope/retrain-policies/churn", headers=R), 404, "NotFoundError")
    assert client.delete(url, headers=A).json()["policy"] is None
    assert "churn" not in envs.environment("dev").retrain


def _wait(client, url, timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        rec = client.get(url, headers=R).json()
        if rec["status"] not in ("queued", "running") or time.monotonic() > deadline:
            return rec
        time.sleep(0.2)


SPEC = """\
name: accounts
entity_key: {generated: row}
target: churned
problem_type: binary
sources:
  - {type: file, path: data/accounts.csv, format: csv}
columns:
  usage: {type: float, required: true, min: 0}
  plan: {type: category, allowed: [free, pro]}
  churned: {type: string}
"""


def test_an_ingestion_and_an_evaluation_run_in_the_background(world):  # noqa: F811
    client, reg, _envs, settings = world
    root = Path(settings.root).parent
    rng = np.random.default_rng(0)
    usage = rng.uniform(0, 10, 300)
    rows = pd.DataFrame({"usage": usage, "plan": rng.choice(["free", "pro"], 300),
                         "churned": np.where(usage < 4, "yes", "no")})
    rows.loc[0, "usage"] = -1.0  # below min: quarantined
    (root / "data").mkdir()
    rows.to_csv(root / "data/accounts.csv", index=False)
    (root / "datasets").mkdir()
    (root / "datasets/accounts.yaml").write_text(SPEC)

    start = client.post(f"{V1}/datasets/accounts/ingestions", json={"ingest_date": "2026-05-01"}, headers=A)
    assert start.status_code == 202, start.text
    rec = _wait(client, f"{V1}/datasets/accounts/ingestions/{start.json()['run_id']}")
    assert rec["status"] == "succeeded", rec
    assert rec["summary"]["counts"]["accepted"] == 299 and rec["summary"]["counts"]["quarantined"] == 1
    listed = client.get(f"{V1}/datasets/accounts/ingestions", headers=R).json()
    assert [j["run_id"] for j in listed["jobs"]] == [rec["run_id"]]
    (run,) = listed["runs"]
    assert run["counts"]["accepted"] == 299 and sum(run["quarantine_reasons"].values()) == 1
    _error(client.get(f"{V1}/datasets/nope/ingestions", headers=R), 404, "NotFoundError")
    _error(client.post(f"{V1}/datasets/accounts/ingestions", json={"sources": [{"path": "/etc/passwd"}]},
                       headers=A), 422, "RequestValidationError")

    train = rows.iloc[1:]
    model = Pipeline([("prep", ColumnTransformer([("cat", OneHotEncoder(), ["plan"])], remainder="passthrough")),
                      ("clf", LogisticRegression())]).fit(train[["usage", "plan"]], train["churned"])
    spec = {"name": "accounts", "entity_key": {"generated": "row"}, "target": "churned", "problem_type": "binary",
            "columns": {"usage": {"type": "float"}, "plan": {"type": "category"}, "churned": {"type": "string"}}}
    mv = reg.register("accounts", model, {"problem_type": "binary", "target": "churned", "features": ["usage", "plan"],
                                          "input_schema": {"usage": "float", "plan": "category"},
                                          "metrics": {"accuracy": 0.97}, "dataset": {"name": "accounts", "spec": spec}})
    start = client.post(f"{V1}/models/accounts/versions/{mv.version}/evaluations", json={}, headers=A)
    assert start.status_code == 202, start.text
    rec = _wait(client, f"{V1}/models/accounts/evaluations/{start.json()['run_id']}")
    assert rec["status"] == "succeeded", rec
    s = rec["summary"]
    assert s["partitions"] == ["2026-05-01"] and s["evaluated"] == 299 and s["metrics"]["accuracy"] > 0.9
    assert s["delta"]["accuracy"] == pytest.approx(s["metrics"]["accuracy"] - 0.97)
    _error(client.post(f"{V1}/models/accounts/versions/01/evaluations", json={}, headers=A), 400, "UsageError")
    _error(client.post(f"{V1}/models/accounts/versions/9/evaluations", json={}, headers=A), 404, "NotFoundError")
    _error(client.post(f"{V1}/models/accounts/versions/1/evaluations", json={"partitions": ["May"]}, headers=A),
           422, "RequestValidationError")
    bad = client.post(f"{V1}/models/churn/versions/1/evaluations", json={}, headers=A)  # no spec recorded
    assert _wait(client, f"{V1}/models/churn/evaluations/{bad.json()['run_id']}")["status"] == "failed"


class _Upstream(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if "slow" in self.path:
            time.sleep(1.5)
        count = len(body["instances"]) if isinstance(body.get("instances"), list) else None
        status, payload = {"/v1/models/churn:predict": (200, {"predictions": [count]}),
                           "/v1/models/picky:predict": (400, {"error": "instances: expected a list"}),
                           "/v1/models/broken:predict": (500, {"error": "boom"})}.get(self.path, (200, {}))
        data = b"not json" if "text" in self.path else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_predict_proxies_to_the_model_server_and_maps_upstream_failures(world):  # noqa: F811
    client, _reg, envs, _settings = world
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env_file = envs.root / "dev/environment.yaml"
        env_file.write_text(env_file.read_text() + f"predict_url: http://127.0.0.1:{server.server_port}\n")
        for name in ("churn", "picky", "broken", "slow", "text"):
            (envs.root / f"dev/models/{name}.yaml").write_text(f"name: {name}\nversion: 1\n")
        url = f"{V1}/environments/dev/deployments/{{}}/predict"
        ok = client.post(url.format("churn"), json={"instances": [{"a": 1}, {"a": 2}]}, headers=R)
        assert ok.status_code == 200 and ok.json() == {"predictions": [2]}
        picky = client.post(url.format("picky"), json={"instances": 1}, headers=R)
        assert picky.status_code == 400 and picky.json()["error"].startswith("instances")
        body = _error(client.post(url.format("broken"), json={"instances": []}, headers=R), 502, "UpstreamError")
        assert body["detail"] == {"upstream_status": 500}
        _error(client.post(url.format("text"), json={"instances": []}, headers=R), 502, "UpstreamError")
        _error(client.post(url.format("slow"), params={"timeout_s": 0.3}, json={"instances": []}, headers=R),
               504, "UpstreamTimeout")
        _error(client.post(url.format("nope"), json={"instances": []}, headers=R), 404, "NotFoundError")
        _error(client.post(url.format("churn"), json={"instances": []}), 401, "Unauthorized")
        env_file.write_text(env_file.read_text().replace(str(server.server_port), str(_free_port())))
        _error(client.post(url.format("churn"), json={"instances": []}, headers=R), 502, "UpstreamUnavailable")
    finally:
        server.shutdown()
