"""The Helm charts helm/skiff (the platform) and helm/skiff-model (one InferenceService).

Real tools, offline: `helm lint --strict` and `helm template` for every ci/*-values.yaml, the values
schema and the charts' validateValues, the terraform binary evaluating terraform/modules/platform's values,
checkov on the rendered manifests, and the skiff code itself: the per-model chart is compared with
`skiff render isvc`, the ServingRuntimes with serving/deploy/isvc.py, the settings with skiff's Settings, and the
rollout job's command line with the skiff CLI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from functools import cache
from pathlib import Path

import pytest
import yaml

from tests.checkov import failed_checks, run_checkov, summary
from tests.conftest import REPO

HELM = REPO / "helm"
PLATFORM = HELM / "skiff"
MODEL = HELM / "skiff-model"
CHARTS = {"skiff": PLATFORM, "skiff-model": MODEL}
NAMESPACE = "skiff"
MONITORING_APIS = ("monitoring.coreos.com/v1/PrometheusRule", "monitoring.coreos.com/v1/PodMonitor")
UID = 10001


# --- helpers ----------------------------------------------------------------------------------------


def _tool(name: str) -> str | None:
    local = REPO / ".tools" / "bin" / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which(name)


def _require_tool(name: str) -> str:
    path = _tool(name)
    if path is None:
        pytest.skip(f"{name} not found in .tools/bin or on PATH (`make test` fetches it)")
    return path


def ci_files(chart: str) -> list[Path]:
    return sorted((CHARTS[chart] / "ci").glob("*-values.yaml"))


CI_CASES = [(chart, f.name) for chart in CHARTS for f in ci_files(chart)]


def _helm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([_require_tool("helm"), *args], capture_output=True, text=True, timeout=120)


@cache
def _template(
    chart: str,
    values: tuple[str, ...] = (),
    sets: tuple[str, ...] = (),
    apis: tuple[str, ...] = MONITORING_APIS,
    release: str = "skiff",
) -> subprocess.CompletedProcess:
    args = ["template", release, str(CHARTS[chart]), "--namespace", NAMESPACE]
    for v in values:
        args += ["-f", str(v)]
    for s in sets:
        args += ["--set", s]
    for a in apis:
        args += ["--api-versions", a]
    return _helm(*args)


def render(
    chart: str,
    values: tuple[str, ...] = (),
    sets: tuple[str, ...] = (),
    apis: tuple[str, ...] = MONITORING_APIS,
    release: str = "skiff",
) -> list[dict]:
    """The chart's manifests as dicts; the render must succeed."""
    result = _template(chart, tuple(str(v) for v in values), tuple(sets), tuple(apis), release)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def render_ci(chart: str, name: str, **kw) -> list[dict]:
    return render(chart, (str(CHARTS[chart] / "ci" / name),), **kw)


def render_error(chart: str, values: tuple[str, ...] = (), sets: tuple[str, ...] = ()) -> str:
    result = _template(chart, tuple(str(v) for v in values), tuple(sets), MONITORING_APIS, "skiff")
    assert result.returncode != 0, f"helm template accepted {values} {sets}"
    return result.stderr


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_specs(doc: dict) -> list[tuple[str, dict]]:
    """(where, pod spec) of every pod a manifest runs: workloads and the InferenceService components."""
    kind, spec = doc["kind"], doc.get("spec") or {}
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return [(kind, spec["template"]["spec"])]
    if kind == "CronJob":
        return [(kind, spec["jobTemplate"]["spec"]["template"]["spec"])]
    if kind == "InferenceService":
        return [(f"{kind}.{c}", spec[c]) for c in ("predictor", "transformer") if c in spec]
    return []


def containers_of(where: str, spec: dict) -> list[dict]:
    if where == "InferenceService.predictor":
        return [spec["model"]]
    return spec["containers"]


def all_ci_docs() -> list[tuple[str, dict]]:
    return [(f"{chart}/{name}", d) for chart, name in CI_CASES for d in render_ci(chart, name)]


# --- chart metadata and values documentation --------------------------------------------------------


@pytest.mark.parametrize("chart", sorted(CHARTS))
def test_chart_metadata_pins_the_skiff_version(chart):
    from skiff import __version__

    meta = yaml.safe_load((CHARTS[chart] / "Chart.yaml").read_text())
    assert meta["apiVersion"] == "v2" and meta["name"] == chart and meta["type"] == "application"
    assert meta["appVersion"] == __version__
    assert re.fullmatch(r">=\s*1\.\d+\.\d+-0", meta["kubeVersion"]), meta["kubeVersion"]


def _key_lines(path: Path) -> list[tuple[int, str, str, bool]]:
    """(line number, dotted key path, key, documented) of every mapping key outside lists in values.yaml."""
    lines = path.read_text().splitlines()
    out, stack, list_indent = [], [], None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        if list_indent is not None and indent > list_indent:
            continue
        list_indent = None
        if stripped.startswith("- "):
            list_indent = indent
            continue
        m = re.match(r"^([A-Za-z][\w./-]*):(\s|$)", stripped)
        assert m, f"{path.name}:{i + 1}: cannot read {line!r}"
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = m.group(1)
        stack.append((indent, key))
        prev = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        documented = prev.startswith("#") or " #" in stripped
        if re.search(r":\s*$", stripped) is None and "{" in stripped:
            list_indent = indent  # a flow mapping: its inner keys are data
        out.append((i + 1, ".".join(k for _, k in stack), key, documented))
        if stripped.endswith(": |") or stripped.endswith(": >-"):
            list_indent = indent
    return out


def _schema_node(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["definitions"][node["$ref"].split("/")[-1]]
    return node


def _free_form(node: dict) -> bool:
    """A mapping whose keys are data (annotations, labels, storage options), not chart values."""
    return "properties" not in node and node.get("additionalProperties", True) is not False


@pytest.mark.parametrize("chart", sorted(CHARTS))
def test_every_value_is_documented_and_mirrored_by_the_schema(chart):
    values_file = CHARTS[chart] / "values.yaml"
    schema = json.loads((CHARTS[chart] / "values.schema.json").read_text())
    keys = _key_lines(values_file)
    assert len(keys) > 20

    # every key of values.yaml is a schema property (keys inside free-form maps are data) and has a comment
    paths, undocumented = set(), []
    for line, path, _, documented in keys:
        node, parts, data = schema, path.split("."), False
        for depth, part in enumerate(parts):
            node = _schema_node(schema, node)
            if depth and _free_form(node):
                data = True
                break
            assert part in node.get("properties", {}), f"{chart}: {path} is not in values.schema.json"
            node = node["properties"][part]
        if not data:
            paths.add(path)
            if not documented:
                undocumented.append(f"{values_file.name}:{line} {path}")
    assert not undocumented, f"values without a comment: {undocumented}"

    # ... and every schema property is a key of values.yaml (Helm's `global` aside)
    def walk(node: dict, prefix: str) -> list[str]:
        node = _schema_node(schema, node)
        found = []
        for name, child in node.get("properties", {}).items():
            if not prefix and name == "global":
                continue
            found.append(prefix + name)
            resolved = _schema_node(schema, child)
            if resolved.get("type") == "object" and not _free_form(resolved):
                found += walk(resolved, prefix + name + ".")
        return found

    missing = [p for p in walk(schema, "") if p not in paths]
    assert not missing, f"{chart}: schema properties without a value in values.yaml: {missing}"
    assert schema["additionalProperties"] is False


# --- lint and render every ci variant --------------------------------------------------------------


def test_ci_variants_exist():
    assert {f.name for f in ci_files("skiff")} >= {
        "minimal-values.yaml",
        "aws-irsa-values.yaml",
        "azure-workload-identity-values.yaml",
        "full-values.yaml",
        "terraform-values.yaml",
    }
    assert {f.name for f in ci_files("skiff-model")} >= {
        "minimal-values.yaml",
        "aws-irsa-values.yaml",
        "azure-workload-identity-values.yaml",
        "gpu-canary-values.yaml",
        "full-values.yaml",
        "terraform-values.yaml",
    }


@pytest.mark.parametrize(("chart", "name"), CI_CASES)
def test_helm_lint_strict(chart, name):
    result = _helm(
        "lint",
        "--strict",
        str(CHARTS[chart]),
        "--namespace",
        NAMESPACE,
        "-f",
        str(CHARTS[chart] / "ci" / name),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize(("chart", "name"), CI_CASES)
def test_ci_variant_renders_valid_objects(chart, name):
    docs = render_ci(chart, name)
    assert docs
    values = yaml.safe_load((CHARTS[chart] / "ci" / name).read_text()) or {}
    # KFP standalone's namespace gets a copy of the settings ConfigMap, nothing else
    elsewhere = (values.get("settings") or {}).get("pipelineNamespace") or NAMESPACE
    for d in docs:
        assert d["apiVersion"] and d["kind"] and d["metadata"]["name"], d
        where = d["metadata"].get("namespace")
        allowed = {NAMESPACE, elsewhere} if (d["kind"], d["metadata"]["name"]) == ("ConfigMap", "skiff-settings") \
            else {NAMESPACE}
        assert where in allowed, f"{d['kind']}/{d['metadata']['name']}: namespace {where}"
        labels = d["metadata"].get("labels") or {}
        assert labels.get("app.kubernetes.io/part-of") == "skiff", d["metadata"]


def test_every_pod_and_container_is_locked_down():
    checked: set[str] = set()
    for source, doc in all_ci_docs():
        for where, spec in pod_specs(doc):
            what = f"{source}: {doc['kind']}/{doc['metadata']['name']} {where}"
            psc = spec["securityContext"]
            assert psc["runAsNonRoot"] is True and psc["runAsUser"] == UID, what
            assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, what
            if doc["kind"] in ("Deployment", "StatefulSet", "CronJob"):  # only the rollout controller calls the API
                assert spec["automountServiceAccountToken"] is (doc["kind"] == "CronJob"), what
            tmp_volumes = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
            for c in containers_of(where, spec):
                sc = c["securityContext"]
                assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True, what
                assert sc["allowPrivilegeEscalation"] is False, what
                assert sc["capabilities"] == {"drop": ["ALL"]}, what
                assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, what
                for kind in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{what}: {kind}"
                tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
                assert tmp and tmp[0]["name"] in tmp_volumes, f"{what}: no writable /tmp"
            checked.add(where)
        if doc["kind"] == "ServingRuntime":  # its pods are the InferenceServices' (checked above)
            for c in doc["spec"]["containers"]:
                sc = c["securityContext"]
                assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"] == {"drop": ["ALL"]}
                assert sc["allowPrivilegeEscalation"] is False and sc["runAsNonRoot"] is True
    assert checked == {"Deployment", "StatefulSet", "CronJob", "InferenceService.predictor",
                       "InferenceService.transformer"}


# --- service accounts and RBAC ----------------------------------------------------------------------


def test_service_accounts_carry_the_cloud_identities():
    plain = by_kind(render_ci("skiff", "minimal-values.yaml"), "ServiceAccount")
    assert set(plain) == {"skiff-pipeline", "skiff-serving", "skiff-rollout"}
    assert all("annotations" not in sa["metadata"] for sa in plain.values())
    assert {n: sa["automountServiceAccountToken"] for n, sa in plain.items()} == {
        "skiff-pipeline": True,
        "skiff-serving": False,
        "skiff-rollout": True,
    }

    aws = by_kind(render_ci("skiff", "aws-irsa-values.yaml"), "ServiceAccount")
    for name, sa in aws.items():
        assert sa["metadata"]["annotations"] == {
            "eks.amazonaws.com/role-arn": f"arn:aws:iam::111122223333:role/{name}"
        }

    azure_docs = render_ci("skiff", "azure-workload-identity-values.yaml")
    azure = by_kind(azure_docs, "ServiceAccount")
    assert {sa["metadata"]["annotations"]["azure.workload.identity/client-id"] for sa in azure.values()} == {
        "00000000-0000-0000-0000-00000000000a",
        "00000000-0000-0000-0000-00000000000b",
        "00000000-0000-0000-0000-00000000000c",
    }
    # the workload identity webhook acts on pods with this label
    pods = [(d, spec) for d in azure_docs for _, spec in pod_specs(d)]
    assert {spec["serviceAccountName"] for _, spec in pods} == {"skiff-serving", "skiff-rollout"}
    for d, _ in pods:
        template = (
            d["spec"]["template"]
            if d["kind"] == "Deployment"
            else d["spec"]["jobTemplate"]["spec"]["template"]
        )
        assert template["metadata"]["labels"]["azure.workload.identity/use"] == "true", d["metadata"]["name"]

    # create: false keeps the binding to an existing account
    full = render_ci("skiff", "full-values.yaml")
    assert "skiff-rollout" not in by_kind(full, "ServiceAccount")
    assert by_kind(full, "RoleBinding")["skiff-rollout"]["subjects"][0]["name"] == "skiff-rollout"

    model_aws = render_ci("skiff-model", "aws-irsa-values.yaml")
    sa = by_kind(model_aws, "ServiceAccount")["skiff-serving-churn"]
    assert sa["automountServiceAccountToken"] is False
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(":role/skiff-serving-churn")
    assert (
        by_kind(model_aws, "InferenceService")["churn"]["spec"]["predictor"]["serviceAccountName"]
        == "skiff-serving-churn"
    )
    model_azure = by_kind(render_ci("skiff-model", "azure-workload-identity-values.yaml"), "InferenceService")
    for component in ("predictor", "transformer"):
        assert model_azure["churn"]["spec"][component]["labels"]["azure.workload.identity/use"] == "true"


PIPELINE_RULES = [
    {
        "apiGroups": [""],
        "resources": ["configmaps"],
        "resourceNames": ["skiff-settings", "kfp-launcher"],
        "verbs": ["get"],
    },
    {"apiGroups": ["argoproj.io"], "resources": ["workflowtaskresults"], "verbs": ["create", "patch"]},
]
ROLLOUT_RULES = [
    {
        "apiGroups": ["serving.kserve.io"],
        "resources": ["inferenceservices"],
        "verbs": ["get", "list", "watch", "patch"],
    },
]


def test_rbac_is_namespaced_least_privilege():
    docs = render_ci("skiff", "minimal-values.yaml")
    roles, bindings = by_kind(docs, "Role"), by_kind(docs, "RoleBinding")
    assert not [d for d in all_ci_docs() if d[1]["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    assert roles["skiff-pipeline"]["rules"] == PIPELINE_RULES
    assert roles["skiff-rollout"]["rules"] == ROLLOUT_RULES
    assert set(roles) == set(bindings) == {"skiff-pipeline", "skiff-rollout"}
    for name, b in bindings.items():
        assert b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}]
    # the serving account is bound to nothing
    subjects = {s["name"] for d in all_ci_docs() if d[1]["kind"] == "RoleBinding" for s in d[1]["subjects"]}
    assert "skiff-serving" not in subjects

    full = by_kind(render_ci("skiff", "full-values.yaml"), "Role")
    assert full["skiff-pipeline"]["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["skiff-settings", "kfp-launcher", "metadata-grpc-configmap"],
            "verbs": ["get"],
        },
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["skiff-redis", "skiff-database"],
            "verbs": ["get"],
        },
        PIPELINE_RULES[1],
    ]
    no_argo = by_kind(
        render(
            "skiff",
            (str(PLATFORM / "ci/minimal-values.yaml"),),
            ("rbac.pipeline.argoWorkflowTaskResults=false",),
        ),
        "Role",
    )
    assert no_argo["skiff-pipeline"]["rules"] == PIPELINE_RULES[:1]
    for _, d in all_ci_docs():
        for rule in d.get("rules", []) if d["kind"] == "Role" else []:
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(key, []), rule
    off = render("skiff", (str(PLATFORM / "ci/minimal-values.yaml"),), ("rbac.create=false",))
    assert not by_kind(off, "Role") and not by_kind(off, "RoleBinding")


# --- secrets ----------------------------------------------------------------------------------------

CREDENTIALS = {
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "password in a connection string": re.compile(r"(password=|://[^/\s:@]+:[^/\s@]+@)", re.I),
    "Azure storage key or SAS": re.compile(r"(AccountKey=|[?&]sig=)", re.I),
}


def _strings(node) -> list[str]:
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in [str(k), *_strings(v)]]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [str(node)]


def test_no_secret_values_in_charts_or_rendered_output():
    assert all(
        re.search(p, "x AKIAIOSFODNN7EXAMPLE redis://u:pw@h password=1")
        for p in (CREDENTIALS["AWS access key id"], CREDENTIALS["password in a connection string"])
    )
    docs = all_ci_docs()
    assert not [s for s, d in docs if d["kind"] == "Secret"]
    for source, d in docs:
        for text in _strings(d):
            hits = [what for what, p in CREDENTIALS.items() if p.search(text)]
            assert not hits, f"{source} {d['kind']}/{d['metadata']['name']}: {hits}"
    for chart in CHARTS.values():
        for f in [chart / "values.yaml", *sorted((chart / "ci").glob("*.yaml"))]:
            hits = [what for what, p in CREDENTIALS.items() if p.search(f.read_text())]
            assert not hits, f"{f.relative_to(REPO)}: {hits}"
    # the Redis connection string is only ever a reference
    fs = by_kind(render_ci("skiff", "aws-irsa-values.yaml"), "Deployment")["feast-feature-server"]
    env = {e["name"]: e for e in fs["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SKIFF_REDIS"] == {
        "name": "SKIFF_REDIS",
        "valueFrom": {"secretKeyRef": {"name": "skiff-redis", "key": "connection-string"}},
    }
    err = render_error(
        "skiff",
        (str(PLATFORM / "ci/minimal-values.yaml"),),
        ("storage.options.secret=abc", "storage.options.key=abc"),
    )
    assert "storage.options.secret is a credential" in err and "storage.options.key is a credential" in err


# --- the per-model chart ----------------------------------------------------------------------------


def _isvc(name: str, **kw) -> dict:
    return by_kind(render_ci("skiff-model", name, **kw), "InferenceService")


def test_canary_fields_only_with_a_canary():
    plain = _isvc("minimal-values.yaml")["churn"]
    p = plain["spec"]["predictor"]
    assert "canaryTrafficPercent" not in p
    assert not any(
        k in plain["metadata"]["annotations"] for k in ("skiff.io/stable-version", "skiff.io/canary-version")
    )
    assert p["model"]["storageUri"] == "s3://skiff-dev/skiff/models/churn/3" and p["model"]["args"][-1] == "3"

    canary = _isvc("gpu-canary-values.yaml")["vision-tf"]
    p = canary["spec"]["predictor"]
    assert p["canaryTrafficPercent"] == 10
    # the transformer is canaried with the predictor (issue 11, finding 7): the same share
    with_transformer = by_kind(render("skiff-model", (str(MODEL / "ci/gpu-canary-values.yaml"),), (
        "transformer.enabled=true", "transformer.featureService=vision_fs")), "InferenceService")["vision-tf"]
    assert with_transformer["spec"]["transformer"]["canaryTrafficPercent"] == 10
    # KServe gives the percent to the latest revision: the spec serves the canary
    assert p["model"]["storageUri"].endswith("/models/vision_tf/5") and p["model"]["args"] == [
        "vision_tf",
        "--version",
        "5",
    ]
    assert canary["metadata"]["labels"]["skiff.io/version"] == "5" and p["labels"]["skiff.io/version"] == "5"
    assert canary["metadata"]["annotations"]["skiff.io/stable-version"] == "4"
    assert canary["metadata"]["annotations"]["skiff.io/canary-version"] == "5"
    # a canary without a percent is deployed dark, like `skiff promote --canary-percent 0`
    dark = by_kind(
        render("skiff-model", (str(MODEL / "ci/minimal-values.yaml"),), ("canary.version=4",)),
        "InferenceService",
    )["churn"]
    assert dark["spec"]["predictor"]["canaryTrafficPercent"] == 0


def test_gpu_variant_gets_limits_selector_and_toleration():
    p = _isvc("gpu-canary-values.yaml")["vision-tf"]["spec"]["predictor"]
    res = p["model"]["resources"]
    assert res["limits"]["nvidia.com/gpu"] == res["requests"]["nvidia.com/gpu"] == "2"
    assert p["model"]["runtime"] == "skiff-tensorflow"
    assert p["nodeSelector"] == {"skiff.io/accelerator": "nvidia-gpu"}
    assert p["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}
    ]
    cpu = _isvc("minimal-values.yaml")["churn"]["spec"]["predictor"]
    assert "nvidia.com/gpu" not in cpu["model"]["resources"]["limits"]
    assert "nodeSelector" not in cpu and "tolerations" not in cpu
    # tensorflow gets one GPU unless told otherwise; gpu.count decides both ways
    base = (str(MODEL / "ci/minimal-values.yaml"),)
    tf = by_kind(render("skiff-model", base, ("model.flavor=tensorflow",)), "InferenceService")["churn"]
    assert tf["spec"]["predictor"]["model"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    tf0 = by_kind(
        render("skiff-model", base, ("model.flavor=tensorflow", "gpu.count=0")), "InferenceService"
    )["churn"]
    assert "tolerations" not in tf0["spec"]["predictor"]
    full = _isvc("full-values.yaml")["churn"]["spec"]["predictor"]  # gpu.count 0 on sklearn
    assert "tolerations" not in full and "nvidia.com/gpu" not in full["model"]["resources"]["limits"]


def test_transformer_only_when_enabled():
    assert "transformer" not in _isvc("minimal-values.yaml")["churn"]["spec"]
    t = _isvc("azure-workload-identity-values.yaml")["churn"]["spec"]["transformer"]
    c = t["containers"][0]
    assert c["image"] == "skiffprod.azurecr.io/skiff/skiff:0.1.0"
    assert c["args"] == [
        "--model",
        "churn",
        "--version",
        "7",  # ci/azure-workload-identity-values.yaml
        "--feature_service",
        "churn_fs_v2",
        "--feature_server_url",
        "http://feast-feature-server.skiff.svc.cluster.local:6566",
    ]
    assert t["imagePullSecrets"] == [{"name": "acr-pull"}]
    full = _isvc("full-values.yaml")["churn"]["spec"]["transformer"]["containers"][0]
    assert full["args"][-1] == "http://feast.features.svc.cluster.local:6566"
    assert full["image"].startswith("registry.example.com/skiff/skiff@sha256:")


# --- schema, required values and validateValues -----------------------------------------------------


@pytest.mark.parametrize(
    ("chart", "sets", "expected"),
    [
        ("skiff", ("featureServer.replcas=2",), "additional properties 'replcas' not allowed"),
        ("skiff", ("featureServer.replicas=two",), "at '/featureServer/replicas': got string, want integer"),
        ("skiff", ("cloud=gcp",), "at '/cloud'"),
        ("skiff", ("image.pullPolicy=Sometimes",), "at '/image/pullPolicy'"),
        ("skiff-model", ("model.flavr=sklearn",), "additional properties 'flavr' not allowed"),
        ("skiff-model", ("minReplicas=many",), "at '/minReplicas': got string, want integer"),
        ("skiff-model", ("deploymentMode=Raw",), "at '/deploymentMode'"),
        ("skiff-model", ("canary.percent=101",), "at '/canary/percent'"),
    ],
)
def test_schema_rejects_typos_and_wrong_types(chart, sets, expected):
    err = render_error(chart, (str(CHARTS[chart] / "ci/minimal-values.yaml"),), sets)
    assert "values don't meet the specifications of the schema" in err and expected in err, err


@pytest.mark.parametrize(
    ("chart", "sets", "expected"),
    [
        ("skiff", ("storage.root=",), "storage.root is required"),
        (
            "skiff",
            ("cloud=aws", "storage.root=abfs://c@a.dfs.core.windows.net"),
            "cloud aws needs an s3:// root",
        ),
        ("skiff", ("cloud=azure",), "cloud azure needs an abfs:// or abfss:// root"),
        (
            "skiff",
            ("featureServer.enabled=true", "featureServer.redis.secretName="),
            "featureServer.redis.secretName is required",
        ),
        ("skiff", ("api.enabled=true",), "settings.kfpHost is required while api.enabled"),
        (
            "skiff",
            ("api.enabled=true", "settings.kfpHost=http://kfp:8888", "database.secretName="),
            "database.secretName is required while api.enabled",
        ),
        (
            "skiff",
            ("api.enabled=true", "settings.kfpHost=http://kfp:8888", "api.ingress.enabled=true"),
            "api.ingress.host is required while api.ingress.enabled",
        ),
        (
            "skiff",
            (
                "api.enabled=true",
                "settings.kfpHost=http://kfp:8888",
                "api.ingress.enabled=true",
                "api.ingress.host=api.example.com",
            ),
            "api.ingress.tls.secretName is required while api.ingress.enabled",
        ),
        ("skiff", ("stream.enabled=true",), "stream.consumers is empty while stream.enabled"),
        ("skiff", ("serviceAccounts.api.name=skiff-serving",), "serviceAccounts.*.name must differ"),
        ("skiff", ("serviceAccounts.rollout.name=skiff-pipeline",), "serviceAccounts.*.name must differ"),
        ("skiff", ("rolloutController.enabled=true",), "rolloutController.environment.name is required"),
        ("skiff", ("rolloutController.enabled=true",), "rolloutController.rollouts is empty"),
        (
            "skiff",
            (
                "cloud=azure",
                "storage.root=abfs://c@a.dfs.core.windows.net",
                "serviceAccounts.serving.annotations.azure\\.workload\\.identity/client-id=x",
            ),
            "serviceAccounts.serving.podLabels needs azure.workload.identity/use",
        ),
        (
            "skiff",
            ("serviceAccounts.serving.annotations.aws-secret-access-key=x",),
            "serviceAccounts.serving.annotations.aws-secret-access-key looks like a credential",
        ),
        ("skiff-model", ("model.name=",), "model.name is required"),
        ("skiff-model", ("model.version=null",), "model.version is required"),
        ("skiff-model", ("storage.root=",), "storage.root is required"),
        ("skiff-model", ("canary.percent=20",), "canary.percent is set without canary.version"),
        ("skiff-model", ("canary.version=3",), "canary.version 3 equals model.version"),
        (
            "skiff-model",
            ("canary.version=4", "deploymentMode=RawDeployment"),
            "canary.version needs deploymentMode Serverless",
        ),
        (
            "skiff-model",
            ("transformer.enabled=true",),
            "transformer.enabled needs transformer.featureService",
        ),
        ("skiff-model", ("maxReplicas=1", "minReplicas=2"), "maxReplicas 1 is below minReplicas 2"),
        (
            "skiff-model",
            ("model.flavor=tensorflow", "gpu.nodeSelector=null", "gpu.tolerations=null"),
            "a GPU predictor needs gpu.nodeSelector or gpu.tolerations",
        ),
    ],
)
def test_required_values_and_validate_values_name_the_value(chart, sets, expected):
    err = render_error(chart, (str(CHARTS[chart] / "ci/minimal-values.yaml"),), sets)
    assert expected in err, err


def test_rollout_policy_must_end_at_full_promotion():
    err = render_error(
        "skiff",
        (str(PLATFORM / "ci/azure-workload-identity-values.yaml"),),
        ("rolloutController.policy.steps={10,50}",),
    )
    assert "rolloutController.policy.steps must end at 100" in err


# --- terraform's values ------------------------------------------------------------------------------


def _balanced_end(text: str, start: int) -> int:
    """Index after the bracket that closes text[start] (HCL strings skipped)."""
    closing = {"{": "}", "(": ")", "[": "]"}
    stack, i = [], start
    while i < len(text):
        ch = text[i]
        if ch == '"':
            i += 1
            while text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif ch in closing:
            stack.append(closing[ch])
        elif ch in ")}]":
            assert stack.pop() == ch
            if not stack:
                return i + 1
        i += 1
    raise AssertionError("unbalanced HCL")


def terraform_values(cloud: str, tmp: Path) -> dict:
    """Values terraform/modules/platform gives helm/skiff and one helm/skiff-model release, evaluated by the
    terraform binary from the module's own expressions (its locals block and the skiff_model release's
    yamlencode argument) for a cluster module's outputs."""
    terraform = _require_tool("terraform")
    module = REPO / "terraform/modules/platform"
    main = (module / "main.tf").read_text()
    # every locals block of the module (the values live in values.tf, the component pins in components.yaml)
    blocks = []
    for tf in sorted(module.glob("*.tf")):
        text = tf.read_text()
        blocks += [text[m.start() : _balanced_end(text, m.end() - 1)] for m in re.finditer(r"^locals\s*\{", text, re.M)]
    # a block over managed resources (namespaces, generated passwords) needs providers: not the values'
    blocks = [b for b in blocks if not re.search(r"\b(kubernetes|random|helm|aws|azurerm)_\w+\.\w+", b)]
    assert blocks, "terraform/modules/platform has no locals block"
    locals_block = "\n".join(blocks)
    res = re.search(r'resource\s+"helm_release"\s+"skiff_model"\s*\{', main)
    assert res, 'no resource "helm_release" "skiff_model"'
    body = main[res.start() : _balanced_end(main, res.end() - 1)]
    enc = body.index("yamlencode(") + len("yamlencode")
    model_values = body[enc + 1 : _balanced_end(body, enc) - 1].replace("each.key", "var.scratch_model_name")
    tmp.mkdir(parents=True)
    shutil.copy(module / "variables.tf", tmp / "variables.tf")
    for data in module.glob("*.yaml"):
        shutil.copy(data, tmp / data.name)
    (tmp / "scratch.tf").write_text(
        locals_block + '\nvariable "scratch_model_name" {\n  type = string\n}\n'
        'output "skiff_values" {\n  value = local.skiff_values\n}\n'
        f'output "model_values" {{\n  value = {model_values}\n}}\n'
    )
    if cloud == "aws":

        def sa(k):
            return {
                "namespace": "skiff",
                "name": f"skiff-{k}",
                "pod_labels": {},
                "annotations": {"eks.amazonaws.com/role-arn": f"arn:aws:iam::111122223333:role/skiff-{k}"},
            }

        root, registry = "s3://skiff-prod-data", "111122223333.dkr.ecr.eu-west-1.amazonaws.com/skiff"
    else:

        def sa(k):
            return {
                "namespace": "skiff",
                "name": f"skiff-{k}",
                "pod_labels": {"azure.workload.identity/use": "true"},
                "annotations": {"azure.workload.identity/client-id": f"client-id-of-{k}"},
            }

        root, registry = "abfs://skiff@skiffprod.dfs.core.windows.net", "skiffprod.azurecr.io/skiff"
    tfvars = {
        "cloud": cloud,
        "cluster_name": "skiff",
        "skiff_root": root,
        "image_registry": registry,
        "service_accounts": {k: sa(k) for k in ("pipeline", "serving", "rollout")},
        "kfp_runner": {**sa("pipeline"), "namespace": "kubeflow", "name": "pipeline-runner"},
        "ingress_domain": "models.example.com",
        "gpu_node_selector": {"skiff.io/accelerator": "nvidia-gpu"},
        "gpu_tolerations": [
            {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}
        ],
        "scratch_model_name": "churn",
    }
    (tmp / "terraform.tfvars.json").write_text(json.dumps(tfvars))
    env = dict(
        os.environ,
        CHECKPOINT_DISABLE="1",
        TF_IN_AUTOMATION="1",
        TF_INPUT="0",
        TF_DATA_DIR=str(tmp / ".terraform"),
    )
    env.pop("TF_CLI_ARGS", None)
    for args in (["init", "-backend=false"], ["apply", "-auto-approve", "-lock=false", "-refresh=false"]):
        run = subprocess.run(
            [terraform, *args, "-no-color"], cwd=tmp, env=env, capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0, run.stdout + run.stderr
    out = subprocess.run(
        [terraform, "output", "-json", "-no-color"],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    values = {k: v["value"] for k, v in json.loads(out.stdout).items()}
    return {"skiff": values["skiff_values"], "skiff-model": values["model_values"]}


def test_terraform_values_match_the_ci_mirror_and_render(tmp_path):
    aws = terraform_values("aws", tmp_path / "aws")
    assert yaml.safe_load((PLATFORM / "ci/terraform-values.yaml").read_text()) == aws["skiff"]
    # the module gives a model release its name; the version comes from the release's extra YAML
    mirror = yaml.safe_load((MODEL / "ci/terraform-values.yaml").read_text())
    assert mirror == {**aws["skiff-model"], "model": {**aws["skiff-model"]["model"], "version": 3}}

    azure = terraform_values("azure", tmp_path / "azure")
    (tmp_path / "skiff.yaml").write_text(yaml.safe_dump(azure["skiff"]))
    (tmp_path / "model.yaml").write_text(yaml.safe_dump(azure["skiff-model"]) + "---\n")
    (tmp_path / "extra.yaml").write_text("model: {version: 3}\n")
    accounts = by_kind(render("skiff", (str(tmp_path / "skiff.yaml"),)), "ServiceAccount")
    assert accounts["skiff-rollout"]["metadata"]["annotations"] == {
        "azure.workload.identity/client-id": "client-id-of-rollout"
    }
    isvc = by_kind(
        render("skiff-model", (str(tmp_path / "model.yaml"), str(tmp_path / "extra.yaml"))),
        "InferenceService",
    )["churn"]
    p = isvc["spec"]["predictor"]
    assert p["serviceAccountName"] == "skiff-serving"
    assert p["labels"]["azure.workload.identity/use"] == "true"
    assert p["model"]["storageUri"] == "abfs://skiff@skiffprod.dfs.core.windows.net/models/churn/3"


# --- parity with the skiff code ---------------------------------------------------------------------

ENVIRONMENT = {
    "name": "prod",
    "namespace": NAMESPACE,
    "registry": "s3://skiff-prod-data/skiff/models",
    "ingress_domain": "models.example.com",
    "feature_server_url": f"http://feast-feature-server.{NAMESPACE}.svc.cluster.local:6566",
    "gpu": {"node_selector": {"skiff.io/accelerator": "nvidia-gpu"}},
}
CHART_ENVIRONMENT = (
    "storage.root=s3://skiff-prod-data/skiff",
    "environment=prod",
    "ingressDomain=models.example.com",
)
# Where the chart's InferenceService legitimately differs from `skiff render isvc`: Helm's release
# labels (managed-by Helm, instance, helm.sh/chart) instead of managed-by skiff. Both run pods as the
# images' user (10001).
KNOWN_DIFFERENCES = {
    ("metadata", "labels", "app.kubernetes.io/managed-by"): ("skiff", "Helm"),
    ("metadata", "labels", "app.kubernetes.io/instance"): (None, "skiff"),
    ("metadata", "labels", "helm.sh/chart"): (None, "skiff-model-0.1.0"),
}


def _flatten(node, prefix=()) -> dict:
    if isinstance(node, dict):
        return {k: v for key, val in node.items() for k, v in _flatten(val, (*prefix, key)).items()}
    return {prefix: node}


@pytest.fixture
def model_registry(skiff_env, monkeypatch):
    from skiff.registry import ModelRegistry
    from skiff.storage import Store

    reg = ModelRegistry(Store(str(skiff_env / "models")))
    reg.register("churn", {"w": 1}, {"gate": {"promote": True}})  # 1
    reg.register("churn", {"w": 2}, {"gate": {"promote": True}, "feature_service": "churn_fs"})  # 2
    reg.register("vision_tf", {"w": 3}, {"flavor": "tensorflow", "gate": {"promote": True}})  # 1
    reg.register("shop_recs", {"w": 4}, {"flavor": "recommender", "gate": {"promote": True}})  # 1
    monkeypatch.setenv("SKIFF_REGISTRY", str(reg.store.root))
    envs = skiff_env / "environments"
    (envs / "prod").mkdir(parents=True)
    (envs / "prod/environment.yaml").write_text(yaml.safe_dump(ENVIRONMENT))
    monkeypatch.setenv("SKIFF_ENVIRONMENTS", str(envs))
    return reg


@pytest.mark.parametrize(
    ("cli_args", "chart_sets"),
    [
        (["churn", "--version", "1"], ("model.name=churn", "model.version=1")),
        (
            ["churn", "--version", "1", "--canary-version", "2", "--canary-percent", "10"],
            (
                "model.name=churn",
                "model.version=1",
                "canary.version=2",
                "canary.percent=10",
                "transformer.enabled=true",
                "transformer.featureService=churn_fs",
            ),
        ),
        (
            ["vision_tf", "--version", "1"],
            ("model.name=vision_tf", "model.version=1", "model.flavor=tensorflow"),
        ),
        (
            ["shop_recs", "--version", "1"],
            ("model.name=shop_recs", "model.version=1", "model.flavor=recommender"),
        ),
    ],
    ids=["plain", "canary-with-transformer", "tensorflow-gpu", "recommender-with-its-transformer"],
)
def test_model_chart_equals_skiff_render_isvc(model_registry, capsys, cli_args, chart_sets):
    from skiff.cli import main

    assert main(["render", "isvc", *cli_args, "--env", "prod"]) == 0
    rendered = yaml.safe_load(capsys.readouterr().out)
    (chart,) = [
        d
        for d in render("skiff-model", (), (*CHART_ENVIRONMENT, *chart_sets))
        if d["kind"] == "InferenceService"
    ]
    ours, theirs = _flatten(chart), _flatten(rendered)
    differing = {k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k)}
    expected = {k for k in KNOWN_DIFFERENCES if k[1] != "transformer" or "transformer" in rendered["spec"]}
    assert differing == expected, {k: (theirs.get(k), ours.get(k)) for k in differing ^ expected}
    for k in expected:  # each difference is exactly the documented one
        assert (theirs.get(k), ours.get(k)) == KNOWN_DIFFERENCES[k], k


@pytest.mark.parametrize("flavor", ["sklearn", "tensorflow", "recommender"])
def test_serving_runtimes_equal_the_isvc_builder(flavor):
    from components._image import BASE_IMAGE, GPU_IMAGE, REGISTRY
    from serving.deploy.gitops import EnvironmentConfig
    from serving.deploy.isvc import RuntimeImages, build_serving_runtime, to_dict

    env = EnvironmentConfig(**ENVIRONMENT)
    images = RuntimeImages(predictor=BASE_IMAGE, gpu_predictor=GPU_IMAGE, transformer=BASE_IMAGE)
    expected = to_dict(build_serving_runtime(env, flavor, images))
    docs = render("skiff", (str(PLATFORM / "ci/minimal-values.yaml"),), (f"image.registry={REGISTRY}",))
    ours = by_kind(docs, "ServingRuntime")[f"skiff-{flavor}"]
    assert (ours["apiVersion"], ours["kind"]) == (expected["apiVersion"], expected["kind"])
    assert ours["spec"] == expected["spec"]
    # and the GitOps folders hold the same runtime
    committed = REPO / "infra/rendered/dev" / f"servingruntime-{flavor}.yaml"
    if committed.is_file():
        assert yaml.safe_load(committed.read_text())["spec"] == ours["spec"]
    off = render("skiff", (str(PLATFORM / "ci/minimal-values.yaml"),), ("servingRuntimes.enabled=false",))
    assert not by_kind(off, "ServingRuntime")


def test_chart_copies_of_repo_files_are_identical():
    assert (PLATFORM / "files/feature_store.yaml").read_text() == (
        REPO / "feature_repo/feature_store.cluster.yaml"
    ).read_text()
    assert (PLATFORM / "files/prometheusrule.yaml").read_text() == (
        REPO / "infra/monitoring/prometheusrule.yaml"
    ).read_text()


def test_settings_configmap_is_valid_skiff_settings(tmp_path, monkeypatch):
    from skiff.config import load_settings

    docs = render_ci("skiff", "full-values.yaml")
    text = by_kind(docs, "ConfigMap")["skiff-settings"]["data"]["skiff.yaml"]
    (tmp_path / "skiff.yaml").write_text(text)
    for var in [v for v in os.environ if v.startswith("SKIFF_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("SKIFF_CONFIG", str(tmp_path / "skiff.yaml"))
    s = load_settings()
    assert s.root == "s3://skiff-prod-data/skiff" and s.registry_uri == "s3://skiff-prod-models/registry"
    assert s.storage_options == {"endpoint_url": "https://s3.eu-west-1.amazonaws.com"}
    assert s.kfp_host == "http://ml-pipeline.kubeflow.svc.cluster.local:8888"
    assert s.feature_store_yaml == "feature_store.cluster.yaml" and s.log_level == "DEBUG"
    assert s.tracking_uri == "https://mlflow.ml-platform.svc.cluster.local"  # pipeline steps log runs there
    minimal = yaml.safe_load(
        by_kind(render_ci("skiff", "minimal-values.yaml"), "ConfigMap")["skiff-settings"]["data"][
            "skiff.yaml"
        ]
    )
    assert minimal == {
        "root": "s3://skiff-dev/skiff",
        "registry": "s3://skiff-dev/skiff/models",
        "feature_store_yaml": "feature_store.cluster.yaml",
        "log_level": "INFO",
        # cluster runs execute in the release namespace as the pipeline account (pipelines.runner.RunTarget)
        "kfp_namespace": NAMESPACE,
        "kfp_service_account": "skiff-pipeline",
    }


def test_rollout_job_runs_the_skiff_cli_with_the_rendered_files(skiff_env, monkeypatch, capsys):
    """The CronJob's command, skiff.yaml and environment.yaml go through the real CLI up to the point
    where it needs the cluster's API."""
    from serving.deploy.gitops import EnvironmentConfig
    from skiff.cli import main

    docs = render_ci("skiff", "full-values.yaml")
    cron = by_kind(docs, "CronJob")["skiff-rollout-vision-tf"]
    assert cron["spec"]["suspend"] is True and cron["spec"]["concurrencyPolicy"] == "Forbid"
    job = cron["spec"]["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0 and job["activeDeadlineSeconds"] == 10800
    pod = job["template"]["spec"]
    assert pod["serviceAccountName"] == "skiff-rollout" and pod["restartPolicy"] == "Never"
    c = pod["containers"][0]
    assert c["command"][:5] == ["python", "-m", "skiff", "rollout", "start"]
    env = {e["name"]: e["value"] for e in c["env"]}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert env["SKIFF_CONFIG"] == mounts["settings"] + "/skiff.yaml"
    assert mounts["environment"] == env["SKIFF_ENVIRONMENTS"] + "/prod"

    maps = by_kind(docs, "ConfigMap")
    environment = yaml.safe_load(maps["skiff-environment"]["data"]["environment.yaml"])
    cfg = EnvironmentConfig.model_validate(environment)
    assert cfg.rollout.steps == [5, 25, 50, 100] and cfg.rollout.min_requests == 500
    assert cfg.rollout.max_p99_ratio == 1.25 and cfg.rollout.min_labels == 100
    assert cfg.namespace == NAMESPACE and cfg.service_account == "skiff-serving"

    (skiff_env / "etc/config").mkdir(parents=True)
    (skiff_env / "etc/config/skiff.yaml").write_text(maps["skiff-settings"]["data"]["skiff.yaml"])
    (skiff_env / "etc/environments/prod").mkdir(parents=True)
    (skiff_env / "etc/environments/prod/environment.yaml").write_text(
        maps["skiff-environment"]["data"]["environment.yaml"]
    )
    monkeypatch.delenv("SKIFF_ROOT")
    monkeypatch.setenv("SKIFF_CONFIG", str(skiff_env / "etc/config/skiff.yaml"))
    monkeypatch.setenv("SKIFF_ENVIRONMENTS", str(skiff_env / "etc/environments"))
    # no cluster: neither a kubeconfig (read at import time by the kubernetes client) nor in-cluster variables
    import kubernetes.config

    monkeypatch.setattr(kubernetes.config, "KUBE_CONFIG_DEFAULT_LOCATION", str(skiff_env / "no-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    code = main(c["command"][3:])
    err = capsys.readouterr().err
    assert code == 2 and "no Kubernetes configuration" in err, err


def test_monitoring_objects_only_with_their_crds():
    without = render("skiff", (str(PLATFORM / "ci/full-values.yaml"),), apis=())
    assert not [d for d in without if d["apiVersion"].startswith("monitoring.coreos.com")]
    docs = render_ci("skiff", "full-values.yaml")
    rule = by_kind(docs, "PrometheusRule")["skiff-serving"]
    infra = yaml.safe_load((REPO / "infra/monitoring/prometheusrule.yaml").read_text())
    assert rule["spec"] == infra["spec"]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    monitors = by_kind(docs, "PodMonitor")
    assert monitors["skiff-serving"]["spec"]["selector"] == {
        "matchExpressions": [{"key": "skiff.io/model", "operator": "Exists"}]
    }
    assert monitors["skiff-feature-server"]["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    # the drift gauges come from the API, scraped with a read token from a Secret
    api = monitors["skiff-api"]["spec"]
    assert api["selector"]["matchLabels"]["app.kubernetes.io/component"] == "api"
    (endpoint,) = api["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/api/v1/metrics")
    assert endpoint["authorization"] == {"type": "Bearer",
                                         "credentials": {"name": "skiff-api-scrape-token", "key": "token"}}
    off = render(
        "skiff",
        (str(PLATFORM / "ci/full-values.yaml"),),
        ("monitoring.prometheusRule.enabled=false", "monitoring.podMonitor.enabled=false",
         "monitoring.apiMetrics.enabled=false"),
    )
    assert not [d for d in off if d["apiVersion"].startswith("monitoring.coreos.com")]


def test_the_api_scrape_needs_a_token_secret():
    result = _template("skiff", (str(PLATFORM / "ci/full-values.yaml"),), ("monitoring.apiMetrics.tokenSecret.name=",))
    assert result.returncode != 0 and "monitoring.apiMetrics.tokenSecret.name" in result.stderr


def test_the_grafana_dashboard_ships_for_the_kube_prometheus_stack_sidecar():
    from tests.cluster.conftest import find_upstream

    # the label kube-prometheus-stack's Grafana sidecar selects by (its chart's values, when they are here)
    upstream = find_upstream("prometheus-community-helm-charts/charts/kube-prometheus-stack/values.yaml")
    sidecar = (yaml.safe_load(upstream.read_text())["grafana"]["sidecar"]["dashboards"] if upstream
               else {"label": "grafana_dashboard", "labelValue": "1"})
    assert (sidecar["label"], str(sidecar["labelValue"])) == ("grafana_dashboard", "1")
    cm = by_kind(render_ci("skiff", "full-values.yaml"), "ConfigMap")["skiff-dashboards"]
    assert cm["metadata"]["labels"][sidecar["label"]] == str(sidecar["labelValue"])
    dashboard = json.loads(cm["data"]["skiff-serving.json"])
    assert dashboard["uid"] == "skiff-serving"
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    # traffic, latency and errors from the model server's series; drift from the API's gauges
    for series in ("skiff_requests_total", "skiff_request_duration_seconds_bucket", 'status=~"5.."',
                   "skiff_drift_score", "skiff_drift_detected", "skiff_drift_window_end_timestamp_seconds"):
        assert series in exprs, series
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p["datasource"] == {"type": "prometheus", "uid": "${datasource}"} for p in dashboard["panels"]
               if p["type"] != "row")
    off = render("skiff", (str(PLATFORM / "ci/full-values.yaml"),), ("monitoring.dashboard.enabled=false",))
    assert "skiff-dashboards" not in by_kind(off, "ConfigMap")


def test_network_policies_deny_by_default_and_allow_what_skiff_needs():
    policies = by_kind(render_ci("skiff", "aws-irsa-values.yaml"), "NetworkPolicy")
    deny = policies["skiff-default-deny-ingress"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}
    serving_pods = {"podSelector": {"matchExpressions": [{"key": "skiff.io/model", "operator": "Exists"}]}}
    fs = policies["skiff-feature-server"]["spec"]
    assert fs["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "feature-server"
    assert fs["ingress"] == [{"from": [serving_pods], "ports": [{"port": 6566, "protocol": "TCP"}]}]
    pred = policies["skiff-predictors"]["spec"]
    assert pred["podSelector"] == serving_pods["podSelector"]
    names = [
        p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for p in pred["ingress"][0]["from"]
        if "namespaceSelector" in p
    ]
    assert names == ["istio-system", "knative-serving", "monitoring"]
    custom = by_kind(
        render(
            "skiff",
            (str(PLATFORM / "ci/minimal-values.yaml"),),
            ("networkPolicy.ingressNamespaces={gateways}", "networkPolicy.monitoringNamespaces=null"),
        ),
        "NetworkPolicy",
    )
    assert [
        p.get("namespaceSelector", {}).get("matchLabels")
        for p in custom["skiff-predictors"]["spec"]["ingress"][0]["from"]
    ] == [None, {"kubernetes.io/metadata.name": "gateways"}]
    off = render("skiff", (str(PLATFORM / "ci/minimal-values.yaml"),), ("networkPolicy.enabled=false",))
    assert not by_kind(off, "NetworkPolicy")


def test_feature_server_serves_the_cluster_feature_store():
    assert not by_kind(render_ci("skiff", "minimal-values.yaml"), "Deployment")  # off by default
    docs = render_ci("skiff", "aws-irsa-values.yaml")
    cm = by_kind(docs, "ConfigMap")["feast-feature-server"]
    assert cm["data"]["feature_store.yaml"] == (REPO / "feature_repo/feature_store.cluster.yaml").read_text()
    dep = by_kind(docs, "Deployment")["feast-feature-server"]
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["command"][:4] == ["feast", "--chdir", "/etc/feast", "serve"]
    assert c["command"][c["command"].index("--port") + 1] == "6566"
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["SKIFF_FEAST_DIR"] == "s3://skiff-prod-data/skiff/feast"
    assert {"name": "config", "mountPath": "/etc/feast", "readOnly": True} in c["volumeMounts"]
    assert pod["serviceAccountName"] == "skiff-serving" and pod["automountServiceAccountToken"] is False
    assert dep["spec"]["replicas"] == 2 and by_kind(docs, "PodDisruptionBudget")["feast-feature-server"]
    svc = by_kind(docs, "Service")["feast-feature-server"]
    assert svc["spec"]["ports"][0]["port"] == 6566
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    # the URL the GitOps environments and the per-model chart default to
    for env_name in ("dev", "staging", "prod"):
        env_file = yaml.safe_load((REPO / f"infra/environments/{env_name}/environment.yaml").read_text())
        assert (
            env_file["feature_server_url"]
            == f"http://{svc['metadata']['name']}.{NAMESPACE}.svc.cluster.local:6566"
        )


# --- checkov -----------------------------------------------------------------------------------------

SKIP_ANNOTATION = re.compile(r"checkov\.io/skip\d+:\s*(\S+?)=(.*)$")


def test_every_checkov_skip_names_a_check_and_a_reason():
    skips = []
    for p in HELM.rglob("templates/*.yaml"):
        for line in p.read_text().splitlines():
            if "checkov.io/skip" in line:
                m = SKIP_ANNOTATION.search(line)
                assert m and re.fullmatch(r"CKV2?_K8S_\d+", m.group(1)), f"{p.name}: {line.strip()}"
                assert len(m.group(2).strip()) >= 30, f"{p.name}: skip without a reason: {line.strip()}"
                skips.append(m.group(1))
    assert skips


@pytest.mark.slow
def test_checkov_finds_no_failed_checks(tmp_path):
    checkov = _require_tool("checkov")
    for chart, name in CI_CASES:
        result = _template(chart, (str(CHARTS[chart] / "ci" / name),), (), MONITORING_APIS, "skiff")
        assert result.returncode == 0, result.stderr
        (tmp_path / f"{chart}-{name}").write_text(result.stdout)
    started = time.monotonic()
    reports = run_checkov(checkov, "kubernetes", [tmp_path], tmp_path)
    elapsed = time.monotonic() - started
    failed, totals = failed_checks(reports), summary(reports)
    assert totals["parsing_errors"] == 0, totals
    assert not failed, "\n".join(
        f"{f['check_id']} {f['resource']} {f['file_path']} {f['check_name']}" for f in failed
    )
    assert totals["passed"] >= 400, totals  # a scan that checked next to nothing would pass vacuously
    assert elapsed < 120, f"checkov took {elapsed:.0f} s"
