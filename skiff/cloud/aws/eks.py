"""Reach an EKS cluster with no AWS CLI: the bearer token and the kubeconfig entry that asks for it.

The token is what ``aws eks get-token`` prints and what the cluster's authenticator (aws-iam-authenticator,
built into EKS) accepts: a presigned STS ``GetCallerIdentity`` URL — a GET, valid for 60 seconds
(``X-Amz-Expires=60``), with the cluster's name signed in as the ``x-k8s-aws-id`` header so a token for one
cluster is useless for another — encoded as ``k8s-aws-v1.`` + base64url without padding. The API server
calls that URL and maps the identity STS answers to Kubernetes users (EKS access entries). Nothing is sent
to AWS to make one: presigning is local.

The kubeconfig entry (endpoint and CA from ``eks:DescribeCluster``) runs ``skiff cloud aws token`` as its
exec credential plugin (``client.authentication.k8s.io/v1beta1``), so kubectl, the kubernetes Python client
under ``skiff run --host`` and ``skiff rollout`` get a fresh token when the cached one expires. The file is
written atomically with mode 0600 and other entries are kept.
"""

from __future__ import annotations

import base64
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from skiff.cloud.aws.session import aws_error, botocore_exceptions, error_code
from skiff.errors import ConfigError, NotFoundError
from skiff.yamlio import load_user_yaml

__all__ = ["TOKEN_PREFIX", "CLUSTER_ID_HEADER", "EXEC_API_VERSION", "ClusterInfo", "get_token",
           "exec_credential", "describe_cluster", "kubeconfig_entry", "write_kubeconfig", "default_kubeconfig"]

TOKEN_PREFIX = "k8s-aws-v1."
#: The signed header that binds a token to one cluster.
CLUSTER_ID_HEADER = "x-k8s-aws-id"
#: Seconds the presigned URL is valid (what the authenticator requires; the AWS CLI uses the same).
URL_EXPIRES = 60
#: When clients should ask again: the authenticator accepts a token up to 15 minutes after signing; the
#: AWS CLI says 14 so a cached token is renewed before the server refuses it.
TOKEN_LIFETIME = timedelta(minutes=14)
EXEC_API_VERSION = "client.authentication.k8s.io/v1beta1"


def get_token(sess: Any, cluster: str, *, region: str | None = None) -> str:
    """The EKS bearer token for ``cluster`` from the session's identity (local presigning, no request)."""
    if not cluster:
        raise ConfigError("the cluster name is empty")
    region = region or sess.region_name
    # the regional STS endpoint: the cluster's authenticator verifies against it (the global endpoint
    # is deprecated). An explicit endpoint wins over AWS_ENDPOINT_URL: an emulator cannot sign for EKS.
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    sts = sess.client("sts", region_name=region, endpoint_url=f"https://sts.{region}.{suffix}")

    def keep_cluster_id(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        if CLUSTER_ID_HEADER in params:
            context[CLUSTER_ID_HEADER] = params.pop(CLUSTER_ID_HEADER)

    def sign_cluster_id(request: Any, **_: Any) -> None:
        if CLUSTER_ID_HEADER in request.context:
            request.headers[CLUSTER_ID_HEADER] = request.context[CLUSTER_ID_HEADER]

    sts.meta.events.register("provide-client-params.sts.GetCallerIdentity", keep_cluster_id)
    sts.meta.events.register("before-sign.sts.GetCallerIdentity", sign_cluster_id)
    exc = botocore_exceptions()
    try:
        url = sts.generate_presigned_url("get_caller_identity", Params={CLUSTER_ID_HEADER: cluster},
                                         ExpiresIn=URL_EXPIRES, HttpMethod="GET")
    except exc.NoCredentialsError as e:
        raise aws_error("could not sign an EKS token", e) from e
    return TOKEN_PREFIX + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


def exec_credential(token: str, *, now: datetime | None = None) -> dict[str, Any]:
    """The ``ExecCredential`` a kubeconfig exec plugin prints (``client.authentication.k8s.io/v1beta1``)."""
    expires = (now or datetime.now(UTC)) + TOKEN_LIFETIME
    return {
        "kind": "ExecCredential",
        "apiVersion": EXEC_API_VERSION,
        "spec": {},
        "status": {"expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ"), "token": token},
    }


@dataclass(frozen=True)
class ClusterInfo:
    """What a kubeconfig needs of a cluster (``eks:DescribeCluster``)."""

    name: str
    arn: str
    endpoint: str
    certificate_authority: str  # base64 PEM, as EKS returns it and kubeconfig wants it
    region: str


def describe_cluster(sess: Any, cluster: str) -> ClusterInfo:
    exc = botocore_exceptions()
    try:
        c = sess.client("eks").describe_cluster(name=cluster)["cluster"]
    except (exc.ClientError, exc.BotoCoreError) as e:
        if error_code(e) == "ResourceNotFoundException":
            raise NotFoundError(f"no EKS cluster {cluster!r} in {sess.region_name}") from e
        raise aws_error(f"could not describe EKS cluster {cluster!r}", e) from e
    if c.get("status") not in (None, "ACTIVE", "UPDATING"):
        raise ConfigError(f"EKS cluster {cluster!r} is {c.get('status')}, not ACTIVE")
    endpoint, ca = c.get("endpoint"), (c.get("certificateAuthority") or {}).get("data")
    if not endpoint or not ca:
        raise ConfigError(f"EKS cluster {cluster!r} has no endpoint or CA yet (status {c.get('status')})")
    return ClusterInfo(name=c["name"], arn=c["arn"], endpoint=endpoint, certificate_authority=ca,
                       region=sess.region_name)


def kubeconfig_entry(info: ClusterInfo, *, command: str = "skiff", profile: str | None = None,
                     role_arn: str | None = None, alias: str | None = None) -> dict[str, Any]:
    """The cluster, user and context of one EKS cluster, named by its ARN (like the AWS CLI) unless ``alias``.

    The user's exec plugin is ``skiff cloud aws token --cluster NAME --region R`` (plus ``--role-arn``); a
    profile travels as ``AWS_PROFILE`` in the plugin's environment, as the AWS CLI writes it.
    """
    name = alias or info.arn
    args = ["cloud", "aws", "token", "--cluster", info.name, "--region", info.region]
    if role_arn:
        args += ["--role-arn", role_arn]
    exec_cfg: dict[str, Any] = {"apiVersion": EXEC_API_VERSION, "command": command, "args": args,
                                "interactiveMode": "Never", "provideClusterInfo": False}
    if profile:
        exec_cfg["env"] = [{"name": "AWS_PROFILE", "value": profile}]
    return {
        "cluster": {"name": name, "cluster": {"server": info.endpoint,
                                              "certificate-authority-data": info.certificate_authority}},
        "user": {"name": name, "user": {"exec": exec_cfg}},
        "context": {"name": name, "context": {"cluster": name, "user": name}},
    }


def default_kubeconfig() -> Path:
    """The file kubectl writes: the first of ``KUBECONFIG``'s paths, else ``~/.kube/config``."""
    env = os.environ.get("KUBECONFIG", "")
    first = next((p for p in env.split(os.pathsep) if p), None)
    return Path(first).expanduser() if first else Path.home() / ".kube" / "config"


def _upsert(items: Any, entry: dict[str, Any], path: Path, key: str) -> list[Any]:
    if items is None:
        items = []
    if not isinstance(items, list):
        raise ConfigError(f"{path}: '{key}' is not a list; not rewriting a kubeconfig skiff cannot read")
    out = [i for i in items if not (isinstance(i, dict) and i.get("name") == entry["name"])]
    out.append(entry)
    return out


def write_kubeconfig(path: Path, entry: dict[str, Any], *, set_current: bool = True) -> Path:
    """Merge ``entry`` (from :func:`kubeconfig_entry`) into the kubeconfig at ``path`` and write it
    atomically (a temporary file in the same folder, renamed over the old one) with mode 0600.

    Entries of the same name are replaced; every other cluster, user, context and preference is kept.
    """
    doc: dict[str, Any] = {}
    if path.is_file():
        loaded = load_user_yaml(path, "kubeconfig", error=ConfigError)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: not a kubeconfig mapping; not rewriting it")
        doc = loaded or {}
    doc.setdefault("apiVersion", "v1")
    doc.setdefault("kind", "Config")
    doc.setdefault("preferences", {})
    for key, what in (("clusters", "cluster"), ("users", "user"), ("contexts", "context")):
        doc[key] = _upsert(doc.get(key), entry[what], path, key)
    if set_current:
        doc["current-context"] = entry["context"]["name"]
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(doc, f, sort_keys=False, default_flow_style=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
