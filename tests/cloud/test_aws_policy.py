"""The Terraform module's least-privilege policy for skiff's cloud commands is enough for them: rendered
with an account, region and cluster, it is the only policy of an IAM user in moto (IAM enforced), and
images push (every tag present), the promote scan gate and doctor --no-probe all succeed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import hcl2
import pytest

from skiff.cli import main
from skiff.cloud.aws.ecr import ensure_repositories
from skiff.config import load_settings
from skiff.registry import ModelRegistry
from tests.cloud.conftest import ACCOUNT, REGION, boto3_session, enforce_iam

TF = Path(__file__).resolve().parents[2] / "terraform/modules/aws-eks/cloud_commands.tf"
NAME = "skiff-prod"  # var.name: the cluster and the ECR repository prefix
BUCKET = "skiff-prod-models"
TAG = "0.1.0"


def _unquote(v):
    if isinstance(v, str):
        return v[1:-1] if len(v) >= 2 and v[0] == v[-1] == '"' else v
    if isinstance(v, list):
        return [_unquote(x) for x in v]
    if isinstance(v, dict):
        return {_unquote(k): _unquote(x) for k, x in v.items() if not k.startswith("__")}
    return v


def rendered_policy(refs: dict[str, str]) -> dict:
    """The policy document as Terraform renders it, with these values for the references it makes."""
    doc = _unquote(hcl2.load(TF.open()))["data"][0]["aws_iam_policy_document"]["cloud_commands"]

    def value(text: str) -> str:
        out = re.sub(r"\$\{([^}]+)\}", lambda m: refs[m.group(1)], text)
        assert "${" not in out, text
        return out

    return {"Version": "2012-10-17", "Statement": [
        {"Sid": s["sid"], "Effect": "Allow", "Action": s["actions"], "Resource": [value(r) for r in s["resources"]]}
        for s in doc["statement"]]}


@pytest.fixture
def operator(aws, skiff_env, monkeypatch):
    admin = boto3_session()
    cluster = admin.client("eks").create_cluster(
        name=NAME, roleArn=f"arn:aws:iam::{ACCOUNT}:role/eks", resourcesVpcConfig={"subnetIds": ["s-1"]})["cluster"]
    key = admin.client("kms").create_key()["KeyMetadata"]["Arn"]
    admin.client("s3").create_bucket(Bucket=BUCKET)
    ecr = admin.client("ecr")
    ensure_repositories(ecr, [f"{NAME}/skiff"])
    ecr.put_image(repositoryName=f"{NAME}/skiff", imageTag=TAG, imageManifest=json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1,
                   "digest": "sha256:" + "a" * 64}, "layers": []}))
    ecr.start_image_scan(repositoryName=f"{NAME}/skiff", imageId={"imageTag": TAG})
    policy = rendered_policy({
        "aws_eks_cluster.this.arn": cluster["arn"], "aws_kms_key.data.arn": key,
        "aws_s3_bucket.this.arn": f"arn:aws:s3:::{BUCKET}", "local.partition": "aws", "local.region": REGION,
        "local.account_id": ACCOUNT, "var.name": NAME})
    # moto 5.2 authorizes ECR actions against the resource "*" only, so the repository scoping cannot be
    # checked here: the ECR statements keep their actions with "*" (what is proven is that the action list
    # suffices; the scoping is asserted on the rendered policy)
    for st in policy["Statement"]:
        if all(a.startswith("ecr:") for a in st["Action"]):
            assert st["Resource"] in (["*"], [f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{NAME}/*"]), st
            st["Resource"] = ["*"]
    # moto 5.2 authorizes the bucket encryption and public access block reads as s3:ListBucket (AWS:
    # s3:GetEncryptionConfiguration, s3:GetBucketPublicAccessBlock, which the policy grants)
    policy["Statement"].append({"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [f"arn:aws:s3:::{BUCKET}"]})
    iam = admin.client("iam")
    iam.create_user(UserName="operator")
    iam.put_user_policy(UserName="operator", PolicyName="skiff-cloud-commands", PolicyDocument=json.dumps(policy))
    keys = iam.create_access_key(UserName="operator")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", keys["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", keys["SecretAccessKey"])
    monkeypatch.setenv("SKIFF_ROOT", f"s3://{BUCKET}/skiff")
    enforce_iam(aws)
    return policy


def test_the_policy_grants_what_the_commands_call(operator, tmp_path, capsys):
    # kubeconfig reads one cluster (moto 5.2 cannot verify SigV4 on EKS's REST paths, so this one is read)
    (eks,) = [st for st in operator["Statement"] if st.get("Sid") == "KubeconfigForThisCluster"]
    assert eks["Action"] == ["eks:DescribeCluster"] and eks["Resource"] == [
        f"arn:aws:eks:{REGION}:{ACCOUNT}:cluster/{NAME}"]
    assert main(["images", "push", "--registry", "ecr", "--prefix", NAME, "--image", "skiff", "--tag", TAG,
                 "--json"]) == 0
    pushed = json.loads(capsys.readouterr().out)
    assert [i["action"] for i in pushed["images"]] == ["present"]

    # the scan gate of a promotion to an environment whose serving image is in ECR
    registry = ModelRegistry.from_settings(load_settings().model_copy(update={"root": str(tmp_path / "reg")}))
    registry.register("churn", {"w": 1}, {"gate": {"promote": True}})
    env = tmp_path / "envs/prod"
    (env / "models").mkdir(parents=True)
    (env / "environment.yaml").write_text(
        f"name: prod\nnamespace: skiff\ningress_domain: example.com\nimages:\n"
        f"  predictor: {ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{NAME}/skiff:{TAG}\n")
    assert main(["--root", str(tmp_path / "reg"), "promote", "churn", "--version", "1", "--env", "prod",
                 "--environments", str(tmp_path / "envs"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["scan_gate"]["images"][0]["blocked"] is False
    # doctor without write probes: the bucket's settings are readable (this bucket fails them: exit 1,
    # but no check fails for want of a permission)
    code = main(["doctor", "--cloud", "aws", "--no-probe", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    denied = [c for c in out["checks"] if "AccessDenied" in c["detail"] or "403" in c["detail"]]
    assert denied == []
    assert {c["name"] for c in out["checks"] if not c["ok"]} == {"versioning", "encryption", "public-access-block"}


def test_without_one_action_the_command_is_refused(aws, operator, capsys):
    """The test above would pass vacuously if moto did not enforce the policy: take one action away."""
    iam = boto3_session(aws_access_key_id="testing", aws_secret_access_key="testing").client("iam")
    import httpx

    httpx.post(f"{aws}/moto-api/reset-auth", content=b"inf").raise_for_status()
    for st in operator["Statement"]:
        st["Action"] = [a for a in st["Action"] if a != "ecr:DescribeImages"]
    iam.put_user_policy(UserName="operator", PolicyName="skiff-cloud-commands", PolicyDocument=json.dumps(operator))
    enforce_iam(aws)
    assert main(["images", "push", "--registry", "ecr", "--prefix", NAME, "--image", "skiff", "--tag", TAG]) == 2
    assert "ecr:DescribeImages" in capsys.readouterr().err


def test_the_policy_lets_the_doctor_read_the_workload_roles(aws, operator, tmp_path, capsys):
    """doctor --tf-outputs reads the roles Terraform made (trust, attached and inline policies) with the
    policy's IAM reads and nothing else; without iam:GetRolePolicy it says what to grant."""
    import httpx

    from tests.cloud.test_aws_doctor import _workload_roles

    httpx.post(f"{aws}/moto-api/reset-auth", content=b"inf").raise_for_status()
    admin = boto3_session(aws_access_key_id="testing", aws_secret_access_key="testing")
    accounts = _workload_roles(admin.client("iam"), root="skiff")
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps({"skiff_root": {"value": f"s3://{BUCKET}/skiff"},
                                   "service_accounts": {"value": accounts}}))
    enforce_iam(aws)
    code = main(["doctor", "--cloud", "aws", "--tf-outputs", str(outputs), "--no-probe", "--json"])
    roles = [c for c in json.loads(capsys.readouterr().out)["checks"] if c["name"].startswith("role ")]
    assert code == 1  # the bucket's settings (see above), not the roles
    assert len(roles) == 5 and all(c["ok"] for c in roles), roles

    httpx.post(f"{aws}/moto-api/reset-auth", content=b"inf").raise_for_status()
    for st in operator["Statement"]:
        st["Action"] = [a for a in st["Action"] if a != "iam:GetRolePolicy"]
    admin.client("iam").put_user_policy(UserName="operator", PolicyName="skiff-cloud-commands",
                                        PolicyDocument=json.dumps(operator))
    enforce_iam(aws)
    main(["doctor", "--cloud", "aws", "--tf-outputs", str(outputs), "--no-probe", "--json"])
    roles = [c for c in json.loads(capsys.readouterr().out)["checks"] if c["name"].startswith("role ")]
    assert roles and all(not c["ok"] and "AccessDenied" in c["detail"] and "iam:GetRolePolicy" in c["fix"]
                         for c in roles)
