"""The platform chart deploys what skiff runs, with the names the code and the cloud expect (issue 11).

- Finding 8: ``skiff api`` (Deployment, Service, database URL and token digests from Secrets,
  NetworkPolicy, Ingress with TLS) and ``skiff stream`` (StatefulSet with stable client ids, a shared
  subscription, a PodDisruptionBudget) render, off by default, and their command lines go through the
  real CLI (the stream consumer against the real Mosquitto on 127.0.0.1:1883). A windowed dataset's
  consumer runs one StatefulSet per partition on its own topic filters (no ``$share/``); the chart refuses
  subscriptions that would split a device's readings (windows with replicas > 1 on a shared subscription)
  or double them (overlapping partitions, checked against paho's topic matcher); a partition may list
  several filters. The consumers' probes and PodMonitor are checked against the real metrics server.
- One definition: the chart's names and prefixes are skiff.cluster's and skiff.layout's.
- Every rendered object of every ci variant passes the core Kubernetes schemas (kubernetes-validate, strict:
  an unknown field fails) at the chart's oldest and the platform's Kubernetes version, and the KServe
  objects pass the KServe CRDs' schemas from the pinned upstream copy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from skiff import cluster, layout
from tests.conftest import REPO, require_service
from tests.unit.test_helm import (
    CI_CASES,
    MONITORING_APIS,
    PLATFORM,
    _template,
    by_kind,
    render,
    render_ci,
    render_error,
)

#: The chart's oldest Kubernetes (Chart.yaml kubeVersion) and the one the cluster modules create.
K8S_VERSIONS = ("1.29.0", "1.33.0")
API_STREAM = str(PLATFORM / "ci/api-stream-values.yaml")


# --- one definition of names and prefixes -------------------------------------------------------------


def test_layout_json_is_the_code_layout():
    assert json.loads((PLATFORM / "files/layout.json").read_text()) == layout.layout_document()


def test_chart_defaults_are_the_core_names():
    values = yaml.safe_load((PLATFORM / "values.yaml").read_text())
    assert {k: v["name"] for k, v in values["serviceAccounts"].items()} == cluster.SERVICE_ACCOUNTS
    redis = values["featureServer"]["redis"]
    assert (redis["secretName"], redis["secretKey"]) == (cluster.REDIS_SECRET.name, cluster.REDIS_SECRET.key)
    db = values["database"]
    assert (db["secretName"], db["secretKey"]) == (cluster.DATABASE_SECRET.name, cluster.DATABASE_SECRET.key)
    assert values["settings"]["configMapName"] == cluster.SETTINGS_CONFIG_MAP
    assert set(layout.ACCESS) == set(cluster.SERVICE_ACCOUNTS)


def test_the_settings_configmap_is_what_compiled_steps_mount_whatever_the_release():
    for release in ("skiff", "platform"):
        maps = by_kind(render("skiff", (str(PLATFORM / "ci/minimal-values.yaml"),), release=release), "ConfigMap")
        cm = maps[cluster.SETTINGS_CONFIG_MAP]
        assert cm["data"][cluster.SETTINGS_PATH_KEY] == f"{cluster.SETTINGS_MOUNT}/{cluster.SETTINGS_KEY}"
        assert cluster.SETTINGS_KEY in cm["data"]


def test_registry_and_feast_folder_follow_the_layout():
    docs = render("skiff", (str(PLATFORM / "ci/minimal-values.yaml"),),
                  ("featureServer.enabled=true", "storage.root=s3://bucket/pre/"))
    settings = yaml.safe_load(by_kind(docs, "ConfigMap")["skiff-settings"]["data"]["skiff.yaml"])
    assert settings["registry"] == f"s3://bucket/pre/{layout.MODELS}"
    pod = by_kind(docs, "Deployment")["feast-feature-server"]["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["SKIFF_FEAST_DIR"]["value"] == f"s3://bucket/pre/{layout.FEAST}"
    # the feature server reads Redis from the Secret the pipeline's features step reads too
    assert env[cluster.REDIS_SECRET.env]["valueFrom"]["secretKeyRef"] == {
        "name": cluster.REDIS_SECRET.name, "key": cluster.REDIS_SECRET.key}


@pytest.mark.parametrize(
    ("variant", "store"),
    [("aws-irsa-values.yaml", "S3RegistryStore"), ("azure-workload-identity-values.yaml", "AzureRegistryStore")],
)
def test_the_feature_server_config_names_a_registry_store_feast_has(variant, store, tmp_path, monkeypatch):
    """`feast serve` reads the rendered feature_store.yaml with the rendered SKIFF_FEAST_DIR: Feast must find
    a registry store for it (it has none for abfs://, so ADLS goes to its Azure store's https URL)."""
    from urllib.parse import urlparse

    from feast.infra.registry.registry import REGISTRY_STORE_CLASS_FOR_SCHEME, REGISTRY_STORE_CLASS_FOR_TYPE
    from feast.repo_config import load_repo_config

    docs = render_ci("skiff", variant)
    (tmp_path / "feature_store.yaml").write_text(by_kind(docs, "ConfigMap")["feast-feature-server"]["data"]["feature_store.yaml"])
    pod = by_kind(docs, "Deployment")["feast-feature-server"]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    monkeypatch.setenv("SKIFF_FEAST_DIR", env["SKIFF_FEAST_DIR"])
    monkeypatch.setenv("SKIFF_REDIS", "redis.example:6380,ssl=true")
    registry = load_repo_config(tmp_path, tmp_path / "feature_store.yaml").registry
    if registry.registry_store_type:
        assert registry.registry_store_type == store and store in REGISTRY_STORE_CLASS_FOR_TYPE
        assert registry.path.startswith("https://skiffprod.blob.core.windows.net/")
    else:
        assert REGISTRY_STORE_CLASS_FOR_SCHEME[urlparse(registry.path).scheme] == store
        assert registry.path == "s3://skiff-prod-data/skiff/feast/registry.db"


def test_standalone_kfp_gets_the_settings_in_its_own_namespace():
    """KFP standalone runs pipeline pods in KFP's namespace: the settings they mount must be there too."""
    docs = render("skiff", (str(PLATFORM / "ci/minimal-values.yaml"),), ("settings.pipelineNamespace=kubeflow",))
    maps = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == cluster.SETTINGS_CONFIG_MAP]
    assert {m["metadata"]["namespace"] for m in maps} == {"skiff", "kubeflow"}
    assert maps[0]["data"] == maps[1]["data"]
    settings = yaml.safe_load(maps[0]["data"]["skiff.yaml"])
    assert settings["kfp_namespace"] == ""  # submitted without a namespace: KFP's own
    explicit = render("skiff", (str(PLATFORM / "ci/minimal-values.yaml"),), ("settings.kfpNamespace=",))
    assert yaml.safe_load(by_kind(explicit, "ConfigMap")["skiff-settings"]["data"]["skiff.yaml"])["kfp_namespace"] == ""
    assert len([d for d in explicit if d["kind"] == "ConfigMap"
                and d["metadata"]["name"] == cluster.SETTINGS_CONFIG_MAP]) == 1  # no copy in KFP's namespace


# --- finding 8: the API and the stream consumers -----------------------------------------------------


def test_api_and_stream_are_off_by_default():
    docs = render_ci("skiff", "minimal-values.yaml")
    assert not by_kind(docs, "StatefulSet") and not by_kind(docs, "Ingress")
    assert "skiff-api" not in by_kind(docs, "Deployment")
    assert {"skiff-api", "skiff-stream"}.isdisjoint(by_kind(docs, "ServiceAccount"))


def test_api_deployment_takes_its_secrets_and_settings_by_reference():
    docs = render("skiff", (API_STREAM,))
    dep = by_kind(docs, "Deployment")["skiff-api"]
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == cluster.API_SERVICE_ACCOUNT and pod["automountServiceAccountToken"] is False
    (c,) = pod["containers"]
    assert c["command"][:4] == ["python", "-m", "skiff", "api"]
    args = c["command"][4:]
    assert args[args.index("--host") + 1] == "0.0.0.0" and args[args.index("--port") + 1] == "8000"
    env = {e["name"]: e for e in c["env"]}
    assert env["SKIFF_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "skiff-database", "key": "url"}
    assert env["SKIFF_API_TOKENS_SHA256"]["valueFrom"]["secretKeyRef"]["name"] == "skiff-api-tokens"
    assert env["SKIFF_API_READ_TOKENS_SHA256"]["valueFrom"]["secretKeyRef"]["key"] == "read-sha256"
    assert env["SKIFF_CONFIG"]["value"] == f"{cluster.SETTINGS_MOUNT}/{cluster.SETTINGS_KEY}"
    assert all("value" not in env[n] for n in ("SKIFF_DATABASE_URL", "SKIFF_API_TOKENS_SHA256"))
    assert c["readinessProbe"]["httpGet"]["path"] == "/healthz"
    svc = by_kind(docs, "Service")["skiff-api"]
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert by_kind(docs, "PodDisruptionBudget")["skiff-api"]["spec"]["minAvailable"] == 1
    policy = by_kind(docs, "NetworkPolicy")["skiff-api"]["spec"]
    assert policy["podSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    assert policy["ingress"] == [{
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}],
        "ports": [{"port": 8000, "protocol": "TCP"}]}]
    # the settings the API reads point runs at KFP and at the pipeline account
    settings = yaml.safe_load(by_kind(docs, "ConfigMap")["skiff-settings"]["data"]["skiff.yaml"])
    assert settings["kfp_host"].startswith("http://ml-pipeline.")
    assert settings["kfp_service_account"] == cluster.PIPELINE_SERVICE_ACCOUNT


def test_prometheus_may_reach_the_api_it_scrapes_through_the_network_policy():
    sets = ("monitoring.apiMetrics.enabled=true", "monitoring.apiMetrics.tokenSecret.name=skiff-api-scrape",
            "networkPolicy.monitoringNamespaces={monitoring}")
    policy = by_kind(render("skiff", (API_STREAM,), sets), "NetworkPolicy")["skiff-api"]["spec"]
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    assert {"from": [monitoring], "ports": [{"port": 8000, "protocol": "TCP"}]} in policy["ingress"]
    # without the scrape nothing but the ingress controller's namespace gets in
    quiet = by_kind(render("skiff", (API_STREAM,), sets[2:]), "NetworkPolicy")["skiff-api"]["spec"]
    assert all(monitoring not in rule["from"] for rule in quiet["ingress"])


def test_api_ingress_always_has_tls():
    docs = render_ci("skiff", "full-values.yaml")
    ing = by_kind(docs, "Ingress")["skiff-api"]["spec"]
    assert ing["tls"] == [{"hosts": ["api.skiff.example.com"], "secretName": "skiff-api-tls"}]
    (rule,) = ing["rules"]
    assert rule["host"] == "api.skiff.example.com"
    assert rule["http"]["paths"][0]["backend"]["service"] == {"name": "skiff-api", "port": {"name": "http"}}
    assert not by_kind(render("skiff", (API_STREAM,)), "Ingress")  # optional


def test_the_api_command_line_is_accepted_by_the_cli(skiff_env, monkeypatch, capsys):
    """The rendered flags parse; without a token Secret the server refuses to start, naming the variables."""
    from skiff.cli import main

    (c,) = by_kind(render("skiff", (API_STREAM,)), "Deployment")["skiff-api"]["spec"]["template"]["spec"]["containers"]
    for var in ("SKIFF_API_TOKENS_SHA256", "SKIFF_API_READ_TOKENS_SHA256"):
        monkeypatch.delenv(var, raising=False)
    code = main(c["command"][3:])
    err = capsys.readouterr().err
    assert code == 2 and "no API token configured" in err and "SKIFF_API_TOKENS_SHA256" in err, err


@pytest.mark.integration
def test_the_api_pod_serves_its_probes_with_the_rendered_settings(skiff_env, monkeypatch):
    """The Deployment's command, env and skiff.yaml start the real server, which answers the probe path
    and refuses a request without a token (bound to loopback here instead of the pod's 0.0.0.0)."""
    import socket

    import httpx

    from skiff.api.auth import hash_token
    from tests.conftest import wait_until_ready

    docs = render("skiff", (API_STREAM,))
    (c,) = by_kind(docs, "Deployment")["skiff-api"]["spec"]["template"]["spec"]["containers"]
    (skiff_env / "skiff.yaml").write_text(by_kind(docs, "ConfigMap")["skiff-settings"]["data"]["skiff.yaml"])
    (skiff_env / "environments").mkdir()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = list(c["command"])
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = str(port)
    command[command.index("--environments") + 1] = str(skiff_env / "environments")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKIFF_")}
    env.update(PYTHONPATH=str(REPO), SKIFF_CONFIG=str(skiff_env / "skiff.yaml"),
               SKIFF_DATABASE_URL="postgresql+psycopg://root@127.0.0.1:5432/test",
               SKIFF_API_TOKENS_SHA256=hash_token("a-token-only-this-test-knows"))
    log = skiff_env / "api.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, *command[1:]], cwd=skiff_env, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        probe = c["readinessProbe"]["httpGet"]["path"]
        wait_until_ready(f"http://127.0.0.1:{port}{probe}", proc, log_path=log)
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/models", timeout=10).status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

def _start_consumers(argv_by_pod: dict[str, list[str]], cwd) -> tuple[dict, dict, list]:
    """Each pod's rendered command line (its image's ``skiff``: this interpreter) started, its stderr
    collected by a reader thread; returns (processes, log lines, readers) once every consumer logged that it
    is consuming (the broker acknowledged its subscription)."""
    procs = {pod: subprocess.Popen([sys.executable, *args[1:]], cwd=cwd, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
             for pod, args in argv_by_pod.items()}
    logs = {pod: [] for pod in procs}
    readers = [threading.Thread(target=lambda p=p: logs[p].extend(procs[p].stderr), daemon=True) for p in procs]
    for r in readers:
        r.start()
    deadline = time.monotonic() + 60
    while not all(any("consuming" in line for line in lines) for lines in logs.values()):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs.values()), logs
        time.sleep(0.1)
    return procs, logs, readers



def _stream(docs: list[dict], name: str = "skiff-stream-telemetry") -> dict:
    return by_kind(docs, "StatefulSet")[name]


def test_stream_consumers_have_stable_client_ids_and_share_one_subscription():
    docs = render_ci("skiff", "full-values.yaml")
    sts = _stream(docs, "skiff-stream-sensors")
    assert sts["spec"]["replicas"] == 3 and sts["spec"]["serviceName"] == "skiff-stream-sensors"
    pod = sts["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == cluster.STREAM_SERVICE_ACCOUNT and pod["automountServiceAccountToken"] is False
    assert pod["terminationGracePeriodSeconds"] == 90
    (c,) = pod["containers"]
    args = c["command"][4:]
    assert args[args.index("--topic") + 1] == "$share/lake-writers/sensors/+/telemetry"
    assert args[args.index("--client-id") + 1] == "$(POD_NAME)"
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["SKIFF_MQTT_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "skiff-mqtt", "key": "password"}
    pdb = by_kind(docs, "PodDisruptionBudget")["skiff-stream-sensors"]["spec"]
    assert pdb == {"maxUnavailable": 1, "selector": sts["spec"]["selector"]}
    svc = by_kind(docs, "Service")["skiff-stream-sensors"]["spec"]
    assert svc["clusterIP"] == "None"
    # the group defaults to the consumer's name; one replica subscribes shared too (scaling changes nothing)
    args = _stream(render("skiff", (API_STREAM,)))["spec"]["template"]["spec"]["containers"][0]["command"]
    assert args[args.index("--topic") + 1] == "$share/telemetry/factory/+/readings"


def test_stream_spec_configmap_is_a_valid_dataset_spec():
    from skiff.spec import parse_spec

    docs = render_ci("skiff", "full-values.yaml")
    spec = parse_spec(yaml.safe_load(by_kind(docs, "ConfigMap")["skiff-stream-sensors"]["data"]["spec.yaml"]),
                      origin="the chart's stream spec")
    (source,) = spec.sources
    assert source.type == "mqtt" and source.qos == 1 and source.password_env == "SKIFF_MQTT_PASSWORD"


def _values_file(tmp_path: Path, values: dict) -> str:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def _consumer(**over) -> dict:
    spec = {"name": "t", "entity_key": "k", "sources": [{"type": "mqtt", "topic": "a/b"}],
            "columns": {"k": {"type": "string"}}}
    return {"name": "t", "topic": "a/b", "spec": spec, **over}


@pytest.mark.parametrize(
    ("consumers", "expected"),
    [
        ([_consumer(), _consumer()], 'the name "t" is used twice'),
        ([_consumer(spec={"name": "t", "sources": [{"type": "file", "path": "x.csv"}]})], "has no mqtt source"),
        ([_consumer(spec={"name": "t", "sources": [{"type": "mqtt", "topic": "a", "qos": 0}]})], "qos 0 loses"),
        ([_consumer(spec={"name": "t", "sources": [{"type": "mqtt", "topic": "a", "client_id": "x"}]})],
         "leave client_id out"),
    ],
)
def test_stream_values_that_cannot_work_fail_with_the_value_named(tmp_path, consumers, expected):
    values = _values_file(tmp_path, {"stream": {"enabled": True, "consumers": consumers}})
    err = render_error("skiff", (str(PLATFORM / "ci/minimal-values.yaml"), values))
    assert expected in err, err


def test_a_stream_name_too_long_for_its_pods_is_refused(tmp_path):
    values = _values_file(tmp_path, {"stream": {"enabled": True, "consumers": [_consumer(name="a" * 30)]}})
    result = _template("skiff", (str(PLATFORM / "ci/minimal-values.yaml"), values), (), MONITORING_APIS,
                       "team-analytics-skiff-platform")
    assert result.returncode != 0 and "longer than 52 characters" in result.stderr, result.stderr


def test_stream_schema_refuses_a_topic_that_is_already_shared(tmp_path):
    values = _values_file(tmp_path, {"stream": {"enabled": True, "consumers": [_consumer(topic="$share/g/a/b")]}})
    err = render_error("skiff", (str(PLATFORM / "ci/minimal-values.yaml"), values))
    assert "values don't meet the specifications of the schema" in err and "/stream/consumers/0/topic" in err, err


# --- probes and metrics ----------------------------------------------------------------------------------


def test_stream_pods_serve_their_probes_and_metrics_on_the_rendered_port():
    values = yaml.safe_load((PLATFORM / "ci/full-values.yaml").read_text())
    port = values["stream"]["metrics"]["port"]
    docs = render_ci("skiff", "full-values.yaml")
    stream_sets = {n: d for n, d in by_kind(docs, "StatefulSet").items() if n.startswith("skiff-stream-")}
    assert len(stream_sets) == 4  # sensors (shared) and the three partitions of machines
    for name, sts in stream_sets.items():
        (c,) = sts["spec"]["template"]["spec"]["containers"]
        args = c["command"]
        assert args[args.index("--metrics-port") + 1] == str(port), name
        assert args[args.index("--metrics-host") + 1] == "0.0.0.0", name  # the kubelet and Prometheus reach the pod IP
        assert c["ports"] == [{"name": "metrics", "containerPort": port, "protocol": "TCP"}], name
        probes = {k: c[k]["httpGet"] for k in ("startupProbe", "livenessProbe", "readinessProbe")}
        assert probes == {"startupProbe": {"path": "/healthz", "port": "metrics"},
                          "livenessProbe": {"path": "/healthz", "port": "metrics"},
                          "readinessProbe": {"path": "/readyz", "port": "metrics"}}, name
        assert c["startupProbe"]["failureThreshold"] == values["stream"]["metrics"]["startupFailureThreshold"]
    # defaults: port 9102
    (c,) = _stream(render("skiff", (API_STREAM,)))["spec"]["template"]["spec"]["containers"]
    assert c["ports"][0]["containerPort"] == 9102 and c["command"][c["command"].index("--metrics-port") + 1] == "9102"


def _selects(selector: dict, labels: dict) -> bool:
    ok = selector.get("matchLabels", {}).items() <= labels.items()
    for e in selector.get("matchExpressions", []):
        assert e["operator"] == "In", e
        ok = ok and labels.get(e["key"]) in e["values"]
    return ok


def test_prometheus_scrapes_every_stream_pod_and_may_reach_its_metrics_port():
    from tests.cluster.test_gitops_contract import assert_valid, crd_schema

    docs = render_ci("skiff", "full-values.yaml")
    pods = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in by_kind(docs, "StatefulSet").items()}
    stream_pods = {n for n in pods if n.startswith("skiff-stream-")}
    monitor = by_kind(docs, "PodMonitor")["skiff-stream"]
    assert_valid(monitor, crd_schema("prometheus-operator/example/prometheus-operator-crd-full/"
                                     "monitoring.coreos.com_podmonitors.yaml", "v1"))
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"  # what the operator selects by
    assert {n for n, labels in pods.items() if _selects(monitor["spec"]["selector"], labels)} == stream_pods
    assert monitor["spec"]["podMetricsEndpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"}]
    port = by_kind(docs, "StatefulSet")["skiff-stream-sensors"]["spec"]["template"]["spec"]["containers"][0]["ports"][0]
    policy = by_kind(docs, "NetworkPolicy")["skiff-stream"]["spec"]
    assert {n for n, labels in pods.items() if _selects(policy["podSelector"], labels)} == stream_pods
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"port": port["containerPort"], "protocol": "TCP"}]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    # no PodMonitor without the CRD or with podMonitor off; no policy without network policies
    assert "skiff-stream" not in by_kind(render("skiff", (str(PLATFORM / "ci/full-values.yaml"),), apis=()), "PodMonitor")
    off = render("skiff", (str(PLATFORM / "ci/full-values.yaml"),),
                 ("monitoring.podMonitor.enabled=false", "networkPolicy.enabled=false"))
    assert "skiff-stream" not in by_kind(off, "PodMonitor") and "skiff-stream" not in by_kind(off, "NetworkPolicy")


# --- partitioned consumers (datasets with windows) -----------------------------------------------------

_WINDOWS = {"define": [{"name": "m1", "size": "1m", "columns": ["x"], "aggregations": ["mean"]}]}


def _windowed(**over) -> dict:
    c = _consumer(**over)
    c["spec"] = {**c["spec"], "columns": {"k": {"type": "string"}, "x": {"type": "float"}}, "windows": _WINDOWS}
    return c


def _partitioned(*partitions: tuple[str, list[str]], **over) -> dict:
    c = _windowed(**over)
    c.pop("topic")
    c["partitions"] = [{"name": n, "topics": t} for n, t in partitions]
    return c


def _topic_args(command: list[str]) -> list[str]:
    return [command[i + 1] for i, a in enumerate(command) if a == "--topic"]


def test_partitioned_consumers_subscribe_to_their_own_filters_without_sharing():
    values = yaml.safe_load((PLATFORM / "ci/full-values.yaml").read_text())
    (consumer,) = [c for c in values["stream"]["consumers"] if c.get("partitions")]
    name = f"skiff-stream-{consumer['name']}"
    docs = render_ci("skiff", "full-values.yaml")
    parts = {n: d for n, d in by_kind(docs, "StatefulSet").items() if n.startswith(f"{name}-")}
    assert set(parts) == {f"{name}-{p['name']}" for p in consumer["partitions"]} and len(parts) >= 2
    assert name not in by_kind(docs, "StatefulSet")  # no shared StatefulSet besides the partitions
    shared = _stream(docs, "skiff-stream-sensors")["spec"]["template"]["spec"]
    pdb = by_kind(docs, "PodDisruptionBudget")[name]["spec"]
    assert pdb["maxUnavailable"] == 1 and by_kind(docs, "Service")[name]["spec"]["clusterIP"] == "None"
    pod_labels = {}
    for p in consumer["partitions"]:
        sts = parts[f"{name}-{p['name']}"]["spec"]
        assert sts["replicas"] == 1 and sts["serviceName"] == name  # one pod, <sts>-0: one client id, one session
        labels = sts["template"]["metadata"]["labels"]
        assert sts["selector"]["matchLabels"].items() <= labels.items()
        assert pdb["selector"]["matchLabels"].items() <= labels.items()  # one budget over all partitions
        pod_labels[p["name"]] = labels
        pod = sts["template"]["spec"]
        (c,) = pod["containers"]
        assert c["command"][:4] == ["python", "-m", "skiff", "stream"]
        assert _topic_args(c["command"]) == p["topics"]  # its own filters ...
        assert not any("$share/" in a for a in c["command"])  # ... not shared
        args = c["command"][4:]
        assert args[args.index("--client-id") + 1] == "$(POD_NAME)"
        assert args[args.index("--batch-rows") + 1] == str(consumer["batchRows"])
        # the same pod as a shared consumer's: identity, lock-down, settings, credentials, volumes
        for k in ("serviceAccountName", "automountServiceAccountToken", "securityContext",
                  "terminationGracePeriodSeconds"):
            assert pod[k] == shared[k], k
        for k in ("image", "securityContext", "resources", "env", "volumeMounts"):
            assert c[k] == shared["containers"][0][k], k
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes.pop("dataset") == {"name": "dataset", "configMap": {"name": name}}
        assert list(volumes.values()) == [v for v in shared["volumes"] if v["name"] != "dataset"]
    # each StatefulSet selects its own partition's pod only
    for p, sts in parts.items():
        selected = [q for q, labels in pod_labels.items() if sts["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert selected == [p.removeprefix(f"{name}-")], (p, selected)


def test_the_partitioned_spec_configmap_is_a_valid_windowed_dataset_spec():
    from skiff.spec import parse_spec

    docs = render_ci("skiff", "full-values.yaml")
    spec = parse_spec(yaml.safe_load(by_kind(docs, "ConfigMap")["skiff-stream-machines"]["data"]["spec.yaml"]),
                      origin="the chart's stream spec")
    assert spec.windows is not None and [w.name for w in spec.windows.define] == ["m1"]


@pytest.mark.parametrize(
    ("consumers", "expected"),
    [
        ([_windowed(replicas=2)],
         "stream.consumers[0] (t): its spec declares windows, and 2 replicas on the shared subscription "
         "$share/t/a/b would split each device's readings"),
        ([_windowed(replicas=3, group="g")], "3 replicas on the shared subscription $share/g/a/b"),
        ([{**_consumer(), "partitions": [{"name": "p", "topics": ["a/b"]}]}], "give topic or partitions, not both"),
        ([{k: v for k, v in _consumer().items() if k != "topic"}], "give topic (one subscription, shared"),
        ([_partitioned(("p", ["a/1"]), replicas=2)], "replicas does not apply to partitions"),
        ([_partitioned(("p", ["a/1"]), group="g")], "group names a shared subscription"),
        ([_partitioned(("p", ["a/1"]), ("p", ["a/2"]))], 'the partition name "p" is used twice'),
        ([_partitioned(("p", ["a/1", "a/+"]))],
         'partition p lists the topic filters "a/1" and "a/+", which match the same topics'),
        ([_partitioned(("p", ["s/site-a/+"]), ("q", ["s/+/d1"]))],
         'partitions p and q overlap (the topic filters "s/site-a/+" and "s/+/d1" match the same topics)'),
        ([_partitioned(("x", ["a/1"])), _consumer(name="t-x")],
         'stream.consumers[1] (t-x): the StatefulSet name "skiff-stream-t-x" is taken'),
        ([_partitioned(("abcdefghijklmnop", ["a/1"]), name="a" * 26)], "longer than 52 characters"),
    ],
)
def test_stream_subscriptions_that_would_split_or_double_a_device_are_refused(tmp_path, consumers, expected):
    values = _values_file(tmp_path, {"stream": {"enabled": True, "consumers": consumers}})
    err = render_error("skiff", (str(PLATFORM / "ci/minimal-values.yaml"), values))
    assert expected in err, err


@pytest.mark.parametrize(
    "consumer",
    [_windowed(), _windowed(replicas=1), _consumer(replicas=4),
     _partitioned(("site-a", ["s/site-a/+/t"]), ("site-b", ["s/site-b/+/t"]), ("rest", ["s/site-c/#"])),
     _partitioned(("west", ["s/site-a/+/t", "s/site-b/+/t"]), ("east", ["s/site-c/#", "s/site-d/+/t"]))],
    ids=["windows-one-replica", "windows-replicas-1", "no-windows-shared", "windows-partitions",
         "windows-two-filters-per-partition"],
)
def test_stream_subscriptions_that_keep_each_device_at_one_consumer_render(tmp_path, consumer):
    values = _values_file(tmp_path, {"stream": {"enabled": True, "consumers": [consumer]}})
    docs = render("skiff", (str(PLATFORM / "ci/minimal-values.yaml"), values))
    topics = {n: _topic_args(d["spec"]["template"]["spec"]["containers"][0]["command"])
              for n, d in by_kind(docs, "StatefulSet").items()}
    if "partitions" in consumer:
        assert topics == {f"skiff-stream-t-{p['name']}": p["topics"] for p in consumer["partitions"]}
    else:
        assert topics == {"skiff-stream-t": [f"$share/t/{consumer['topic']}"]}


def _levels(*filters: str) -> list[str]:
    return sorted({lv for f in filters for lv in f.split("/") if lv not in ("+", "#")} | {"other"})


def _common_topic(a: str, b: str) -> str | None:
    """A topic both filters match by paho's own matcher, among every topic of up to one level more than the
    longer filter over their literal levels and one other."""
    import itertools

    from paho.mqtt.client import topic_matches_sub

    alphabet = _levels(a, b)
    for n in range(1, max(a.count("/"), b.count("/")) + 3):
        for levels in itertools.product(alphabet, repeat=n):
            topic = "/".join(levels)
            if topic_matches_sub(a, topic) and topic_matches_sub(b, topic):
                return topic
    return None


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("sensors/site-a/+/telemetry", "sensors/site-b/+/telemetry"),
        ("sensors/+/d1/telemetry", "sensors/site-a/+/telemetry"),
        ("sensors/site-a/#", "sensors/+/d1/telemetry"),
        ("sensors/site-a/#", "sensors/site-a"),
        ("sensors/site-a", "sensors/site-a/#"),
        ("sensors/site-a/+", "sensors/site-a"),
        ("sensors/+/telemetry", "sensors/+/+/telemetry"),
        ("sensors/+/telemetry", "sensors/+/+/#"),
        ("#", "sensors/x"),
        ("sensors/a", "sensors/a/b"),
        ("+/a", "b/+"),
    ],
)
def test_the_overlap_guard_agrees_with_the_mqtt_matcher(tmp_path, a, b):
    values = _values_file(tmp_path, {"stream": {"enabled": True, "consumers": [_partitioned(("p", [a]), ("q", [b]))]}})
    result = _template("skiff", (str(PLATFORM / "ci/minimal-values.yaml"), values), (), MONITORING_APIS, "skiff")
    refused = result.returncode != 0 and "partitions p and q overlap" in result.stderr
    assert refused is (_common_topic(a, b) is not None), (result.stderr, _common_topic(a, b))
    assert refused or result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("partition", "where"),
    [
        ({"name": "p", "topics": ["$share/g/a/b"]}, "/stream/consumers/0/partitions/0/topics/0"),
        ({"name": "p", "topics": ["a/#/b"]}, "/stream/consumers/0/partitions/0/topics/0"),
        ({"name": "p", "topics": ["a/b+"]}, "/stream/consumers/0/partitions/0/topics/0"),
        ({"name": "p", "topics": []}, "/stream/consumers/0/partitions/0/topics"),
        ({"name": "Site_A", "topics": ["a"]}, "/stream/consumers/0/partitions/0/name"),
        ({"name": "p", "topic": "a"}, "/stream/consumers/0/partitions/0"),
    ],
)
def test_stream_schema_refuses_partitions_that_are_no_topic_filters(tmp_path, partition, where):
    c = _windowed()
    c.pop("topic")
    values = _values_file(tmp_path, {"stream": {"enabled": True, "consumers": [{**c, "partitions": [partition]}]}})
    err = render_error("skiff", (str(PLATFORM / "ci/minimal-values.yaml"), values))
    assert "values don't meet the specifications of the schema" in err and where in err, err


@pytest.mark.integration
@pytest.mark.slow
def test_the_stream_command_line_consumes_a_shared_subscription(skiff_env):
    """The rendered consumer runs through the real CLI against the real broker: two pods' commands (their
    pod names as client ids) share one subscription and together write every message to the lake once."""
    require_service("Mosquitto", 1883)
    import paho.mqtt.client as mqtt

    from skiff.config import load_settings
    from skiff.lake import Lake

    topic = f"skiff-test/{os.getpid()}-{time.monotonic_ns()}"
    values = {"stream": {"enabled": True, "consumers": [{
        "name": "telemetry", "topic": f"{topic}/+", "replicas": 2, "batchRows": 10, "batchSeconds": 0.2,
        "spec": {"name": "telemetry", "entity_key": "machine_id",
                 "sources": [{"type": "mqtt", "host": "127.0.0.1", "port": 1883, "topic": f"{topic}/+"}],
                 "columns": {"machine_id": {"type": "string"}, "vibration": {"type": "float"}}}}]}}
    docs = render("skiff", (str(PLATFORM / "ci/minimal-values.yaml"), _values_file(skiff_env, values)))
    spec_text = by_kind(docs, "ConfigMap")["skiff-stream-telemetry"]["data"]["spec.yaml"]
    (skiff_env / "spec.yaml").write_text(spec_text)
    command = _stream(docs)["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:4] == ["python", "-m", "skiff", "stream"]
    command[command.index("--spec") + 1] = str(skiff_env / "spec.yaml")

    # the pod's own command line (python -m skiff stream ...), one process per pod, each named as its pod
    # the probes as rendered: each pod's port (rendered port here, two pods on one host: a free one each),
    # bound to loopback instead of the pod's 0.0.0.0
    (container,) = _stream(docs)["spec"]["template"]["spec"]["containers"]
    probes = {k: container[k]["httpGet"] for k in ("startupProbe", "livenessProbe", "readinessProbe")}
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert {p["port"] for p in probes.values()} <= set(named)
    assert command[command.index("--metrics-port") + 1] == str(named["metrics"])
    (scrape,) = by_kind(docs, "PodMonitor")["skiff-stream"]["spec"]["podMetricsEndpoints"]
    assert scrape["port"] in named
    argv, ports = {}, {}
    for pod in ("skiff-stream-telemetry-0", "skiff-stream-telemetry-1"):
        args = [pod if a == "$(POD_NAME)" else a for a in command] + ["--duration", "20"]
        ports[pod] = _free_port()
        args[args.index("--metrics-port") + 1] = str(ports[pod])
        args[args.index("--metrics-host") + 1] = "127.0.0.1"
        argv[pod] = args
    procs, logs, readers = _start_consumers(argv, skiff_env)  # both subscribed
    import httpx

    for pod, port in ports.items():  # connected and subscribed: every rendered probe answers 200
        for kind, probe in probes.items():
            r = httpx.get(f"http://127.0.0.1:{port}{probe['path']}", timeout=5)
            assert r.status_code == 200, (pod, kind, r.status_code, r.text)
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json() == {"ready": True}
        metrics = httpx.get(f"http://127.0.0.1:{port}{scrape['path']}", timeout=5).text
        assert 'skiff_stream_broker_connected{dataset="telemetry"} 1.0' in metrics, metrics[:2000]
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", 1883)
    pub.loop_start()
    for i in range(40):
        pub.publish(f"{topic}/m{i % 4}", json.dumps({"machine_id": f"m{i}", "vibration": i / 10}),
                    qos=1).wait_for_publish()
    pub.loop_stop()
    pub.disconnect()
    summaries = {}
    for pod, proc in procs.items():
        out = proc.stdout.read()
        assert proc.wait(timeout=60) == 0, f"{pod}: {''.join(logs[pod])[-2000:]}"
        summaries[pod] = json.loads(out)
    received = [s["counts"]["accepted"] for s in summaries.values()]
    assert sum(received) == 40 and all(received), summaries  # both got a share, nothing twice

    lake = Lake.from_settings(load_settings())
    runs = [name for date in lake.store.listdir("raw", "telemetry") for name in lake.store.listdir("raw", "telemetry", date)]
    assert {r.split("=", 1)[1].rsplit("-", 1)[0] for r in runs} <= {"skiff-stream-telemetry-0", "skiff-stream-telemetry-1"}
    import pyarrow.parquet as pq

    rows = []
    for date in lake.store.listdir("raw", "telemetry"):
        for run in lake.store.listdir("raw", "telemetry", date):
            for f in lake.store.listdir("raw", "telemetry", date, run):
                if f.endswith(".parquet"):
                    rows += pq.read_table(lake.store.local_path("raw", "telemetry", date, run, f)).column("machine_id").to_pylist()
    assert sorted(rows) == sorted(f"m{i}" for i in range(40))  # every message once, across both consumers


@pytest.mark.integration
@pytest.mark.slow
def test_partitioned_command_lines_keep_each_device_s_windows_at_one_consumer(skiff_env):
    """Two partitions of a windowed consumer (one on two topic filters), run as their pods' command lines through
    the real CLI against the real broker: each takes only its own devices' readings, neither warns of a shared subscription, and the
    windows of both together equal pandas over the lake's rows (each device's windows computed once, whole)."""
    require_service("Mosquitto", 1883)
    import pyarrow.parquet as pq

    from skiff.config import load_settings
    from skiff.lake import Lake
    from skiff.spec import parse_spec
    from tests.integration.test_stream_mqtt import publish
    from tests.integration.test_stream_windows_mqtt import lake_rows, lake_windows, reading, stream_of
    from tests.unit.test_stream_windows import BASE, WINDOWS, compare

    base = f"skiff-test/{os.getpid()}-{time.monotonic_ns()}"
    group_of = {"a": "g1", "b": "g1", "c": "g2"}
    data = stream_of(600)
    spec = {**BASE, "windows": WINDOWS,
            "sources": [{"type": "mqtt", "host": "127.0.0.1", "port": 1883, "topic": f"{base}/+/+"}]}
    values = {"stream": {"enabled": True, "consumers": [{
        "name": "sensors", "batchRows": 100, "batchSeconds": 0.3, "spec": spec,
        # g1 on two filters (one per device), g2 on one
        "partitions": [{"name": "g1", "topics": [f"{base}/g1/a", f"{base}/g1/b"]},
                       {"name": "g2", "topics": [f"{base}/g2/+"]}]}]}}
    docs = render("skiff", (str(PLATFORM / "ci/minimal-values.yaml"), _values_file(skiff_env, values)))
    spec_text = by_kind(docs, "ConfigMap")["skiff-stream-sensors"]["data"]["spec.yaml"]
    (skiff_env / "spec.yaml").write_text(spec_text)

    argv, expected = {}, {}
    for g in ("g1", "g2"):
        command = _stream(docs, f"skiff-stream-sensors-{g}")["spec"]["template"]["spec"]["containers"][0]["command"]
        command[command.index("--spec") + 1] = str(skiff_env / "spec.yaml")
        pod = f"skiff-stream-sensors-{g}-0"
        expected[pod] = sum(1 for r in data if group_of[r[0]] == g)
        args = [pod if a == "$(POD_NAME)" else a for a in command]
        args[args.index("--metrics-port") + 1] = str(_free_port())  # two pods on one host
        args[args.index("--metrics-host") + 1] = "127.0.0.1"
        args += ["--max-messages", str(expected[pod]), "--duration", "60"]
        argv[pod] = args
    procs, logs, readers = _start_consumers(argv, skiff_env)
    publish(lambda i: f"{base}/{group_of[data[i][0]]}/{data[i][0]}", [reading(*r) for r in data])
    summaries = {}
    for pod, proc in procs.items():
        out = proc.stdout.read()
        assert proc.wait(timeout=90) == 0, f"{pod}: {''.join(logs[pod])[-2000:]}"
        for r in readers:
            r.join(5)
        summaries[pod] = json.loads(out)
    assert {pod: s["counts"]["messages"] for pod, s in summaries.items()} == expected
    assert not any("shared subscription" in line for lines in logs.values() for line in lines), logs

    lake = Lake.from_settings(load_settings())
    refs = lake.all_runs("sensors")
    assert {ref.run_id.rsplit("-", 1)[0] for ref in refs} == set(procs)  # runs named by the partitions' pods
    devices_at: dict[str, set] = {pod: set() for pod in procs}
    for ref in refs:
        folder = Path(lake.store.uri(*ref.parts))
        for f in folder.glob("*.parquet"):
            if "device_id" in pq.read_schema(f).names:
                devices_at[ref.run_id.rsplit("-", 1)[0]] |= set(pq.read_table(f, columns=["device_id"])
                                                               .column("device_id").to_pylist())
    assert devices_at == {"skiff-stream-sensors-g1-0": {"a", "b"}, "skiff-stream-sensors-g2-0": {"c"}}
    rows = lake_rows(lake)
    assert len({(r[0], r[1]) for r in rows}) == len(rows)  # nothing stored twice
    compare(lake_windows(lake), rows, parse_spec(yaml.safe_load(spec_text)))


# --- every rendered object against the upstream schemas -------------------------------------------------

CORE_GROUPS = ("v1", "apps/v1", "batch/v1", "policy/v1", "networking.k8s.io/v1", "rbac.authorization.k8s.io/v1")


def _all_rendered() -> list[tuple[str, dict]]:
    out = [(f"{chart}/{name}", d) for chart, name in CI_CASES for d in render_ci(chart, name)]
    out += [(f"skiff/{Path(API_STREAM).name}", d) for d in render("skiff", (API_STREAM,))]
    return out


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_core_object_passes_the_kubernetes_schemas(version):
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (dev extra)")
    checked, problems = set(), []
    for source, doc in _all_rendered():
        if doc["apiVersion"] not in CORE_GROUPS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            problems.append(f"{source} {doc['kind']}/{doc['metadata']['name']}: {e.message} at {list(e.path)}")
        checked.add(doc["kind"])
    assert not problems, "\n".join(problems)
    assert {"Deployment", "StatefulSet", "Service", "Ingress", "NetworkPolicy", "PodDisruptionBudget",
            "ServiceAccount", "ConfigMap", "Role", "RoleBinding", "CronJob"} <= checked


def _crd_schema(rel: str, version: str) -> dict:
    from tests.cluster.conftest import upstream_yaml  # the suite's shared loader: skips naming the file

    crd = upstream_yaml(rel)
    (v,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return v["schema"]["openAPIV3Schema"]


def test_kserve_objects_pass_the_kserve_crds():
    jsonschema = pytest.importorskip("jsonschema")
    crds = "kserve/config/crd/full"
    schemas = {
        "ServingRuntime": _crd_schema(f"{crds}/serving.kserve.io_servingruntimes.yaml", "v1alpha1"),
        "InferenceService": _crd_schema(f"{crds}/serving.kserve.io_inferenceservices.yaml", "v1beta1"),
    }
    seen, problems = set(), []
    for source, doc in _all_rendered():
        if doc["kind"] in schemas:
            for err in jsonschema.Draft7Validator(schemas[doc["kind"]]).iter_errors(doc):
                problems.append(f"{source} {doc['kind']}/{doc['metadata']['name']}: {err.message} at {list(err.path)}")
            seen.add(doc["kind"])
    assert not problems, "\n".join(problems[:20])
    assert seen == set(schemas)


def test_api_and_stream_run_the_skiff_image_the_build_names():
    from components._image import BASE_IMAGE, REGISTRY

    docs = render("skiff", (API_STREAM,), (f"image.registry={REGISTRY}",))
    images = {
        kind: by_kind(docs, kind)[name]["spec"]["template"]["spec"]["containers"][0]["image"]
        for kind, name in (("Deployment", "skiff-api"), ("StatefulSet", "skiff-stream-telemetry"))
    }
    assert images == {"Deployment": BASE_IMAGE, "StatefulSet": BASE_IMAGE}


def test_the_chart_s_monitoring_objects_validate_against_the_prometheus_operator_crds():
    from tests.cluster.test_gitops_contract import assert_valid, crd_schema

    crds = "prometheus-operator/example/prometheus-operator-crd-full"
    plural = {"PodMonitor": "podmonitors", "PrometheusRule": "prometheusrules"}
    docs = [d for d in render("skiff", (str(PLATFORM / "ci/full-values.yaml"),))
            if d["apiVersion"].startswith("monitoring.coreos.com/")]
    assert {(d["kind"], d["metadata"]["name"]) for d in docs} >= {
        ("PrometheusRule", "skiff-serving"), ("PodMonitor", "skiff-serving"), ("PodMonitor", "skiff-api")}
    for d in docs:
        assert_valid(d, crd_schema(f"{crds}/monitoring.coreos.com_{plural[d['kind']]}.yaml", "v1"))
    alerts = {r["alert"] for d in docs if d["kind"] == "PrometheusRule" for g in d["spec"]["groups"]
              for r in g["rules"] if "alert" in r}
    assert {"SkiffModelFeatureDrift", "SkiffModelPredictionDrift", "SkiffDriftScoresStale"} <= alerts
