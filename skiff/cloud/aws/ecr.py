"""skiff's images in ECR: repositories made safe, the registry login, the push, and the scan gate.

- :func:`ensure_repositories` creates the repositories skiff pushes to when they are missing, with what the
  Terraform module gives its own (``terraform/modules/aws-eks/storage.tf``): scan on push, immutable tags,
  KMS encryption and a lifecycle policy that expires untagged images. Existing repositories are left as
  they are (Terraform owns them) and reported when their settings differ.
- :func:`registry_login` turns ``ecr:GetAuthorizationToken`` into the user name (``AWS``) and password a
  Docker engine takes; the password never reaches a log, an error or ``repr``.
- :func:`push_images` pushes local images through the Docker SDK (imported lazily) under
  ``<registry>/<prefix>/<name>:<tag>``; a tag already in ECR is not pushed again (tags are immutable).
- :func:`check_serving_images` is the promotion gate: an ECR image with CRITICAL findings in its scan
  results (or no finished scan) refuses the promotion unless forced with a reason.
"""

from __future__ import annotations

import base64
import importlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from skiff.cloud.aws.session import aws_error, botocore_exceptions, error_code
from skiff.errors import ConfigError, EnvironmentMissing, GateFailed, NotFoundError, SourceError, UsageError

__all__ = ["UNTAGGED_EXPIRY_DAYS", "EcrImage", "RepositoryState", "RegistryLogin", "PushedImage", "ImageVerdict",
           "ScanGateDecision", "parse_ecr_image", "repository_state", "describe_repositories", "lifecycle_policy", "ensure_repositories", "registry_login",
           "push_images", "scan_verdict", "check_serving_images", "BLOCKING_SEVERITY"]

#: Days after which untagged images are expired (the Terraform module's ecr_untagged_image_expiry_days).
UNTAGGED_EXPIRY_DAYS = 14
#: The severity that refuses a promotion.
BLOCKING_SEVERITY = "CRITICAL"
#: Scan states whose findings are final: a basic scan's COMPLETE, an enhanced (Inspector) scan's ACTIVE.
_FINISHED = ("COMPLETE", "ACTIVE")

_HOST = re.compile(r"^(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z]{2}(?:-[a-z]+)+-\d)"
                   r"\.amazonaws\.com(?:\.cn)?$")
_REPO = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")


@dataclass(frozen=True)
class EcrImage:
    """One image reference in an ECR registry: ``<account>.dkr.ecr.<region>.amazonaws.com/<repo>:<tag>``."""

    registry_id: str
    region: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def image_id(self) -> dict[str, str]:
        return {"imageDigest": self.digest} if self.digest else {"imageTag": self.tag or "latest"}

    def __str__(self) -> str:
        host = f"{self.registry_id}.dkr.ecr.{self.region}.amazonaws.com"
        return f"{host}/{self.repository}" + (f"@{self.digest}" if self.digest else f":{self.tag or 'latest'}")


def parse_ecr_image(ref: str) -> EcrImage | None:
    """The ECR image a reference names, or None when the reference is not in an ECR registry."""
    host, _, rest = ref.partition("/")
    m = _HOST.match(host)
    if not m or not rest:
        return None
    digest = tag = None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
    if ":" in rest:
        rest, tag = rest.rsplit(":", 1)
    if not _REPO.match(rest):
        raise ConfigError(f"image {ref!r}: {rest!r} is not a valid ECR repository name")
    return EcrImage(registry_id=m["account"], region=m["region"], repository=rest, tag=tag, digest=digest)


def lifecycle_policy(untagged_days: int = UNTAGGED_EXPIRY_DAYS) -> str:
    """The lifecycle policy text of a repository skiff creates (the Terraform module's rule)."""
    return json.dumps({"rules": [{
        "rulePriority": 1,
        "description": f"Remove untagged images after {untagged_days} days",
        "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days",
                      "countNumber": untagged_days},
        "action": {"type": "expire"},
    }]})


@dataclass(frozen=True)
class RepositoryState:
    """A repository skiff pushes to: whether skiff created it, and what about it differs from safe."""

    name: str
    uri: str
    created: bool
    scan_on_push: bool
    immutable_tags: bool
    problems: tuple[str, ...] = ()


def repository_state(repo: Mapping[str, Any], created: bool = False) -> RepositoryState:
    """What skiff cares about in one ``DescribeRepositories`` entry."""
    scan = bool((repo.get("imageScanningConfiguration") or {}).get("scanOnPush"))
    immutable = repo.get("imageTagMutability") == "IMMUTABLE"
    problems = tuple(p for p, bad in (("scan on push is off", not scan), ("tags are mutable", not immutable))
                     if bad)
    return RepositoryState(name=repo["repositoryName"], uri=repo["repositoryUri"], created=created,
                           scan_on_push=scan, immutable_tags=immutable, problems=problems)


def describe_repositories(ecr: Any, names: Iterable[str]) -> dict[str, Mapping[str, Any] | None]:
    """Each name -> its repository description, None when it does not exist."""
    exc = botocore_exceptions()
    out: dict[str, Mapping[str, Any] | None] = {}
    for name in names:
        try:
            out[name] = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
        except exc.ClientError as e:
            if error_code(e) != "RepositoryNotFoundException":
                raise aws_error(f"could not describe ECR repository {name}", e) from e
            out[name] = None
    return out


def ensure_repositories(ecr: Any, names: Iterable[str], *, kms_key: str | None = None,
                        untagged_days: int = UNTAGGED_EXPIRY_DAYS) -> list[RepositoryState]:
    """Create the missing repositories (scan on push, immutable tags, KMS encryption, lifecycle policy)."""
    exc = botocore_exceptions()
    names = list(names)
    for name in names:
        if not _REPO.match(name):
            raise UsageError(f"{name!r} is not a valid ECR repository name")
    states = []
    for name, repo in describe_repositories(ecr, names).items():
        if repo is not None:
            states.append(repository_state(repo, created=False))
            continue
        encryption: dict[str, str] = {"encryptionType": "KMS"}
        if kms_key:
            encryption["kmsKey"] = kms_key
        try:
            created = ecr.create_repository(
                repositoryName=name, imageTagMutability="IMMUTABLE",
                imageScanningConfiguration={"scanOnPush": True}, encryptionConfiguration=encryption,
                tags=[{"Key": "managed-by", "Value": "skiff"}])["repository"]
            ecr.put_lifecycle_policy(repositoryName=name, lifecyclePolicyText=lifecycle_policy(untagged_days))
        except exc.ClientError as e:
            raise aws_error(f"could not create ECR repository {name}", e) from e
        states.append(repository_state(created, created=True))
    return states


@dataclass(frozen=True)
class RegistryLogin:
    """Docker credentials for one ECR registry (valid 12 hours). ``repr`` hides the password."""

    registry: str  # host, no scheme
    username: str
    password: str = field(repr=False)
    expires_at: str = ""

    def auth_config(self) -> dict[str, str]:
        """What the Docker SDK's ``push(auth_config=...)`` takes."""
        return {"username": self.username, "password": self.password, "serveraddress": self.registry}


def registry_login(ecr: Any, registry_id: str | None = None) -> RegistryLogin:
    """``ecr:GetAuthorizationToken`` decoded (``base64("AWS:<password>")``) for the account's registry."""
    exc = botocore_exceptions()
    try:
        kwargs = {"registryIds": [registry_id]} if registry_id else {}
        data = ecr.get_authorization_token(**kwargs)["authorizationData"][0]
    except (exc.ClientError, exc.BotoCoreError) as e:
        raise aws_error("could not get an ECR authorization token", e) from e
    try:
        user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    except (ValueError, UnicodeDecodeError) as e:
        raise SourceError("ECR returned an authorization token that is not base64 'user:password'") from e
    if not user or not password:
        raise SourceError("ECR returned an authorization token without a user name and password")
    host = re.sub(r"^https?://", "", data["proxyEndpoint"]).rstrip("/")
    return RegistryLogin(registry=host, username=user, password=password, expires_at=str(data.get("expiresAt", "")))


@dataclass(frozen=True)
class PushedImage:
    name: str
    source: str
    target: str
    action: str  # "pushed" | "present" (the tag was already in ECR; tags are immutable)
    digest: str | None = None


def docker_client() -> Any:
    """The Docker SDK's client from the environment (``DOCKER_HOST``), or a clear error."""
    try:
        docker = importlib.import_module("docker")
    except ImportError as e:
        raise EnvironmentMissing("pushing images needs the Docker SDK: pip install docker") from e
    try:
        return docker.from_env()
    except docker.errors.DockerException as e:
        raise EnvironmentMissing(f"no Docker engine answers (DOCKER_HOST): {e}") from e


def _tag_present(ecr: Any, repository: str, tag: str) -> str | None:
    exc = botocore_exceptions()
    try:
        images = ecr.describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}])["imageDetails"]
    except exc.ClientError as e:
        if error_code(e) in ("ImageNotFoundException", "RepositoryNotFoundException"):
            return None
        raise aws_error(f"could not look up {repository}:{tag} in ECR", e) from e
    return str(images[0]["imageDigest"]) if images else None


def docker_push(client: Any, source: str, repository: str, tag: str, login: RegistryLogin) -> str | None:
    """Tag the local image ``source`` as ``repository:tag`` and push it with ``login``; the pushed digest."""
    docker = importlib.import_module("docker")
    try:
        image = client.images.get(source)
    except docker.errors.ImageNotFound as e:
        raise NotFoundError(f"no local image {source}: build it first (make images)") from e
    image.tag(repository, tag=tag)
    digest = None
    for chunk in client.images.push(repository, tag=tag, auth_config=login.auth_config(), stream=True,
                                    decode=True):
        if "error" in chunk or "errorDetail" in chunk:
            message = chunk.get("error") or chunk["errorDetail"].get("message", "")
            raise SourceError(f"pushing {repository}:{tag} failed: {message}")
        digest = (chunk.get("aux") or {}).get("Digest") or digest
    return digest


def push_images(sess: Any, images: Mapping[str, str], *, prefix: str, tag: str, kms_key: str | None = None,
                client: Any = None, registry: str | None = None) -> tuple[list[RepositoryState], list[PushedImage]]:
    """Push each local image (``name -> local reference``) to ``<registry>/<prefix>/<name>:<tag>``.

    The repositories are created first when missing (:func:`ensure_repositories`) and the engine logs in
    with ``ecr:GetAuthorizationToken``. ``registry`` is the host to push to, by default the registry the
    token is for; ``client`` a Docker SDK client (default: from the environment).
    """
    if not prefix or not _REPO.match(prefix):
        raise UsageError(f"repository prefix {prefix!r}: lower-case letters, digits, '.', '_', '-' and '/'")
    ecr = sess.client("ecr")
    repos = {name: f"{prefix}/{name}" for name in images}
    states = ensure_repositories(ecr, repos.values(), kms_key=kms_key)
    login = registry_login(ecr)
    host = registry or login.registry
    pushed = []
    for name, source in images.items():
        target = f"{host}/{repos[name]}"
        present = _tag_present(ecr, repos[name], tag)
        if present is not None:
            pushed.append(PushedImage(name, source, f"{target}:{tag}", "present", present))
            continue
        client = client if client is not None else docker_client()  # an engine only when there is a push
        digest = docker_push(client, source, target, tag, login)
        pushed.append(PushedImage(name, source, f"{target}:{tag}", "pushed", digest))
    return states, pushed


# -- the scan gate --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageVerdict:
    """What ECR's scan results say of one image: blocked when it has CRITICAL findings or no final scan."""

    image: str
    status: str  # the scan status (COMPLETE, ACTIVE, IN_PROGRESS, FAILED, ...), NOT_SCANNED, IMAGE_NOT_FOUND
    severity_counts: dict[str, int]
    critical: tuple[str, ...]  # the CRITICAL findings' names (CVE ids), at most 20
    blocked: bool
    why: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def scan_verdict(response: Mapping[str, Any], image: str) -> ImageVerdict:
    """The verdict on one ``DescribeImageScanFindings`` response (basic or enhanced scanning)."""
    status = str((response.get("imageScanStatus") or {}).get("status", "UNKNOWN"))
    findings = response.get("imageScanFindings") or {}
    counts = {str(k): int(v) for k, v in (findings.get("findingSeverityCounts") or {}).items()}
    names = [str(f.get("name")) for f in findings.get("findings") or [] if f.get("severity") == BLOCKING_SEVERITY]
    names += [str((f.get("packageVulnerabilityDetails") or {}).get("vulnerabilityId") or f.get("title"))
              for f in findings.get("enhancedFindings") or [] if f.get("severity") == BLOCKING_SEVERITY]
    critical = max(counts.get(BLOCKING_SEVERITY, 0), len(names))
    if status not in _FINISHED:
        why = f"the scan is {status}" + (f": {response['imageScanStatus'].get('description')}"
                                          if (response.get("imageScanStatus") or {}).get("description") else "")
        return ImageVerdict(image, status, counts, tuple(names[:20]), True, why)
    if critical:
        shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
        return ImageVerdict(image, status, counts, tuple(names[:20]), True,
                            f"{critical} {BLOCKING_SEVERITY} finding(s)" + (f": {shown}" if shown else ""))
    return ImageVerdict(image, status, counts, (), False, "no CRITICAL findings")


def image_verdict(ecr: Any, image: EcrImage) -> ImageVerdict:
    """Read the scan findings of one ECR image and judge them (every page, for the names)."""
    exc = botocore_exceptions()
    try:
        pages = list(ecr.get_paginator("describe_image_scan_findings").paginate(
            registryId=image.registry_id, repositoryName=image.repository, imageId=image.image_id))
    except exc.ClientError as e:
        code = error_code(e)
        if code == "ScanNotFoundException":
            return ImageVerdict(str(image), "NOT_SCANNED", {}, (), True, "ECR has no scan of this image")
        if code in ("ImageNotFoundException", "RepositoryNotFoundException"):
            return ImageVerdict(str(image), "IMAGE_NOT_FOUND", {}, (), True, f"not in ECR ({code})")
        raise aws_error(f"could not read the scan findings of {image}", e) from e
    merged: dict[str, Any] = dict(pages[0]) if pages else {}
    findings: dict[str, Any] = dict(merged.get("imageScanFindings") or {})
    for key in ("findings", "enhancedFindings"):
        findings[key] = [f for p in pages for f in (p.get("imageScanFindings") or {}).get(key) or []]
    merged["imageScanFindings"] = findings
    return scan_verdict(merged, str(image))


@dataclass(frozen=True)
class ScanGateDecision:
    """The promotion gate's answer over a version's serving images."""

    images: tuple[ImageVerdict, ...]
    skipped: tuple[str, ...]  # images not in ECR: this gate does not judge them
    overridden: bool = False
    reason: str | None = None

    @property
    def blocked(self) -> tuple[ImageVerdict, ...]:
        return tuple(v for v in self.images if v.blocked)

    def to_dict(self) -> dict[str, Any]:
        return {"images": [v.to_dict() for v in self.images], "skipped": list(self.skipped),
                "overridden": self.overridden, "reason": self.reason}

    def recorded_reason(self) -> str | None:
        """The text the promotion records with its own reason when the gate was overridden."""
        if not self.overridden:
            return None
        return "ECR scan gate overridden (" + "; ".join(f"{v.image}: {v.why}" for v in self.blocked) + ")"


def check_serving_images(refs: Iterable[str], *, session_for_region: Any, force: bool = False,
                         reason: str | None = None, what: str = "this version") -> ScanGateDecision:
    """Judge the serving images ``refs`` of a promotion by their ECR scan findings.

    Images outside ECR are skipped. An image with CRITICAL findings, no finished scan, or missing from its
    repository refuses the promotion (:class:`GateFailed`, exit 1) unless ``force`` with a ``reason``.
    ``session_for_region(region)`` gives the boto3 session that reads each image's registry.
    """
    verdicts, skipped = [], []
    clients: dict[str, Any] = {}
    for ref in dict.fromkeys(refs):
        image = parse_ecr_image(ref)
        if image is None:
            skipped.append(ref)
            continue
        if image.region not in clients:
            clients[image.region] = session_for_region(image.region).client("ecr", region_name=image.region)
        verdicts.append(image_verdict(clients[image.region], image))
    decision = ScanGateDecision(images=tuple(verdicts), skipped=tuple(skipped))
    if not decision.blocked:
        return decision
    why = "; ".join(f"{v.image}: {v.why}" for v in decision.blocked)
    if not force:
        raise GateFailed(f"the serving image of {what} did not pass ECR's scan gate ({why}); "
                         "use --force --reason TEXT to deploy it anyway", scan_gate=decision.to_dict())
    if not reason or not reason.strip():
        raise UsageError("--force over the ECR scan gate needs --reason TEXT: the reason is recorded in the "
                         "model file's history")
    return ScanGateDecision(images=decision.images, skipped=decision.skipped, overridden=True,
                            reason=reason.strip())
