"""``skiff monitor schedule``: the skiff-monitor pipeline compiled by the KFP compiler, its recurring run built
from kfp-server-api's own models, and ``kfp.Client`` sending it over HTTP to a small stand-in of the
Kubeflow Pipelines v2beta1 REST API (experiments and recurring runs), which reads each body back into
kfp-server-api's models; a second schedule replaces the first."""

from __future__ import annotations

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import kfp_server_api as api
import pytest
import yaml

from components._image import BASE_IMAGE
from pipelines.monitor import (
    MonitorSchedule,
    compile_monitor,
    kfp_cron,
    recurring_run_body,
    request_json,
    schedule,
)
from pipelines.runner import RunTarget
from skiff.cli import main
from skiff.errors import SpecError, UsageError

TARGET = RunTarget(namespace="skiff", service_account="skiff-pipeline", pipeline_root="s3://lake/artifacts")


def test_the_compiled_pipeline_runs_skiff_monitor_in_the_skiff_image_with_the_cluster_wiring(tmp_path):
    from kfp.client.client import _extract_pipeline_yaml

    package = compile_monitor(tmp_path / "monitor.yaml")
    ir, platform = list(yaml.safe_load_all(package.read_text()))
    assert ir["pipelineInfo"]["name"] == "skiff-monitor"
    inputs = ir["root"]["inputDefinitions"]["parameters"]
    assert {k: v["parameterType"] for k, v in inputs.items()} == {
        "model": "STRING", "act": "BOOLEAN", "env": "STRING", "environments": "STRING",
        "lookback_hours": "NUMBER_INTEGER", "min_rows": "NUMBER_INTEGER", "labels_dataset": "STRING",
        "retrain_host": "STRING"}
    assert "defaultValue" not in inputs["model"] and inputs["lookback_hours"]["defaultValue"] == 24
    container = ir["deploymentSpec"]["executors"]["exec-monitor-op"]["container"]
    assert container["image"] == BASE_IMAGE
    assert '"skiff", "monitor", "run", model' in container["command"][-1]
    assert ir["root"]["dag"]["tasks"]["monitor-op"]["cachingOptions"] == {}  # caching off
    outputs = ir["components"]["comp-monitor-op"]["outputDefinitions"]["parameters"]
    assert set(outputs) == {"drifted_windows", "decayed_windows"}
    wiring = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-monitor-op"]
    assert [s["secretName"] for s in wiring["secretAsEnv"]] == ["skiff-database"]
    assert wiring["secretAsEnv"][0]["keyToEnv"] == [{"secretKey": "url", "envVar": "SKIFF_DATABASE_URL"}]
    assert wiring["configMapAsVolume"][0]["mountPath"] == "/etc/skiff/config"
    assert wiring["podMetadata"]["labels"] == {"azure.workload.identity/use": "true"}
    doc = _extract_pipeline_yaml(str(package))  # what kfp.Client parses: the IR and platform protos
    assert doc.pipeline_spec.root.dag.tasks["monitor-op"].component_ref.name == "comp-monitor-op"


def test_a_schedule_that_acts_can_mount_the_gitops_checkout(tmp_path):
    from pipelines.monitor import ENVIRONMENTS_MOUNT

    package = compile_monitor(tmp_path / "monitor.yaml", "skiff-environments")
    _ir, platform = list(yaml.safe_load_all(package.read_text()))
    wiring = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-monitor-op"]
    assert [(m["constant"], m["mountPath"]) for m in wiring["pvcMount"]] == [("skiff-environments",
                                                                            ENVIRONMENTS_MOUNT)]
    plan = MonitorSchedule("churn", act=True, environments_pvc="skiff-environments")
    assert plan.parameters["environments"] == ENVIRONMENTS_MOUNT
    body = request_json(recurring_run_body(plan, package, "exp-1", TARGET))
    assert body["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"][
        "exec-monitor-op"]["pvcMount"][0]["mountPath"] == ENVIRONMENTS_MOUNT
    for bad in ("Skiff_Envs", "../x", "-x"):
        with pytest.raises(UsageError, match="Kubernetes name"):
            MonitorSchedule("churn", act=True, environments_pvc=bad)
    with pytest.raises(UsageError, match="needs act"):
        MonitorSchedule("churn", environments_pvc="skiff-environments")
    plain = list(yaml.safe_load_all(compile_monitor(tmp_path / "plain.yaml").read_text()))[1]
    assert "pvcMount" not in plain["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-monitor-op"]


def test_cron_takes_five_or_kfp_six_fields_and_the_plan_checks_its_names():
    assert kfp_cron("0 * * * *") == "0 0 * * * *"
    assert kfp_cron("30 */15 * * * *") == "30 */15 * * * *"
    for bad in ("@hourly", "* * * *", "0 * * * * * *", "0 * * * $(id)"):
        with pytest.raises(UsageError, match="cron"):
            kfp_cron(bad)
    with pytest.raises(SpecError, match="model name"):
        MonitorSchedule("../etc")
    with pytest.raises(UsageError):
        MonitorSchedule("churn", lookback_hours=-1)
    with pytest.raises(UsageError, match="needs act"):
        MonitorSchedule("churn", retrain_host="http://ml-pipeline:8888")
    with pytest.raises(UsageError, match="http"):
        MonitorSchedule("churn", act=True, retrain_host="ml-pipeline:8888; rm")
    assert MonitorSchedule("churn", act=True, retrain_host="http://ml-pipeline.kubeflow:8888").parameters[
        "retrain_host"] == "http://ml-pipeline.kubeflow:8888"


def test_the_recurring_run_is_a_valid_kfp_server_api_body(tmp_path):
    package = compile_monitor(tmp_path / "monitor.yaml")
    plan = MonitorSchedule("churn", cron="15 * * * *", act=True, env="staging", labels_dataset="churn_labels")
    body = recurring_run_body(plan, package, "exp-1", TARGET)
    assert isinstance(body, api.V2beta1RecurringRun)
    sent = request_json(body)
    # read back through the client's own deserializer: every field is one the model knows, typed as it says
    back = api.ApiClient().deserialize(_Response(sent), "V2beta1RecurringRun")
    assert back.display_name == "skiff-monitor-churn" and back.experiment_id == "exp-1"
    assert back.trigger.cron_schedule.cron == "0 15 * * * *" and back.trigger.periodic_schedule is None
    assert back.mode == api.RecurringRunMode.ENABLE and back.no_catchup is True
    assert back.service_account == "skiff-pipeline" and back.runtime_config.pipeline_root == "s3://lake/artifacts"
    assert back.runtime_config.parameters == {"model": "churn", "act": True, "env": "staging",
                                              "environments": "infra/environments", "lookback_hours": 24,
                                              "min_rows": 200, "labels_dataset": "churn_labels", "retrain_host": ""}
    assert set(back.pipeline_spec) == {"pipeline_spec", "platform_spec"}
    assert back.pipeline_spec["pipeline_spec"]["root"]["dag"]["tasks"]["monitor-op"]["cachingOptions"] == {}
    paused = request_json(recurring_run_body(MonitorSchedule("churn", enabled=False), package, "exp-1", TARGET))
    assert paused["mode"] == "DISABLE"
    # nothing is lost on the way back: every key is one of the model's fields (deserialize drops the others)
    assert request_json(back) == sent
    assert sent["mode"] in api.RecurringRunMode.allowable_values
    with pytest.raises(TypeError):
        api.V2beta1RecurringRun(cron="0 * * * *")  # a field the API does not have is refused


class _Response:
    """What ApiClient.deserialize reads: a response's data."""

    def __init__(self, body):
        self.data = json.dumps(body)


class _Pipelines(BaseHTTPRequestHandler):
    """The experiments and recurring runs of the KFP v2beta1 REST API, in memory."""

    experiments: dict[str, dict]
    runs: dict[str, dict]
    bodies: list[dict]
    #: one-off runs (POST /apis/v2beta1/runs); ``on_run(body)`` plays the pipeline and returns its state
    pipeline_runs: dict[str, dict]
    on_run = None

    def log_message(self, *args):
        pass

    def _send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _query(self):
        url = urllib.parse.urlparse(self.path)
        return url.path, {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}

    def _named(self, query):
        flt = json.loads(query.get("filter") or "{}")
        names = [p["stringValue"] for p in flt.get("predicates", []) if p["key"] == "display_name"]
        return names[0] if names else None

    def do_GET(self):
        path, query = self._query()
        name = self._named(query)
        if path == "/apis/v2beta1/experiments":
            found = [e for e in self.experiments.values() if name in (None, e["display_name"])
                     and query.get("namespace") in (None, e["namespace"])]
            return self._send(200, {"experiments": found, "total_size": len(found)} if found else {})
        if path == "/apis/v2beta1/recurringruns":
            found = [r for r in self.runs.values() if name in (None, r["display_name"])
                     and r["experiment_id"] == query.get("experiment_id")]
            return self._send(200, {"recurringRuns": found, "totalSize": len(found)} if found else {})
        if path.startswith("/apis/v2beta1/runs/") and path.rsplit("/", 1)[-1] in self.pipeline_runs:
            return self._send(200, self.pipeline_runs[path.rsplit("/", 1)[-1]])
        self._send(404, {"error": "not found"})

    def do_POST(self):
        path, _ = self._query()
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if path == "/apis/v2beta1/experiments":
            exp = {**body, "experiment_id": f"exp-{len(self.experiments) + 1}"}
            self.experiments[exp["experiment_id"]] = exp
            return self._send(200, exp)
        if path == "/apis/v2beta1/recurringruns":
            api.ApiClient().deserialize(_Response(body), "V2beta1RecurringRun")  # the body is the model's
            self.bodies.append(body)
            run = {**body, "recurring_run_id": f"rr-{len(self.bodies)}", "status": "ENABLED"}
            self.runs[run["recurring_run_id"]] = run
            return self._send(200, run)
        if path == "/apis/v2beta1/runs":
            api.ApiClient().deserialize(_Response(body), "V2beta1Run")
            state = type(self).on_run(body) if type(self).on_run else "SUCCEEDED"
            run = {**body, "run_id": f"run-{len(self.pipeline_runs) + 1}", "state": state}
            self.pipeline_runs[run["run_id"]] = run
            return self._send(200, run)
        self._send(404, {"error": "not found"})

    def do_DELETE(self):
        path, _ = self._query()
        rid = path.rsplit("/", 1)[-1]
        if path.startswith("/apis/v2beta1/recurringruns/") and self.runs.pop(rid, None) is not None:
            return self._send(200, {})
        self._send(404, {"error": f"no recurring run {rid}"})


@pytest.fixture
def kfp_server():
    handler = type("Handler", (_Pipelines,), {"experiments": {}, "runs": {}, "bodies": [], "pipeline_runs": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", handler
    server.shutdown()
    server.server_close()


def test_schedule_creates_the_recurring_run_through_kfp_client_and_replaces_it(kfp_server, tmp_path):
    host, state = kfp_server
    plan = MonitorSchedule("churn", cron="0 * * * *", lookback_hours=6)
    first = schedule(plan, host, target=TARGET)
    assert first["recurring_run_id"] == "rr-1" and first["replaced"] == []
    assert [e["display_name"] for e in state.experiments.values()] == ["skiff-monitoring"]
    assert next(iter(state.experiments.values()))["namespace"] == "skiff"
    # what kfp.Client sent is the body --dry-run prints, with the experiment's id
    dry = schedule(plan, host, target=TARGET, dry_run=True)["recurring_run"]
    assert state.bodies[0] == {**dry, "experiment_id": first["experiment_id"]}
    second = schedule(MonitorSchedule("churn", cron="30 * * * *"), host, target=TARGET)
    assert second["replaced"] == ["rr-1"] and list(state.runs) == ["rr-2"]
    assert state.runs["rr-2"]["trigger"] == {"cron_schedule": {"cron": "0 30 * * * *"}}
    other = schedule(MonitorSchedule("fraud"), host, target=TARGET)
    assert other["replaced"] == [] and len(state.runs) == 2 and len(state.experiments) == 1


def test_the_cli_prints_the_dry_run_and_needs_a_host_otherwise(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SKIFF_KFP_HOST", raising=False)
    assert main(["monitor", "schedule", "churn", "--dry-run", "--cron", "0 6 * * *", "--act", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dry_run"] is True and out["cron"] == "0 0 6 * * *"
    assert out["recurring_run"]["runtime_config"]["parameters"]["act"] is True
    assert main(["monitor", "schedule", "churn"]) == 2
    assert "--host" in capsys.readouterr().err
    assert main(["monitor", "schedule", "churn", "--dry-run", "--cron", "every hour"]) == 2


def test_the_cli_schedules_on_the_host_and_reports_what_it_replaced(kfp_server, capsys, monkeypatch, tmp_path):
    host, state = kfp_server
    monkeypatch.chdir(tmp_path)
    argv = ["monitor", "schedule", "churn", "--host", host, "--cron", "0 */6 * * *", "--paused", "--json"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["recurring_run_id"] == "rr-1" and first["namespace"] == "skiff"
    (run,) = state.runs.values()
    assert run["mode"] == "DISABLE" and run["service_account"] == "skiff-pipeline"
    assert main(argv[:-1]) == 0
    assert "replaced 1" in capsys.readouterr().out and list(state.runs) == ["rr-2"]
