"""The REST API's serving monitoring over a real registry and control plane (SQLite under the root):
``/models/{name}/monitoring`` (drift per window and feature, alerts) and ``/metrics`` (the latest scores as
Prometheus gauges), with the auth and error conventions of every ``/api/v1`` route."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from skiff.api.runs import control_plane_for
from skiff.control_plane import Alert, MonitoringResult
from tests.integration.test_api import V1, R, _error, world  # noqa: F401 - the fixture is used by name

W1 = ("2026-05-01T10:00:00+00:00", "2026-05-01T11:00:00+00:00")
W2 = ("2026-05-01T11:00:00+00:00", "2026-05-01T12:00:00+00:00")


def _score(window, feature, value, drifted, *, version=2, metric="psi", kind="feature_drift"):
    return MonitoringResult(model="churn", version=version, window_start=window[0], window_end=window[1], kind=kind,
                            feature=feature, metric=metric, value=value, threshold=0.02, drifted=drifted, rows=2000,
                            computed_at=window[1], details={"p_value": 1e-9 if drifted else 0.5})


def _store(settings):
    store = control_plane_for(settings)
    store.save_window([_score(W1, "tenure", 0.004, False), _score(W1, "", 0.003, False, kind="prediction_drift")])
    store.save_window([_score(W2, "tenure", 0.061, True), _score(W2, "tenure", 0.12, True, metric="js"),
                       _score(W2, "", 0.004, False, kind="prediction_drift")])
    store.save_window([_score(W1, "tenure", 0.001, False, version=1)])
    store.add_alert(Alert(model="churn", version=2, kind="feature_drift", message="tenure drifted", value=0.061,
                          threshold=0.02))
    return store


def test_model_monitoring_lists_windows_newest_first_with_scores_and_alerts(world):  # noqa: F811
    client, _reg, _envs, settings = world
    store = _store(settings)
    body = client.get(f"{V1}/models/churn/monitoring", headers=R).json()
    assert body["model"] == "churn" and body["versions"] == [1, 2]
    assert [(w["version"], w["window_start"]) for w in body["windows"]] == [(2, W2[0]), (2, W1[0]), (1, W1[0])]
    newest = body["windows"][0]
    assert newest["drifted"] == ["tenure"] and newest["rows"] == 2000 and newest["window_end"] == W2[1]
    assert {(s["feature"], s["metric"]): (s["value"], s["drifted"]) for s in newest["scores"]} == {
        ("tenure", "psi"): (0.061, True), ("tenure", "js"): (0.12, True), ("prediction", "psi"): (0.004, False)}
    (alert,) = body["alerts"]
    assert alert["message"] == "tenure drifted" and alert["resolved_at"] is None

    only_v1 = client.get(f"{V1}/models/churn/monitoring", params={"version": 1}, headers=R).json()
    assert [w["version"] for w in only_v1["windows"]] == [1]
    assert len(client.get(f"{V1}/models/churn/monitoring", params={"windows": 1}, headers=R).json()["windows"]) == 1
    store.resolve_alert(alert["id"])
    assert client.get(f"{V1}/models/churn/monitoring", params={"open_alerts": True}, headers=R).json()["alerts"] == []


def test_model_monitoring_errors_follow_the_api_conventions(world):  # noqa: F811
    client, *_ = world
    _error(client.get(f"{V1}/models/churn/monitoring"), 401, "Unauthorized")
    _error(client.get(f"{V1}/models/nope/monitoring", headers=R), 404, "NotFoundError")
    _error(client.get(f"{V1}/models/churn/monitoring", params={"version": 9}, headers=R), 404, "NotFoundError")
    _error(client.get(f"{V1}/models/churn/monitoring", params={"windows": 0}, headers=R), 422, "RequestValidationError")
    # registered, never monitored: no windows, not an error
    body = client.get(f"{V1}/models/churn/monitoring", headers=R).json()
    assert body == {"model": "churn", "versions": [], "windows": [], "alerts": []}


def test_metrics_exports_the_latest_window_per_version_for_prometheus(world):  # noqa: F811
    client, _reg, _envs, settings = world
    _error(client.get(f"{V1}/metrics"), 401, "Unauthorized")
    _store(settings)
    resp = client.get(f"{V1}/metrics", headers=R)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(resp.text)}
    detected = {(s.labels["version"], s.labels["feature"], s.labels["metric"]): s.value
                for s in families["skiff_drift_detected"].samples}
    # version 2's latest window is W2 (tenure drifted); version 1 has only W1
    assert detected == {("2", "tenure", "psi"): 1.0, ("2", "tenure", "js"): 1.0, ("2", "prediction", "psi"): 0.0,
                        ("1", "tenure", "psi"): 0.0}
    ends = {s.labels["version"]: s.value for s in families["skiff_drift_window_end_timestamp_seconds"].samples}
    assert ends["2"] > ends["1"]


def test_the_openapi_document_describes_the_monitoring_routes(world):  # noqa: F811
    client, *_ = world
    paths = client.get("/openapi.json").json()["paths"]
    monitoring = paths["/api/v1/models/{name}/monitoring"]["get"]
    assert monitoring["tags"] == ["monitoring"]
    assert {"200", "401", "404", "422"} <= set(monitoring["responses"])
    assert {p["name"] for p in monitoring["parameters"]} == {"name", "version", "windows", "open_alerts"}
    assert "text/plain; version=0.0.4; charset=utf-8" in paths["/api/v1/metrics"]["get"]["responses"]["200"]["content"]


def test_a_model_server_that_does_not_answer_in_time_is_a_documented_504(world):  # noqa: F811
    import contextlib
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from skiff.api.errors import declare

    class Slow(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers["content-length"]))
            time.sleep(4.0)
            data = b'{"predictions": [1]}'
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError):  # the API gave up waiting: the timeout under test
                self.wfile.write(data)

        def log_message(self, *args):
            pass

    client, _reg, envs, _settings = world
    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    server.daemon_threads, server.block_on_close = True, False
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env_file = envs.root / "dev/environment.yaml"
        env_file.write_text(env_file.read_text() + f"predict_url: http://127.0.0.1:{server.server_port}\n")
        (envs.root / "dev/models/churn.yaml").write_text("name: churn\nversion: 1\n")
        url = f"{V1}/environments/dev/deployments/churn/predict"
        started = time.monotonic()
        body = _error(client.post(url, params={"timeout_s": 0.2}, json={"instances": [{"a": 1}]}, headers=R), 504,
                      "UpstreamTimeout")
        assert time.monotonic() - started < 3.5  # answered at the timeout, not when the server finally did
        assert "did not answer within 0.2 s" in body["message"]
        assert client.post(url, params={"timeout_s": 10}, json={"instances": [{"a": 1}]}, headers=R).json() == {
            "predictions": [1]}  # the same server within a longer timeout
    finally:
        server.shutdown()
        server.server_close()
    assert declare(504)[504]["description"].startswith("An upstream")
    doc = client.get("/openapi.json").json()
    answer = doc["paths"][f"{V1}/environments/{{env}}/deployments/{{name}}/predict"]["post"]["responses"]["504"]
    assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
