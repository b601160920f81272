"""The drift alerts and the dashboard's queries under Prometheus's own tool: ``promtool check rules`` parses
every expression, ``promtool test rules`` evaluates the drift alerts on series shaped like the API's
``/api/v1/metrics`` (two replicas exporting the same scores). Skips where promtool is not installed
(Debian: the ``prometheus`` package)."""

from __future__ import annotations

import json
import shutil
import subprocess

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
