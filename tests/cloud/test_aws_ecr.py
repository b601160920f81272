"""skiff's images in ECR against moto's server: repositories created safe, the registry login decoded,
a push skipped for a tag already there, and skiff promote's scan gate on real DescribeImageScanFindings
answers (moto's own, and CRITICAL findings injected through moto's HTTP API, each validated against
botocore's service model of the operation's output).

What is not proven here: the layer upload itself. moto implements ECR's control plane, not the registry
(Docker distribution) protocol; the Docker side of the push is covered by test_aws_push_engine.py, against
a real engine and registry.
"""

from __future__ import annotations

import json

import httpx
import pytest
import yaml

from skiff.cli import main
from skiff.cloud.aws.ecr import (
    EcrImage,
    ensure_repositories,
    lifecycle_policy,
    parse_ecr_image,
    push_images,
    registry_login,
)
from skiff.cloud.aws.session import session
from skiff.config import load_settings
from skiff.registry import ModelRegistry
from tests.cloud.conftest import ACCOUNT, REGION, boto3_session

HOST = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
TAG = "0.1.0"


def _manifest(seed: str) -> str:
    return json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 7023,
                   "digest": "sha256:" + seed * 64},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 32654,
                    "digest": "sha256:" + "e" * 64}],
    })


def test_parse_ecr_image_references():
    assert parse_ecr_image(f"{HOST}/skiff-dev/skiff:{TAG}") == EcrImage(ACCOUNT, REGION, "skiff-dev/skiff", TAG)
    digest = "sha256:" + "a" * 64
    assert parse_ecr_image(f"{HOST}/skiff@{digest}") == EcrImage(ACCOUNT, REGION, "skiff", None, digest)
    assert parse_ecr_image(f"{ACCOUNT}.dkr.ecr.cn-north-1.amazonaws.com.cn/x:1").region == "cn-north-1"
    assert parse_ecr_image("ghcr.io/skiff-ml/skiff:0.1.0") is None
    assert parse_ecr_image("localhost:5000/skiff:1") is None


def test_missing_repositories_are_created_scanned_immutable_encrypted_with_a_lifecycle(aws):
    ecr = boto3_session().client("ecr")
    ecr.create_repository(repositoryName="skiff-dev/skiff-gpu", imageTagMutability="MUTABLE")
    states = ensure_repositories(ecr, ["skiff-dev/skiff", "skiff-dev/skiff-gpu"])
    by_name = {s.name: s for s in states}
    assert by_name["skiff-dev/skiff"].created and not by_name["skiff-dev/skiff"].problems
    # an existing repository is left as it is (Terraform owns it) and its weak settings reported
    assert not by_name["skiff-dev/skiff-gpu"].created
    assert set(by_name["skiff-dev/skiff-gpu"].problems) == {"scan on push is off", "tags are mutable"}

    repo = ecr.describe_repositories(repositoryNames=["skiff-dev/skiff"])["repositories"][0]
    assert repo["imageTagMutability"] == "IMMUTABLE"
    assert repo["imageScanningConfiguration"] == {"scanOnPush": True}
    assert repo["encryptionConfiguration"]["encryptionType"] == "KMS"
    policy = ecr.get_lifecycle_policy(repositoryName="skiff-dev/skiff")["lifecyclePolicyText"]
    assert json.loads(policy) == json.loads(lifecycle_policy())
    assert json.loads(policy)["rules"][0]["selection"]["tagStatus"] == "untagged"
    # a second run creates nothing
    assert not any(s.created for s in ensure_repositories(ecr, ["skiff-dev/skiff"]))


def test_the_registry_login_comes_from_get_authorization_token(aws):
    login = registry_login(boto3_session().client("ecr"))
    assert login.registry == HOST
    assert login.username == "AWS" and login.password
    assert login.password not in repr(login)
    assert login.auth_config() == {"username": "AWS", "password": login.password, "serveraddress": HOST}


def test_push_creates_repositories_and_leaves_an_immutable_tag_that_is_there(aws):
    """Every image's tag is already in ECR: nothing is pushed (immutable tags) and no engine is needed."""
    ecr = boto3_session().client("ecr")
    ensure_repositories(ecr, ["skiff-dev/skiff"])
    digest = ecr.put_image(repositoryName="skiff-dev/skiff", imageManifest=_manifest("c"),
                           imageTag=TAG)["image"]["imageId"]["imageDigest"]
    images = {"skiff": "ghcr.io/skiff-ml/skiff:0.1.0", "skiff-tfdv": "ghcr.io/skiff-ml/skiff-tfdv:0.1.0"}
    ecr.create_repository(repositoryName="skiff-dev/skiff-tfdv", imageTagMutability="IMMUTABLE",
                          imageScanningConfiguration={"scanOnPush": True})
    ecr.put_image(repositoryName="skiff-dev/skiff-tfdv", imageManifest=_manifest("d"), imageTag=TAG)
    states, pushed = push_images(session(), images, prefix="skiff-dev", tag=TAG, client=None)
    assert [s.created for s in states] == [False, False]
    assert [(p.action, p.target) for p in pushed] == [("present", f"{HOST}/skiff-dev/skiff:{TAG}"),
                                                       ("present", f"{HOST}/skiff-dev/skiff-tfdv:{TAG}")]
    assert pushed[0].digest == digest


def test_images_push_command_refuses_an_unknown_image_and_a_missing_prefix(aws, capsys, monkeypatch):
    assert main(["images", "push", "--registry", "ecr", "--image", "nope", "--prefix", "p"]) == 2
    assert "unknown image(s) nope" in capsys.readouterr().err
    monkeypatch.delenv("SKIFF_IMAGE_REGISTRY", raising=False)
    assert main(["images", "push", "--registry", "ecr"]) == 2
    assert "--prefix" in capsys.readouterr().err


# -- the scan gate -------------------------------------------------------------------------------------
CRITICAL_FINDINGS = {
    "registryId": ACCOUNT,
    "repositoryName": "skiff-prod/skiff",
    "imageId": {"imageTag": TAG},
    "imageScanStatus": {"status": "COMPLETE", "description": "The scan was completed successfully."},
    "imageScanFindings": {
        "imageScanCompletedAt": "2026-11-30T10:00:00Z",
        "vulnerabilitySourceUpdatedAt": "2026-11-30T09:00:00Z",
        "findings": [
            {"name": "CVE-2026-0001", "uri": "https://nvd.nist.gov/vuln/detail/CVE-2026-0001", "severity": "CRITICAL",
             "attributes": [{"key": "package_name", "value": "openssl"},
                            {"key": "package_version", "value": "3.0.0"}]},
            {"name": "CVE-2026-0002", "severity": "HIGH", "attributes": []},
        ],
        "findingSeverityCounts": {"CRITICAL": 1, "HIGH": 1},
    },
}


def _validated_by_botocore(response: dict) -> dict:
    """The injected answer is one the real ECR API could give: botocore's output shape accepts it."""
    from botocore.validate import ParamValidator

    shape = boto3_session().client("ecr").meta.service_model.operation_model(
        "DescribeImageScanFindings").output_shape
    report = ParamValidator().validate(response, shape)
    assert not report.has_errors(), report.generate_report()
    return response


def _inject(moto_url: str, response: dict) -> None:
    httpx.post(f"{moto_url}/moto-api/static/ecr/scan-finding-results",
               json={"results": [_validated_by_botocore(response)], "region": REGION}).raise_for_status()


ENV_YAML = f"""\
name: prod
namespace: skiff
registry: s3://bucket/skiff/models
ingress_domain: models.example.com
images:
  predictor: {HOST}/skiff-prod/skiff:{TAG}
  gpu_predictor: {HOST}/skiff-prod/skiff-gpu:{TAG}
  transformer: {HOST}/skiff-prod/skiff:{TAG}
"""


@pytest.fixture
def prod(aws, skiff_env):
    """churn versions 1 and 2 (both passed their gate) and a prod environment whose images are in ECR."""
    reg = ModelRegistry.from_settings(load_settings())
    reg.register("churn", {"w": 1}, {"gate": {"promote": True, "reason": "first"}})
    reg.register("churn", {"w": 2}, {"gate": {"promote": True, "reason": "better"}})
    root = skiff_env / "infra/environments/prod"
    (root / "models").mkdir(parents=True)
    (root / "environment.yaml").write_text(ENV_YAML)
    ecr = boto3_session().client("ecr")
    ensure_repositories(ecr, ["skiff-prod/skiff", "skiff-prod/skiff-gpu"])
    ecr.put_image(repositoryName="skiff-prod/skiff", imageManifest=_manifest("a"), imageTag=TAG)
    return root / "models" / "churn.yaml", ecr


def _promote(*extra: str) -> int:
    return main(["promote", "churn", "--version", "2", "--env", "prod", *extra])


def test_promote_refuses_a_serving_image_with_critical_findings(prod, aws, capsys):
    model_file, ecr = prod
    ecr.start_image_scan(repositoryName="skiff-prod/skiff", imageId={"imageTag": TAG})
    _inject(aws, CRITICAL_FINDINGS)
    assert _promote() == 1
    err = capsys.readouterr().err
    assert "ECR's scan gate" in err and "CVE-2026-0001" in err and "--force --reason" in err
    assert not model_file.exists(), "nothing recorded"

    assert _promote("--force") == 2, "an override needs a reason"
    assert "needs --reason" in capsys.readouterr().err
    assert not model_file.exists()

    assert _promote("--force", "--reason", "fix ships tomorrow; exposure reviewed", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["scan_gate"]["overridden"] is True
    (verdict,) = out["scan_gate"]["images"]
    assert verdict["blocked"] and verdict["critical"] == ["CVE-2026-0001"]
    assert verdict["severity_counts"] == {"CRITICAL": 1, "HIGH": 1}
    entry = yaml.safe_load(model_file.read_text())["history"][-1]
    assert entry["forced"] is True and entry["version"] == 2
    assert entry["reason"].startswith("fix ships tomorrow; exposure reviewed [ECR scan gate overridden (")
    assert "1 CRITICAL finding(s): CVE-2026-0001" in entry["reason"]


def test_promote_passes_an_image_whose_scan_has_no_critical_finding(prod, capsys):
    """moto's own scan answer: one HIGH finding, which does not block."""
    model_file, ecr = prod
    ecr.start_image_scan(repositoryName="skiff-prod/skiff", imageId={"imageTag": TAG})
    assert _promote("--json") == 0
    out = json.loads(capsys.readouterr().out)
    (verdict,) = out["scan_gate"]["images"]
    assert verdict["image"] == f"{HOST}/skiff-prod/skiff:{TAG}"
    assert not verdict["blocked"] and verdict["severity_counts"] == {"HIGH": 1}
    assert yaml.safe_load(model_file.read_text())["version"] == 2


@pytest.mark.parametrize("case", ["not scanned", "not pushed", "scan failed"])
def test_promote_refuses_an_image_without_a_finished_scan(prod, aws, capsys, case):
    model_file, ecr = prod
    if case == "not pushed":
        ecr.batch_delete_image(repositoryName="skiff-prod/skiff", imageIds=[{"imageTag": TAG}])
    if case == "scan failed":
        ecr.start_image_scan(repositoryName="skiff-prod/skiff", imageId={"imageTag": TAG})
        _inject(aws, {**{k: CRITICAL_FINDINGS[k] for k in ("registryId", "repositoryName", "imageId")},
                      "imageScanStatus": {"status": "FAILED", "description": "UnsupportedImageError"}})
    assert _promote() == 1
    err = capsys.readouterr().err
    assert {"not scanned": "no scan of this image", "not pushed": "not in ECR",
            "scan failed": "the scan is FAILED"}[case] in err
    assert not model_file.exists()


def test_an_environment_outside_ecr_makes_no_aws_call(skiff_env, monkeypatch, capsys):
    """No ECR image: the gate is skipped before any client is made (a dead endpoint proves it)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    reg = ModelRegistry.from_settings(load_settings())
    reg.register("churn", {"w": 1}, {"gate": {"promote": True}})
    root = skiff_env / "infra/environments/dev"
    (root / "models").mkdir(parents=True)
    (root / "environment.yaml").write_text(ENV_YAML.split("images:")[0].replace("prod", "dev"))
    assert main(["promote", "churn", "--version", "1", "--env", "dev", "--json"]) == 0
    assert "scan_gate" not in json.loads(capsys.readouterr().out)


def test_enhanced_scanning_findings_count_too():
    """Enhanced scanning (Amazon Inspector) answers with enhancedFindings and an ACTIVE status."""
    from skiff.cloud.aws.ecr import scan_verdict

    response = _validated_by_botocore({
        "registryId": ACCOUNT, "repositoryName": "skiff-prod/skiff", "imageId": {"imageTag": TAG},
        "imageScanStatus": {"status": "ACTIVE", "description": "Continuous scan is selected for image."},
        "imageScanFindings": {
            "enhancedFindings": [
                {"awsAccountId": ACCOUNT, "severity": "CRITICAL", "status": "ACTIVE", "type": "PACKAGE_VULNERABILITY",
                 "title": "CVE-2026-0003 - glibc", "packageVulnerabilityDetails": {
                     "vulnerabilityId": "CVE-2026-0003", "source": "NVD",
                     "vulnerablePackages": [{"name": "glibc", "version": "2.36"}]}},
                {"awsAccountId": ACCOUNT, "severity": "MEDIUM", "status": "ACTIVE", "type": "PACKAGE_VULNERABILITY",
                 "title": "CVE-2026-0004 - zlib", "packageVulnerabilityDetails": {"vulnerabilityId": "CVE-2026-0004"}},
            ],
            "findingSeverityCounts": {"CRITICAL": 1, "MEDIUM": 1},
        },
    })
    verdict = scan_verdict(response, f"{HOST}/skiff-prod/skiff:{TAG}")
    assert verdict.blocked and verdict.critical == ("CVE-2026-0003",)
    assert verdict.why == "1 CRITICAL finding(s): CVE-2026-0003"
    clean = {**response, "imageScanFindings": {"enhancedFindings": [], "findingSeverityCounts": {}}}
    assert not scan_verdict(_validated_by_botocore(clean), "x").blocked
