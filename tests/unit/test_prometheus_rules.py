"""The drift alerts and the dashboard's queries under Prometheus's own tool: ``promtool check rules`` parses
every expression, ``promtool test rules`` evaluates the drift alerts on series shaped like the API's
``/api/v1/metrics`` (two replicas exporting the same scores). Skips where promtool is not installed
(Debian: the ``prometheus`` package)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

RULES = REPO / "infra/monitoring/prometheusrule.yaml"
DASHBOARD = REPO / "helm/skiff/files/dashboards/skiff-serving.json"


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return found


def _rule_file(tmp_path):
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": yaml.safe_load(RULES.read_text())["spec"]["groups"]}))
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120)


def test_every_rule_parses(promtool, tmp_path):
    result = _run(promtool, "check", "rules", str(_rule_file(tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_dashboard_query_parses(promtool, tmp_path):
    exprs = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p.get("targets", [])]
    assert exprs
    rules = [{"record": f"dashboard:query{i}", "expr": e.replace("$model", ".*").replace("$version", ".*")}
             for i, e in enumerate(exprs)]
    path = tmp_path / "dashboard.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = _run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_drift_alerts_fire_on_detected_scores_only(promtool, tmp_path):
    rules = _rule_file(tmp_path)

    def series(name: str, labels: str, values: str) -> list[dict[str, str]]:
        return [{"series": f'{name}{{{labels}, pod="{pod}"}}', "values": values} for pod in ("api-0", "api-1")]

    usage = 'model="churn", version="2", feature="usage", metric="psi"'
    seats = 'model="churn", version="2", feature="seats", metric="psi"'
    pred = 'model="churn", version="2", feature="prediction", metric="psi"'
    tests = {"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [
            *series("skiff_drift_score", usage, "0.061x10"), *series("skiff_drift_detected", usage, "1x10"),
            # above the threshold but not significant: not detected, no alert
            *series("skiff_drift_score", seats, "0.03x10"), *series("skiff_drift_detected", seats, "0x10"),
            *series("skiff_drift_score", pred, "0.004x10"), *series("skiff_drift_detected", pred, "0x10"),
        ],
        "alert_rule_test": [
            {"eval_time": "5m", "alertname": "SkiffModelFeatureDrift", "exp_alerts": [{
                "exp_labels": {"severity": "warning", "model": "churn", "version": "2", "feature": "usage",
                               "metric": "psi"},
                "exp_annotations": {
                    "summary": "churn version 2: input usage drifted (PSI 0.061)",
                    "description": _description("SkiffModelFeatureDrift", model="churn", version="2",
                                                feature="usage"),
                }}]},
            {"eval_time": "5m", "alertname": "SkiffModelPredictionDrift", "exp_alerts": []},
            {"eval_time": "5m", "alertname": "SkiffDriftScoresStale", "exp_alerts": []},
        ],
    }]}
    path = tmp_path / "tests.yml"
    path.write_text(yaml.safe_dump(tests))
    result = _run(promtool, "test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def _description(alert: str, **labels: str) -> str:
    """The alert's description with its label references filled in (the runbook text as it is sent)."""
    groups = yaml.safe_load(RULES.read_text())["spec"]["groups"]
    (rule,) = [r for g in groups for r in g["rules"] if r.get("alert") == alert]
    text = rule["annotations"]["description"]
    for name, value in labels.items():
        text = text.replace(f"{{{{ $labels.{name} }}}}", value)
    return text


def test_stale_scores_alert_only_for_versions_serving_traffic(promtool, tmp_path):
    rules = _rule_file(tmp_path)
    # promtool's clock starts at 0: a window that ended at -20000 s is over 3 h old at any eval time here
    tests = {"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [
            {"series": 'skiff_drift_window_end_timestamp_seconds{model="churn", version="2", pod="api-0"}',
             "values": "-20000x60"},
            {"series": 'skiff_drift_window_end_timestamp_seconds{model="churn", version="1", pod="api-0"}',
             "values": "-20000x60"},
            {"series": 'skiff_requests_total{model="churn", version="2", status="200", pod="p"}', "values": "0+10x60"},
            {"series": 'skiff_requests_total{model="churn", version="1", status="200", pod="p"}', "values": "5x60"},
        ],
        "alert_rule_test": [
            {"eval_time": "20m", "alertname": "SkiffDriftScoresStale", "exp_alerts": []},  # not for 30 min yet
            {"eval_time": "50m", "alertname": "SkiffDriftScoresStale", "exp_alerts": [{
                "exp_labels": {"severity": "info", "model": "churn", "version": "2"},
                "exp_annotations": {
                    "summary": "churn version 2 serves traffic but has no drift score of the last 3 hours",
                    "description": _description("SkiffDriftScoresStale", model="churn"),
                }}]},
        ],
    }]}
    path = tmp_path / "tests.yml"
    path.write_text(yaml.safe_dump(tests))
    result = _run(promtool, "test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def _promtool_test(promtool, tmp_path, input_series, alert_tests, interval="1m") -> None:
    tests = {"rule_files": [str(_rule_file(tmp_path))], "evaluation_interval": "1m",
             "tests": [{"interval": interval, "input_series": input_series, "alert_rule_test": alert_tests}]}
    path = tmp_path / "tests.yml"
    path.write_text(yaml.safe_dump(tests))
    result = _run(promtool, "test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_accuracy_below_floor_fires_when_the_interval_is_past_the_floor_only(promtool, tmp_path):
    def series(name: str, labels: str, values: str) -> list[dict[str, str]]:
        return [{"series": f'{name}{{{labels}, pod="{pod}"}}', "values": values} for pod in ("api-0", "api-1")]

    v2 = 'model="churn", version="2", metric="accuracy"'
    v2_auc = 'model="churn", version="2", metric="roc_auc"'
    v3 = 'model="churn", version="3", metric="accuracy"'
    _promtool_test(promtool, tmp_path, [
        *series("skiff_model_performance", v2, "0.71x10"), *series("skiff_model_performance_below_floor", v2, "1x10"),
        *series("skiff_model_performance_floor", v2, "0.85x10"),
        # a lower point estimate whose interval still reaches the floor (a small window): no alert
        *series("skiff_model_performance", v2_auc, "0.80x10"),
        *series("skiff_model_performance_below_floor", v2_auc, "0x10"),
        *series("skiff_model_performance", v3, "0.88x10"), *series("skiff_model_performance_below_floor", v3, "0x10"),
    ], [
        {"eval_time": "2m", "alertname": "SkiffModelAccuracyBelowFloor", "exp_alerts": [{
            "exp_labels": {"severity": "critical", "model": "churn", "version": "2", "metric": "accuracy"},
            "exp_annotations": {
                "summary": "churn version 2: accuracy 0.710 is below its floor on labeled traffic",
                "description": _description("SkiffModelAccuracyBelowFloor", model="churn", version="2",
                                            metric="accuracy"),
            }}]},
    ])


def test_error_rate_and_p99_alerts_fire_per_version_after_their_for_period(promtool, tmp_path):
    def bucket(version: str, le: str, per_minute: int) -> dict[str, str]:
        return {"series": f'skiff_request_duration_seconds_bucket{{model="churn", version="{version}", le="{le}"}}',
                "values": f"0+{per_minute}x30"}

    _promtool_test(promtool, tmp_path, [
        # version 2: 10 of 100 requests a minute fail; version 1: 1 of 100
        {"series": 'skiff_requests_total{model="churn", version="2", status="200"}', "values": "0+90x30"},
        {"series": 'skiff_requests_total{model="churn", version="2", status="500"}', "values": "0+10x30"},
        {"series": 'skiff_requests_total{model="churn", version="1", status="200"}', "values": "0+99x30"},
        {"series": 'skiff_requests_total{model="churn", version="1", status="503"}', "values": "0+1x30"},
        # version 2: most requests take 0.5-1 s; version 1: all under 0.1 s
        bucket("2", "0.1", 10), bucket("2", "0.5", 20), bucket("2", "1", 100), bucket("2", "+Inf", 100),
        bucket("1", "0.1", 100), bucket("1", "0.5", 100), bucket("1", "1", 100), bucket("1", "+Inf", 100),
    ], [
        {"eval_time": "4m", "alertname": "SkiffModelErrorRateHigh", "exp_alerts": []},  # pending for 5 m
        {"eval_time": "12m", "alertname": "SkiffModelErrorRateHigh", "exp_alerts": [{
            "exp_labels": {"severity": "critical", "model": "churn", "version": "2"},
            "exp_annotations": {
                "summary": "churn version 2: 10% of requests fail (5xx)",
                "description": _description("SkiffModelErrorRateHigh", model="churn", version="2"),
            }}]},
        {"eval_time": "8m", "alertname": "SkiffModelP99LatencyHigh", "exp_alerts": []},  # pending for 10 m
        {"eval_time": "20m", "alertname": "SkiffModelP99LatencyHigh", "exp_alerts": [{
            "exp_labels": {"severity": "warning", "model": "churn", "version": "2"},
            "exp_annotations": {
                "summary": "churn version 2: p99 latency 993.8ms",
                "description": _description("SkiffModelP99LatencyHigh", model="churn", version="2"),
            }}]},
    ])


def test_prediction_drift_fires_on_a_detected_prediction_score(promtool, tmp_path):
    pred = 'model="churn", version="2", feature="prediction", metric="psi"'
    _promtool_test(promtool, tmp_path, [
        {"series": f"skiff_drift_score{{{pred}}}", "values": "0.3x10"},
        {"series": f"skiff_drift_detected{{{pred}}}", "values": "1x10"},
    ], [
        {"eval_time": "1m", "alertname": "SkiffModelPredictionDrift", "exp_alerts": [{
            "exp_labels": {"severity": "warning", "model": "churn", "version": "2", "feature": "prediction",
                           "metric": "psi"},
            "exp_annotations": {
                "summary": "churn version 2: its predictions drifted (PSI 0.300)",
                "description": _description("SkiffModelPredictionDrift", model="churn", version="2"),
            }}]},
        {"eval_time": "1m", "alertname": "SkiffModelFeatureDrift", "exp_alerts": []},
    ])


def test_saturation_alerts_cpu_near_the_limit_and_a_dropping_inference_log(promtool, tmp_path):
    def pod(name: str, version: str) -> list[dict[str, str]]:
        labels = f'namespace="models", pod="{name}"'
        return [
            {"series": f'kube_pod_labels{{{labels}, label_skiff_io_model="churn", label_skiff_io_version="{version}", '
                       'label_serving_kserve_io_inferenceservice="churn"}', "values": "1x40"},
            {"series": f'kube_pod_container_resource_limits{{{labels}, container="kserve-container", '
                       'resource="cpu", unit="core"}', "values": "1x40"},
        ]

    def cpu(name: str, cores: float) -> dict[str, str]:
        return {"series": f'container_cpu_usage_seconds_total{{namespace="models", pod="{name}", '
                          'container="kserve-container"}', "values": f"0+{cores * 60:g}x40"}

    _promtool_test(promtool, tmp_path, [
        *pod("churn-v2-a", "2"), *pod("churn-v2-b", "2"), cpu("churn-v2-a", 0.95), cpu("churn-v2-b", 0.97),
        *pod("churn-v1-a", "1"), cpu("churn-v1-a", 0.3),
        {"series": 'skiff_inference_log_dropped_total{model="churn", pod="churn-v2-a"}', "values": "0+5x40"},
        {"series": 'skiff_inference_log_dropped_total{model="fraud", pod="fraud-a"}', "values": "7x40"},
    ], [
        {"eval_time": "10m", "alertname": "SkiffModelCpuSaturated", "exp_alerts": []},  # pending for 15 m
        {"eval_time": "25m", "alertname": "SkiffModelCpuSaturated", "exp_alerts": [{
            "exp_labels": {"severity": "warning", "namespace": "models", "model": "churn", "version": "2"},
            "exp_annotations": {
                "summary": "churn version 2: its predictors use 96% of their CPU limit",
                "description": _description("SkiffModelCpuSaturated", model="churn", version="2",
                                            namespace="models"),
            }}]},
        {"eval_time": "25m", "alertname": "SkiffInferenceLogDropping", "exp_alerts": [{
            "exp_labels": {"severity": "warning", "model": "churn"},
            "exp_annotations": {
                "summary": "churn: the inference log dropped 50 requests in 10 minutes",
                "description": _description("SkiffInferenceLogDropping", model="churn"),
            }}]},
    ])


def test_every_alert_has_a_promtool_test_that_sees_it_fire_and_a_runbook():
    """Each alert of the file is expected to fire (a non-empty exp_alerts) in a promtool test of this module."""
    import re

    groups = yaml.safe_load(RULES.read_text())["spec"]["groups"]
    rules = {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}
    source = Path(__file__).read_text()
    firing = set(re.findall(r'"alertname": "(\w+)", "exp_alerts": \[\{', source))
    assert set(rules) <= firing, f"alerts no promtool test sees fire: {sorted(set(rules) - firing)}"
    for name, rule in rules.items():
        text = rule["annotations"]["description"]
        assert "Runbook" in text or "skiff rollout" in text or "Check" in text, name


def test_the_dashboard_shows_accuracy_per_version_and_saturation():
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs = " ".join(t["expr"] for p in panels for t in p.get("targets", []))
    for series in ("skiff_model_performance{", "skiff_model_performance_floor", "skiff_model_performance_below_floor",
                   "container_cpu_usage_seconds_total", "kube_pod_container_resource_limits",
                   "skiff_inference_log_dropped_total"):
        assert series in exprs, series
    assert all('model=~"$model"' in t["expr"] or "label_skiff_io_model=~\"$model\"" in t["expr"]
               for p in panels for t in p.get("targets", [])), "every panel follows the $model filter"
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
