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

import fnmatch
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from skiff import layout
from skiff.cloud import Check, output_value
from skiff.cloud.aws.ecr import describe_repositories, repository_state
from skiff.cloud.aws.session import botocore_exceptions, error_code
from skiff.errors import ConfigError, SkiffError

__all__ = ["run_checks", "split_s3_root", "from_outputs", "TerraformTargets", "WorkloadRole", "PROBE_FOLDER"]

#: Where a write probe goes under a prefix (removed again at once).
PROBE_FOLDER = ".skiff-doctor"
_TF = "terraform/modules/aws-eks"
_DENIED = ("AccessDenied", "AccessDeniedException", "403", "Forbidden")
_ROLE_ANNOTATION = "eks.amazonaws.com/role-arn"
#: S3 actions that change objects: a workload role may allow them on its own prefixes only.
_WRITES = ("s3:putobject", "s3:deleteobject", "s3:deleteobjectversion", "s3:putobjectacl", "s3:restoreobject")


def split_s3_root(root: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (``bucket``, ``some/prefix``)."""
    if not root.startswith("s3://"):
        raise ConfigError(f"skiff doctor --cloud aws checks an S3 root; the root is {root!r} "
                          "(set SKIFF_ROOT=s3://bucket/prefix or root: in skiff.yaml)")
    bucket, _, prefix = root[len("s3://"):].partition("/")
    if not bucket:
        raise ConfigError(f"{root!r} names no bucket")
    return bucket, prefix.strip("/")


@dataclass(frozen=True)
class WorkloadRole:
    """A workload's IRSA role as modules/aws-eks made it: its ARN and the service account it is for."""

    arn: str
    subject: str  # system:serviceaccount:<namespace>:<name>


@dataclass(frozen=True)
class TerraformTargets:
    """What the doctor checks from ``terraform output -json`` of modules/aws-eks (None: not in the outputs)."""

    root: str | None
    repositories: list[str] | None
    roles: dict[str, WorkloadRole] | None


def from_outputs(outputs: Mapping[str, Any]) -> TerraformTargets:
    """The output ``skiff_root`` (what the charts set SKIFF_ROOT to), the repository names of
    ``ecr_repository_urls`` and the workload roles of ``service_accounts`` (each service account's
    ``eks.amazonaws.com/role-arn`` annotation)."""
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
    accounts = output_value(outputs, "service_accounts")
    roles = None
    if accounts is not None:
        roles = {}
        for workload, sa in (accounts.items() if isinstance(accounts, dict) else ()):
            arn = (sa.get("annotations") or {}).get(_ROLE_ANNOTATION) if isinstance(sa, dict) else None
            if not isinstance(arn, str) or ":role/" not in arn:
                raise ConfigError(f"the Terraform output service_accounts.{workload} has no {_ROLE_ANNOTATION} "
                                  "role ARN (outputs of terraform/modules/aws-eks expected)")
            roles[str(workload)] = WorkloadRole(arn, f"system:serviceaccount:{sa.get('namespace')}:{sa.get('name')}")
        if not roles:
            raise ConfigError("the Terraform output service_accounts must map workloads to their service accounts")
    if root is None and repositories is None and roles is None:
        raise ConfigError(f"the Terraform outputs have neither skiff_root nor ecr_repository_urls (outputs of "
                          f"terraform/modules/aws-eks expected; have: {', '.join(sorted(outputs)) or 'none'})")
    return TerraformTargets(root, repositories, roles)


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


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else [str(v) for v in value or []]


def _document(doc: Any) -> dict[str, Any]:
    """An IAM policy document as boto3 returns it (decoded), or its URL-encoded JSON."""
    if isinstance(doc, str):
        doc = json.loads(unquote(doc))
    return doc if isinstance(doc, dict) else {}


def _statements(doc: Any) -> list[dict[str, Any]]:
    st = _document(doc).get("Statement", [])
    return [st] if isinstance(st, dict) else [s for s in st if isinstance(s, dict)]


def _trust_problems(doc: Any, subject: str) -> list[str]:
    """The role may be assumed only through the cluster's OIDC provider, by exact service account names
    (its own among them), for STS."""
    problems = []
    for st in _statements(doc):
        if st.get("Effect") != "Allow":
            continue
        principal = st.get("Principal")
        federated = _as_list(principal.get("Federated")) if isinstance(principal, dict) else []
        others = [k for k in principal if k != "Federated"] if isinstance(principal, dict) else [str(principal)]
        if others or not federated or not all(":oidc-provider/" in f for f in federated):
            problems.append(f"trust allows {json.dumps(principal)} (only the cluster's OIDC provider should)")
            continue
        condition = st.get("Condition") or {}
        subs = [v for test, kv in condition.items() if test == "StringEquals" for k, v in kv.items()
                if k.endswith(":sub")]
        loose = [f"{test} {k}" for test, kv in condition.items() if test != "StringEquals"
                 for k in kv if k.endswith(":sub")]
        named = [x for v in subs for x in _as_list(v)]
        if loose or not named:
            problems.append("trust does not pin the service account (StringEquals on the provider's :sub)"
                            + (f": {', '.join(loose)}" if loose else ""))
        elif subject not in named or any("*" in x or "?" in x for x in named):
            problems.append(f"trust names {', '.join(named)}, not {subject} alone")
    return problems


def _policy_problems(doc: Any, workload: layout.Workload, bucket: str, root: str) -> tuple[list[str], set[str]]:
    """Over-broad grants of one permission policy, and the write resources it grants."""
    allowed = {f"arn:aws:s3:::{bucket}/{root + '/' if root else ''}{p}/*" for p in layout.ACCESS[workload]["write"]}
    problems: list[str] = []
    granted: set[str] = set()
    for st in _statements(doc):
        if st.get("Effect") != "Allow":
            continue
        if "NotAction" in st or "NotResource" in st:
            problems.append("a NotAction/NotResource statement (allows everything it does not name)")
            continue
        actions = [a.lower() for a in _as_list(st.get("Action"))]
        resources = _as_list(st.get("Resource"))
        for a in actions:
            if a == "*" or (a.endswith(":*") and a.split(":", 1)[0] in ("s3", "iam", "sts", "kms")):
                problems.append(f"{a} on {', '.join(resources)}")
        if any(fnmatch.fnmatchcase(w, a) for a in actions for w in _WRITES):
            for r in resources:
                if r in allowed:
                    granted.add(r)
                else:
                    problems.append(f"writes {r} (beyond {workload}'s prefixes)")
    return problems, granted


def _role_checks(iam: Any, roles: Mapping[str, WorkloadRole], bucket: str, root: str) -> list[Check]:
    """Each workload role Terraform made holds the least rights: trusted by its service account only, no
    managed policies, S3 writes on its own prefixes (skiff.layout.ACCESS) and nothing broader."""
    exc = botocore_exceptions()
    checks = []
    fix = f"{_TF} (identities.tf) makes each role with exactly these; remove what it does not grant"
    for workload, role in sorted(roles.items()):
        name = f"role {workload}"
        if workload not in layout.ACCESS:
            checks.append(Check(name, False, f"{role.arn}: not a skiff workload ({', '.join(layout.ACCESS)})", fix))
            continue
        w = workload
        role_name = role.arn.rsplit("/", 1)[-1]
        try:
            got = iam.get_role(RoleName=role_name)["Role"]
            attached = iam.list_attached_role_policies(RoleName=role_name).get("AttachedPolicies", [])
            inline = iam.list_role_policies(RoleName=role_name).get("PolicyNames", [])
            docs = [iam.get_role_policy(RoleName=role_name, PolicyName=p)["PolicyDocument"] for p in inline]
        except (exc.ClientError, exc.BotoCoreError) as e:
            fixed = (f"apply {_TF}, or pass the outputs of the configuration that made it"
                     if error_code(e) == "NoSuchEntity" else
                     "grant iam:GetRole, iam:ListAttachedRolePolicies, iam:ListRolePolicies and iam:GetRolePolicy "
                     "on the workload roles (the module's cloud_commands_policy_json does)")
            checks.append(_fail(name, e, fixed))
            continue
        problems = _trust_problems(got.get("AssumeRolePolicyDocument"), role.subject)
        problems += [f"managed policy {p.get('PolicyName')} attached" for p in attached]
        granted: set[str] = set()
        for doc in docs:
            more, writes = _policy_problems(doc, w, bucket, root)
            problems += more
            granted |= writes
        base = f"{root}/" if root else ""
        missing = [p for p in layout.ACCESS[w]["write"]
                   if f"arn:aws:s3:::{bucket}/{base}{p}/*" not in granted]
        problems += [f"cannot write {p}/ (skiff's {workload} writes there)" for p in missing]
        if problems:
            checks.append(Check(name, False, f"{role.arn}: " + "; ".join(problems), fix))
        else:
            checks.append(Check(name, True, f"{role.arn}: assumed by {role.subject} only, writes "
                                f"{', '.join(layout.ACCESS[w]['write'])}"))
    return checks


def run_checks(sess: Any, *, root: str, workload: layout.Workload = "pipeline",
               repositories: Iterable[str] = (), probe_writes: bool = True,
               roles: Mapping[str, WorkloadRole] | None = None) -> list[Check]:
    """Every check, in order: identity, bucket settings, prefix access (``probe_writes``), repositories,
    and the workload ``roles`` Terraform made (its output ``service_accounts``), when given."""
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
    if roles:
        checks += _role_checks(sess.client("iam"), roles, bucket, prefix)
    return checks
