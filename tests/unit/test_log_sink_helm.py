"""The platform chart's log sink: the Deployment runs the image's entry point as the serving service account
(whose cloud identity writes only the inference/ prefix), non-root with a read-only root file system and no
Kubernetes token; its Service is the URL KServe's logger defaults to; the values schema refuses bad rates."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from serving.deploy.logger import DEFAULT_SINK_URL, SINK_SERVICE
from skiff import layout
from tests.conftest import REPO, require_tool

CHART = REPO / "helm" / "skiff"


def _render(*sets: str) -> subprocess.CompletedProcess[str]:
    helm = require_tool("helm")
    args = [helm, "template", "skiff", str(CHART), "--namespace", "skiff", "-f", str(CHART / "ci" / "minimal-values.yaml"),
            "--set", "logSink.enabled=true"]
    for s in sets:
        args += ["--set-json", s] if "={" in s or "=[" in s else ["--set", s]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def _docs(out: str) -> dict[str, dict]:
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in yaml.safe_load_all(out) if d}


def test_the_sink_runs_least_privileged_behind_the_loggers_default_url():
    r = _render('logSink.sampleRates={"churn": 0.25}', "logSink.hashKey.secretName=log-key",
                'logSink.allowedNamespaces=["prod"]')
    assert r.returncode == 0, r.stderr
    docs = _docs(r.stdout)
    dep = docs[f"Deployment/{SINK_SERVICE}"]
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"][:4] == ["python", "-m", "serving", "log-sink"]
    assert pod["serviceAccountName"] == "skiff-serving" and pod["automountServiceAccountToken"] is False
    assert layout.ACCESS["serving"]["write"] == (layout.INFERENCE,)  # that identity writes the log only
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["runAsNonRoot"] is True
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert json.loads(env["SKIFF_INFERENCE_LOG_SAMPLE_RATES"]) == {"churn": 0.25}
    assert env["SKIFF_INFERENCE_LOG_KEY_FILE"] == "/etc/skiff/inference-log-key/key"
    assert {v["name"] for v in pod["volumes"]} == {"settings", "hash-key", "tmp"}
    svc = docs[f"Service/{SINK_SERVICE}"]
    assert f"http://{svc['metadata']['name']}.skiff.svc.cluster.local" == DEFAULT_SINK_URL
    assert svc["spec"]["ports"][0]["port"] == 80
    netpol = docs[f"NetworkPolicy/{SINK_SERVICE}"]
    assert netpol["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "prod"}


def test_off_by_default_and_bad_values_are_refused():
    helm = require_tool("helm")
    r = subprocess.run([helm, "template", "skiff", str(CHART), "-f", str(CHART / "ci" / "minimal-values.yaml")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and SINK_SERVICE not in r.stdout
    for bad in ("logSink.sampleRate=1.5", "logSink.replicas=0", "logSink.sample=1"):
        r = _render(bad)
        assert r.returncode != 0 and "logSink" in r.stderr, (bad, r.stderr[-300:])


@pytest.mark.parametrize("flag", ["logSink.enabled=true"])
def test_the_chart_lints_with_the_sink(flag):
    helm = require_tool("helm")
    r = subprocess.run([helm, "lint", str(CHART), "-f", str(CHART / "ci" / "minimal-values.yaml"), "--set", flag],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
