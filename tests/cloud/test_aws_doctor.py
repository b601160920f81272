"""skiff doctor --cloud aws against moto's server with IAM enforced: a bucket set up as the Terraform
module does passes every check for the pipeline identity; a misconfigured one fails exactly the checks that
are wrong, each with a fix, and the command exits 1. The write probes go through moto's own IAM
authorization of each request (signature and the user's policy), and leave nothing behind."""

from __future__ import annotations

import json

import pytest

from skiff.cli import main
from skiff.layout import ACCESS, PREFIXES
from tests.cloud.conftest import ACCOUNT, REGION, boto3_session, enforce_iam

BUCKET = "skiff-prod-models"
PREFIX = "skiff-prod"  # ECR repository prefix (the Terraform module's name)
IMAGES = ("skiff", "skiff-tfdv", "skiff-gpu")


def _bucket(good: bool) -> None:
    admin = boto3_session()
    s3 = admin.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    if not good:
        s3.put_bucket_encryption(Bucket=BUCKET, ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
        s3.put_public_access_block(Bucket=BUCKET, PublicAccessBlockConfiguration={
            "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": False,
            "RestrictPublicBuckets": False})
        return
    key = admin.client("kms").create_key(Description="skiff data")["KeyMetadata"]["Arn"]
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_encryption(Bucket=BUCKET, ServerSideEncryptionConfiguration={"Rules": [{
        "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key},
        "BucketKeyEnabled": True}]})
    s3.put_public_access_block(Bucket=BUCKET, PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
    ecr = admin.client("ecr")
    for name in IMAGES:
        ecr.create_repository(repositoryName=f"{PREFIX}/{name}", imageTagMutability="IMMUTABLE",
                              imageScanningConfiguration={"scanOnPush": True})


def _identity(monkeypatch, write_resources: list[str]) -> str:
    """An IAM user whose policy is what the doctor needs plus s3:PutObject on ``write_resources``; its keys
    become the environment's credentials."""
    iam = boto3_session().client("iam")
    arn = iam.create_user(UserName="pipeline")["User"]["Arn"]
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["sts:GetCallerIdentity", "ecr:DescribeRepositories"], "Resource": "*"},
        # AWS's action names; moto 5.2 authorizes the encryption and public access block reads as
        # s3:ListBucket, which skiff's identities hold anyway
        {"Effect": "Allow", "Action": ["s3:GetBucketLocation", "s3:GetBucketVersioning",
                                       "s3:GetEncryptionConfiguration", "s3:GetBucketPublicAccessBlock",
                                       "s3:ListBucket"], "Resource": f"arn:aws:s3:::{BUCKET}"},
        {"Effect": "Allow", "Action": ["s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion"],
         "Resource": write_resources},
    ]}
    iam.put_user_policy(UserName="pipeline", PolicyName="skiff", PolicyDocument=json.dumps(policy))
    keys = iam.create_access_key(UserName="pipeline")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", keys["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", keys["SecretAccessKey"])
    return arn


def _doctor(capsys, *extra: str) -> tuple[int, dict]:
    code = main(["doctor", "--cloud", "aws", "--json", *extra])
    return code, json.loads(capsys.readouterr().out)


@pytest.fixture
def root(aws, skiff_env, monkeypatch):
    monkeypatch.setenv("SKIFF_ROOT", f"s3://{BUCKET}/skiff")
    monkeypatch.setenv("SKIFF_IMAGE_REGISTRY", f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{PREFIX}")
    # components._image reads SKIFF_IMAGE_REGISTRY when imported: import it again under this environment
    import importlib

    import components._image

    importlib.reload(components._image)
    yield f"s3://{BUCKET}/skiff"
    monkeypatch.undo()
    importlib.reload(components._image)


def _leftovers(aws_url: str) -> list[str]:
    import httpx

    httpx.post(f"{aws_url}/moto-api/reset-auth", content=b"inf").raise_for_status()
    s3 = boto3_session(aws_access_key_id="testing", aws_secret_access_key="testing").client("s3")
    out = s3.list_object_versions(Bucket=BUCKET)
    return [v["Key"] for v in out.get("Versions", []) + out.get("DeleteMarkers", [])]


def test_a_bucket_set_up_like_the_terraform_module_passes(root, aws, monkeypatch, capsys):
    _bucket(good=True)
    writes = [f"arn:aws:s3:::{BUCKET}/skiff/{p}/*" for p in ACCESS["pipeline"]["write"]]
    arn = _identity(monkeypatch, writes)
    enforce_iam(aws)
    code, out = _doctor(capsys)
    by_name = {c["name"]: c for c in out["checks"]}
    assert code == 0 and out["ok"], [c for c in out["checks"] if not c["ok"]]
    assert arn in by_name["identity"]["detail"]
    assert "aws:kms" in by_name["encryption"]["detail"]
    for prefix in PREFIXES:
        should = prefix in ACCESS["pipeline"]["write"]
        assert ("not writable" not in by_name[f"write {prefix}"]["detail"]) == should, prefix
    assert "not writable" in by_name["write outside the root"]["detail"]
    assert {f"repository {PREFIX}/{n}" for n in IMAGES} <= set(by_name)
    assert _leftovers(aws) == [], "every probe and its version removed"


def test_a_misconfigured_bucket_fails_each_wrong_setting_with_a_fix(root, aws, monkeypatch, capsys):
    _bucket(good=False)
    _identity(monkeypatch, [f"arn:aws:s3:::{BUCKET}/*"])  # the wildcard grants every prefix and beyond
    enforce_iam(aws)
    code, out = _doctor(capsys)
    assert code == 1 and not out["ok"]
    failed = {c["name"]: c for c in out["checks"] if not c["ok"]}
    expected = {"versioning", "encryption", "public-access-block", "write outside the root",
                *(f"write {p}" for p in PREFIXES if p not in ACCESS["pipeline"]["write"]),
                *(f"repository {PREFIX}/{n}" for n in IMAGES)}
    assert set(failed) == expected
    assert all(c["fix"] for c in failed.values())
    assert "AES256" in failed["encryption"]["detail"] and "aws:kms" in failed["encryption"]["fix"]
    assert "BlockPublicPolicy" in failed["public-access-block"]["detail"]
    assert "wildcard" in failed["write rollouts"]["fix"]
    assert "skiff images push --registry ecr" in failed[f"repository {PREFIX}/skiff"]["fix"]
    assert _leftovers(aws) == []


def test_a_workload_that_cannot_write_its_prefix_is_told_what_to_grant(root, aws, monkeypatch, capsys):
    _bucket(good=True)
    _identity(monkeypatch, [f"arn:aws:s3:::{BUCKET}/skiff/inference/*"])
    enforce_iam(aws)
    code, out = _doctor(capsys, "--workload", "rollout")
    failed = {c["name"]: c for c in out["checks"] if not c["ok"]}
    assert code == 1
    assert set(failed) == {"write rollouts", "write inference"}
    assert f"s3:PutObject on arn:aws:s3:::{BUCKET}/skiff/rollouts/*" in failed["write rollouts"]["fix"]


def test_doctor_needs_an_s3_root(aws, skiff_env, capsys):
    assert main(["doctor", "--cloud", "aws"]) == 2
    assert "checks an S3 root" in capsys.readouterr().err


def _outputs(tmp_path, **extra):
    """`terraform output -json` of modules/aws-eks, as far as the doctor reads it (and one it does not)."""
    outputs = {
        "skiff_root": {"sensitive": False, "type": "string", "value": f"s3://{BUCKET}"},
        "ecr_repository_urls": {"sensitive": False, "type": ["map", "string"], "value": {
            n: f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{PREFIX}/{n}" for n in IMAGES}},
        "cluster_name": {"sensitive": False, "type": "string", "value": "skiff-prod"},
        **extra,
    }
    path = tmp_path / "eks-outputs.json"
    path.write_text(json.dumps(outputs))
    return path


def test_terraform_outputs_name_the_root_and_the_repositories(aws, skiff_env, tmp_path, monkeypatch, capsys):
    """No S3 root configured and no SKIFF_IMAGE_REGISTRY: the outputs say what Terraform made, and that is
    what is checked (the bucket at its root, the repositories of ecr_repository_urls)."""
    monkeypatch.delenv("SKIFF_IMAGE_REGISTRY", raising=False)
    _bucket(good=True)
    writes = [f"arn:aws:s3:::{BUCKET}/{p}/*" for p in ACCESS["pipeline"]["write"]]
    _identity(monkeypatch, writes)
    enforce_iam(aws)
    code, out = _doctor(capsys, "--tf-outputs", str(_outputs(tmp_path)))
    by_name = {c["name"]: c for c in out["checks"]}
    assert code == 0 and out["ok"], [c for c in out["checks"] if not c["ok"]]
    assert f"s3://{BUCKET} exists" in by_name["bucket"]["detail"]
    assert {f"repository {PREFIX}/{n}" for n in IMAGES} <= set(by_name)
    assert _leftovers(aws) == []
    # a repository Terraform lists that is gone fails (IAM off again for the admin's delete)
    import httpx

    httpx.post(f"{aws}/moto-api/reset-auth", content=b"inf").raise_for_status()
    boto3_session().client("ecr").delete_repository(repositoryName=f"{PREFIX}/skiff-gpu", force=True)
    code, out = _doctor(capsys, "--tf-outputs", str(_outputs(tmp_path)), "--no-probe")
    failed = [c["name"] for c in out["checks"] if not c["ok"]]
    assert code == 1 and failed == [f"repository {PREFIX}/skiff-gpu"]


def test_terraform_outputs_of_the_wrong_module_are_config_errors(aws, skiff_env, tmp_path, capsys):
    azure_like = _outputs(tmp_path, skiff_root={"value": "abfs://skiff@acct.dfs.core.windows.net"})
    assert main(["doctor", "--cloud", "aws", "--tf-outputs", str(azure_like)]) == 2
    assert "not an s3:// root" in capsys.readouterr().err
    (tmp_path / "none.json").write_text(json.dumps({"cluster_name": {"value": "x"}}))
    assert main(["doctor", "--cloud", "aws", "--tf-outputs", str(tmp_path / "none.json")]) == 2
    assert "neither skiff_root nor ecr_repository_urls" in capsys.readouterr().err
    assert main(["doctor", "--cloud", "aws", "--tf-outputs", str(tmp_path / "missing.json")]) == 2
    assert "terraform output -json" in capsys.readouterr().err
    assert main(["doctor", "--cloud", "aws", "--storage-account", "x"]) == 2
    assert "Azure's" in capsys.readouterr().err


# -- the workload roles Terraform made -------------------------------------------------------------------
ISSUER = "oidc.eks.us-east-1.amazonaws.com/id/0123456789ABCDEF"
PROVIDER = f"arn:aws:iam::{ACCOUNT}:oidc-provider/{ISSUER}"


def _workload_roles(iam, *, root: str = "") -> dict:
    """The five workload roles as modules/aws-eks (identities.tf) makes them, under the bucket's ``root``;
    returns the Terraform output service_accounts naming them."""
    base = f"{root}/" if root else ""
    accounts = {}
    for workload, rights in ACCESS.items():
        sa = f"skiff-{workload}"
        trust = {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "sts:AssumeRoleWithWebIdentity", "Principal": {"Federated": PROVIDER},
            "Condition": {"StringEquals": {f"{ISSUER}:sub": [f"system:serviceaccount:skiff:{sa}"],
                                           f"{ISSUER}:aud": ["sts.amazonaws.com"]}}}]}
        arn = iam.create_role(RoleName=f"{PREFIX}-{workload}", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
        statements = [
            {"Sid": "ListOwnPrefixes", "Effect": "Allow", "Action": ["s3:ListBucket"],
             "Resource": [f"arn:aws:s3:::{BUCKET}"]},
            {"Sid": "ReadOwnPrefixes", "Effect": "Allow", "Action": ["s3:GetObject"],
             "Resource": [f"arn:aws:s3:::{BUCKET}/{base}{p}/*" for p in rights["read"]]},
            {"Sid": "WriteOwnPrefixes", "Effect": "Allow",
             "Action": ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
             "Resource": [f"arn:aws:s3:::{BUCKET}/{base}{p}/*" for p in rights["write"]]},
            {"Sid": "UseTheDataKey", "Effect": "Allow", "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
             "Resource": [f"arn:aws:kms:{REGION}:{ACCOUNT}:key/data"]},
        ]
        iam.put_role_policy(RoleName=f"{PREFIX}-{workload}", PolicyName="skiff-storage",
                            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}))
        accounts[workload] = {"namespace": "skiff", "name": sa, "pod_labels": {},
                              "annotations": {"eks.amazonaws.com/role-arn": arn}}
    return accounts


def test_the_workload_roles_terraform_made_hold_their_least_rights(aws, skiff_env, tmp_path, capsys):
    _bucket(good=True)
    iam = boto3_session().client("iam")
    accounts = _workload_roles(iam)
    outputs = _outputs(tmp_path, service_accounts={"value": accounts})
    code, out = _doctor(capsys, "--tf-outputs", str(outputs), "--no-probe")
    by_name = {c["name"]: c for c in out["checks"]}
    assert code == 0 and out["ok"], [c for c in out["checks"] if not c["ok"]]
    assert {f"role {w}" for w in ACCESS} <= set(by_name)
    assert "assumed by system:serviceaccount:skiff:skiff-serving only, writes inference" in \
        by_name["role serving"]["detail"]

    # more than the least: each excess named, with the module as the fix
    wide = iam.create_policy(PolicyName="wide", PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))["Policy"]["Arn"]
    iam.attach_role_policy(RoleName=f"{PREFIX}-serving", PolicyArn=wide)
    loose = json.loads(json.dumps(iam.get_role(RoleName=f"{PREFIX}-rollout")["Role"]["AssumeRolePolicyDocument"]))
    loose["Statement"][0]["Condition"] = {"StringLike": {f"{ISSUER}:sub": "system:serviceaccount:skiff:*"}}
    iam.update_assume_role_policy(RoleName=f"{PREFIX}-rollout", PolicyDocument=json.dumps(loose))
    iam.put_role_policy(RoleName=f"{PREFIX}-pipeline", PolicyName="extra", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:Put*",
                                                "Resource": f"arn:aws:s3:::{BUCKET}/*"}]}))
    iam.delete_role_policy(RoleName=f"{PREFIX}-stream", PolicyName="skiff-storage")
    code, out = _doctor(capsys, "--tf-outputs", str(outputs), "--no-probe")
    failed = {c["name"]: c for c in out["checks"] if not c["ok"]}
    assert code == 1 and set(failed) == {"role serving", "role rollout", "role pipeline", "role stream"}
    assert "managed policy wide attached" in failed["role serving"]["detail"]
    assert "StringLike" in failed["role rollout"]["detail"]
    assert f"writes arn:aws:s3:::{BUCKET}/* (beyond pipeline's prefixes)" in failed["role pipeline"]["detail"]
    assert "cannot write lake/" in failed["role stream"]["detail"]
    assert all("identities.tf" in c["fix"] for c in failed.values())


def test_a_role_the_outputs_name_that_is_gone(aws, skiff_env, tmp_path, capsys):
    _bucket(good=True)
    accounts = {"serving": {"namespace": "skiff", "name": "skiff-serving",
                            "annotations": {"eks.amazonaws.com/role-arn": f"arn:aws:iam::{ACCOUNT}:role/gone"}}}
    code, out = _doctor(capsys, "--tf-outputs", str(_outputs(tmp_path, service_accounts={"value": accounts})),
                        "--no-probe")
    (role,) = [c for c in out["checks"] if c["name"] == "role serving"]
    assert code == 1 and not role["ok"] and "NoSuchEntity" in role["detail"] and "apply" in role["fix"]
