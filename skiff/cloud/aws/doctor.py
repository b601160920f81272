"""``skiff doctor --cloud aws``: what skiff relies on in the account, checked, each with how to fix it.

- **identity**: STS ``GetCallerIdentity`` answers (the credentials work) and says who runs the checks.
- **bucket**: the root's bucket exists and is readable; **versioning** is enabled (a registry version or a
  lake run overwritten or deleted by mistake can be restored); **default encryption** is SSE-KMS; the
  **public access block** has all four settings on.
- **prefixes**: for the workload the caller stands for (``pipeline`` by default), each prefix skiff writes
  under the root (:data:`skiff.layout.ACCESS`) is writable and every other prefix — and the bucket outside
  the root — is not. IAM policy simulation (``iam:SimulatePrincipalPolicy``) sees only identity policies,
  not the bucket policy or the KMS key policy, and the emulator the tests use does not implement it, so
  the check is a probe: one small object put under each prefix (``.skiff-doctor/<random>``) and removed
  again (its version too, in a versioned bucket). A denied put is the expected answer for a prefix the
  workload must not write.
- **repositories**: the ECR repositories of skiff's images exist, scan on push and keep tags immutable.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from skiff import layout
from skiff.cloud import Check, output_value
from skiff.cloud.aws.ecr import describe_repositories, repository_state
from skiff.cloud.aws.session import botocore_exceptions, error_code
from skiff.errors import ConfigError, SkiffError

__all__ = ["run_checks", "split_s3_root", "from_outputs", "PROBE_FOLDER"]

#: Where a write probe goes under a prefix (removed again at once).
PROBE_FOLDER = ".skiff-doctor"
_TF = "terraform/modules/aws-eks"
_DENIED = ("AccessDenied", "AccessDeniedException", "403", "Forbidden")


def split_s3_root(root: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (``bucket``, ``some/prefix``)."""
    if not root.startswith("s3://"):
        raise ConfigError(f"skiff doctor --cloud aws checks an S3 root; the root is {root!r} "
                          "(set SKIFF_ROOT=s3://bucket/prefix or root: in skiff.yaml)")
    bucket, _, prefix = root[len("s3://"):].partition("/")
    if not bucket:
        raise ConfigError(f"{root!r} names no bucket")
    return bucket, prefix.strip("/")


def from_outputs(outputs: Mapping[str, Any]) -> tuple[str | None, list[str] | None]:
    """``(root, repositories)`` from ``terraform output -json`` of modules/aws-eks: the output ``skiff_root``
    (what the charts set SKIFF_ROOT to) and the repository names of ``ecr_repository_urls``; None for
    what the outputs lack."""
    root = output_value(outputs, "skiff_root")
    if root is not None and (not isinstance(root, str) or not root.startswith("s3://")):
        raise ConfigError(f"the Terraform output skiff_root is {root!r}, not an s3:// root "
                          "(outputs of terraform/modules/aws-eks expected)")
    urls = output_value(outputs, "ecr_repository_urls")
    repositories = None
    if urls is not None:
        if not isinstance(urls, dict) or not all(isinstance(u, str) and "/" in u for u in urls.values()):
            raise ConfigError("the Terraform output ecr_repository_urls must map image names to repository URLs")
        repositories = [u.split("/", 1)[1] for _, u in sorted(urls.items())]
    if root is None and repositories is None:
        raise ConfigError(f"the Terraform outputs have neither skiff_root nor ecr_repository_urls (outputs of "
                          f"terraform/modules/aws-eks expected; have: {', '.join(sorted(outputs)) or 'none'})")
    return root, repositories


def _fail(name: str, e: BaseException, fix: str) -> Check:
    response = getattr(e, "response", None)
    message = response.get("Error", {}).get("Message", "") if isinstance(response, dict) else ""
    return Check(name, False, f"{error_code(e) or type(e).__name__}: {message or e}", fix)


def _identity(sess: Any) -> Check:
    exc = botocore_exceptions()
    try:
        r = sess.client("sts").get_caller_identity()
    except (exc.ClientError, exc.BotoCoreError) as e:
        return _fail("identity", e, "configure AWS credentials: AWS_PROFILE, environment keys, or the pod's "
                                    "IRSA role (AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE)")
    return Check("identity", True, f"{r['Arn']} (account {r['Account']})")


def _bucket_checks(s3: Any, bucket: str) -> list[Check]:
    exc = botocore_exceptions()
    try:
        location = s3.get_bucket_location(Bucket=bucket).get("LocationConstraint") or "us-east-1"
    except exc.ClientError as e:
        fix = (f"create it with the Terraform module ({_TF}, bucket_name) or point the root at the right bucket"
               if error_code(e) in ("404", "NoSuchBucket") else
               f"grant s3:GetBucketLocation on arn:aws:s3:::{bucket} to the caller")
        return [_fail("bucket", e, fix)]
    checks = [Check("bucket", True, f"s3://{bucket} exists, in {location}")]

    try:
        status = s3.get_bucket_versioning(Bucket=bucket).get("Status", "never enabled")
        checks.append(Check("versioning", status == "Enabled", f"versioning is {status}",
                            "" if status == "Enabled" else
                            f"aws s3api put-bucket-versioning --bucket {bucket} --versioning-configuration "
                            f"Status=Enabled (the Terraform module enables it)"))
    except exc.ClientError as e:
        checks.append(_fail("versioning", e, f"grant s3:GetBucketVersioning on arn:aws:s3:::{bucket}"))

    kms_fix = (f"aws s3api put-bucket-encryption --bucket {bucket} --server-side-encryption-configuration "
               "'{\"Rules\":[{\"ApplyServerSideEncryptionByDefault\":{\"SSEAlgorithm\":\"aws:kms\","
               "\"KMSMasterKeyID\":\"<key arn>\"},\"BucketKeyEnabled\":true}]}' (the Terraform module sets "
               "its data key)")
    try:
        rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
        algos = [(r.get("ApplyServerSideEncryptionByDefault") or {}) for r in rules]
        kms = [a for a in algos if str(a.get("SSEAlgorithm", "")).startswith("aws:kms")]
        if kms:
            key = kms[0].get("KMSMasterKeyID") or "the AWS-managed key aws/s3"
            checks.append(Check("encryption", True, f"default encryption {kms[0]['SSEAlgorithm']} with {key}"))
        else:
            found = ", ".join(str(a.get("SSEAlgorithm")) for a in algos) or "none"
            checks.append(Check("encryption", False, f"default encryption is {found}, not SSE-KMS", kms_fix))
    except exc.ClientError as e:
        if error_code(e) == "ServerSideEncryptionConfigurationNotFoundError":
            checks.append(Check("encryption", False, "no default encryption configured", kms_fix))
        else:
            checks.append(_fail("encryption", e, f"grant s3:GetEncryptionConfiguration on arn:aws:s3:::{bucket}"))

    pab_fix = (f"aws s3api put-public-access-block --bucket {bucket} --public-access-block-configuration "
               "BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true "
               "(the Terraform module sets all four)")
    try:
        cfg = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        off = [k for k in ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
               if not cfg.get(k)]
        checks.append(Check("public-access-block", not off,
                            "all four public access block settings are on" if not off else
                            f"off: {', '.join(off)}", pab_fix if off else ""))
    except exc.ClientError as e:
        if error_code(e) == "NoSuchPublicAccessBlockConfiguration":
            checks.append(Check("public-access-block", False, "the bucket has no public access block", pab_fix))
        else:
            checks.append(_fail("public-access-block", e, f"grant s3:GetBucketPublicAccessBlock on "
                                                          f"arn:aws:s3:::{bucket}"))
    return checks


def _probe(s3: Any, bucket: str, key: str) -> tuple[bool | None, str]:
    """Put a small object at ``key`` and remove it again: (writable, detail); None when the put failed for
    another reason than a denial."""
    exc = botocore_exceptions()
    try:
        put = s3.put_object(Bucket=bucket, Key=key, Body=b"skiff doctor write probe\n")
    except exc.ClientError as e:
        code = error_code(e)
        if code in _DENIED:
            return False, f"put denied ({code})"
        return None, f"put failed: {code or type(e).__name__}"
    version = put.get("VersionId")
    if version and version != "null":  # a versioned bucket: remove the version itself, not only hide it
        try:
            s3.delete_object(Bucket=bucket, Key=key, VersionId=version)
            return True, "put and removed"
        except exc.ClientError:
            pass  # no s3:DeleteObjectVersion: a delete marker at least, the version expires with the lifecycle
    try:
        s3.delete_object(Bucket=bucket, Key=key)
    except exc.ClientError as e:
        return True, f"put, but not removed ({error_code(e)}): delete s3://{bucket}/{key} by hand"
    if version and version != "null":
        return True, f"put and deleted; its noncurrent version {version} stays until the lifecycle expires it"
    return True, "put and removed"


def _prefix_checks(s3: Any, bucket: str, root: str, workload: layout.Workload) -> list[Check]:
    writes = set(layout.ACCESS[workload]["write"])
    token = uuid.uuid4().hex[:12]
    base = f"{root}/" if root else ""
    targets = [(p, f"{base}{p}/{PROBE_FOLDER}/{token}", p in writes) for p in layout.PREFIXES]
    if root:  # the bucket beside the root: no workload writes there
        targets.append(("outside the root", f"{PROBE_FOLDER}/{token}", False))
    checks = []
    role = f"the {workload} role's storage policy ({_TF}/identities.tf, from skiff.layout.ACCESS)"
    for prefix, key, should in targets:
        writable, detail = _probe(s3, bucket, key)
        where = f"s3://{bucket}/{key.rsplit('/' + PROBE_FOLDER, 1)[0] if prefix != 'outside the root' else ''}"
        name = f"write {prefix}"
        if writable is None:
            checks.append(Check(name, False, f"{where}: {detail}", f"check the bucket and KMS key policies; {role}"))
        elif writable == should:
            checks.append(Check(name, True, f"{where}: {'writable' if should else 'not writable'}, as it should "
                                            f"be for {workload} ({detail})"))
        elif should:
            checks.append(Check(name, False, f"{where}: the {workload} workload must write here ({detail})",
                                f"grant s3:PutObject on arn:aws:s3:::{bucket}/{base}{prefix}/* (and "
                                f"kms:GenerateDataKey on the data key) in {role}"))
        else:
            checks.append(Check(name, False, f"{where}: writable, but the {workload} workload must not write here",
                                f"remove s3:PutObject on this prefix (a wildcard such as {bucket}/* grants it) "
                                f"from {role}"))
    return checks


def _repository_checks(ecr: Any, repositories: Iterable[str]) -> list[Check]:
    exc = botocore_exceptions()
    checks = []
    try:
        found = describe_repositories(ecr, repositories)
    except (SkiffError, exc.BotoCoreError) as e:
        return [Check("repositories", False, str(e), "grant ecr:DescribeRepositories to the caller")]
    for name, repo in found.items():
        if repo is None:
            checks.append(Check(f"repository {name}", False, "does not exist",
                                f"`skiff images push --registry ecr` creates it, or the Terraform module "
                                f"({_TF}, ecr_repositories)"))
            continue
        state = repository_state(repo)
        checks.append(Check(f"repository {name}", not state.problems,
                            state.uri + (": " + ", ".join(state.problems) if state.problems else
                                         " (scan on push, immutable tags)"),
                            "" if not state.problems else
                            f"aws ecr put-image-scanning-configuration --repository-name {name} "
                            "--image-scanning-configuration scanOnPush=true; aws ecr "
                            f"put-image-tag-mutability --repository-name {name} --image-tag-mutability IMMUTABLE"))
    return checks


def run_checks(sess: Any, *, root: str, workload: layout.Workload = "pipeline",
               repositories: Iterable[str] = (), probe_writes: bool = True) -> list[Check]:
    """Every check, in order: identity, bucket settings, prefix access (``probe_writes``), repositories."""
    if workload not in layout.ACCESS:
        raise ConfigError(f"unknown workload {workload!r}; one of {', '.join(layout.ACCESS)}")
    bucket, prefix = split_s3_root(root)
    checks = [_identity(sess)]
    s3 = sess.client("s3")
    bucket_checks = _bucket_checks(s3, bucket)
    checks += bucket_checks
    if probe_writes and bucket_checks[0].ok:
        checks += _prefix_checks(s3, bucket, prefix, workload)
    repos = list(repositories)
    if repos:
        checks += _repository_checks(sess.client("ecr"), repos)
    return checks
