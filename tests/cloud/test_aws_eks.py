"""EKS credentials with no AWS CLI: the token is a presigned STS GetCallerIdentity URL of the shape the
cluster's authenticator accepts, and the kubeconfig entry's exec plugin hands it to Kubernetes clients.

boto3 runs against moto's server (tests/cloud/conftest.py) for DescribeCluster, AssumeRole and the
caller identity; presigning is local, so the token's URL names the real regional STS endpoint.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import yaml

from skiff.cli import main
from skiff.cloud.aws.eks import CLUSTER_ID_HEADER, TOKEN_PREFIX, get_token, write_kubeconfig
from skiff.cloud.aws.session import session
from skiff.errors import ConfigError
from tests.cloud.conftest import ACCOUNT, REGION, boto3_session


def _decode(token: str) -> tuple[str, dict[str, list[str]]]:
    assert token.startswith(TOKEN_PREFIX)
    body = token[len(TOKEN_PREFIX):]
    assert "=" not in body, "base64url without padding"
    url = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
    return url, parse_qs(urlsplit(url).query)


def test_the_token_is_a_presigned_get_caller_identity_for_one_cluster(aws):
    url, q = _decode(get_token(session(), "prod-cluster"))
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", f"sts.{REGION}.amazonaws.com", "/")
    assert q["Action"] == ["GetCallerIdentity"] and q["Version"] == ["2011-06-15"]
    assert q["X-Amz-Expires"] == ["60"]
    assert q["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert q["X-Amz-SignedHeaders"][0].split(";") == ["host", CLUSTER_ID_HEADER]
    assert q["X-Amz-Credential"][0].startswith("testing/") and q["X-Amz-Credential"][0].endswith(
        f"/{REGION}/sts/aws4_request")
    # the cluster id is signed: the same identity gets another signature for another cluster
    _, other = _decode(get_token(session(), "dev-cluster"))
    assert other["X-Amz-Signature"] != q["X-Amz-Signature"]


def _sigv4(url: str, headers: dict[str, str], secret: str) -> str:
    """The SigV4 signature of a presigned GET, computed from the AWS specification (not botocore's code)."""
    parts = urlsplit(url)
    query = sorted((k, v) for k, vs in parse_qs(parts.query).items() for v in vs if k != "X-Amz-Signature")
    canonical_query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in query)
    signed = sorted(headers)
    canonical_headers = "".join(f"{h}:{headers[h].strip()}\n" for h in signed)
    canonical = "\n".join(["GET", parts.path or "/", canonical_query, canonical_headers, ";".join(signed),
                           hashlib.sha256(b"").hexdigest()])
    q = dict(query)
    date, scope = q["X-Amz-Date"], q["X-Amz-Credential"].split("/", 1)[1]
    to_sign = "\n".join(["AWS4-HMAC-SHA256", date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def test_the_signature_covers_the_host_and_the_cluster_id(aws):
    """What STS checks when the API server sends the token's URL with the x-k8s-aws-id header."""
    url, q = _decode(get_token(session(), "prod-cluster"))
    host = urlsplit(url).netloc
    signature = q["X-Amz-Signature"][0]
    assert _sigv4(url, {"host": host, CLUSTER_ID_HEADER: "prod-cluster"}, "testing") == signature
    # the same URL sent for another cluster does not verify
    assert _sigv4(url, {"host": host, CLUSTER_ID_HEADER: "dev-cluster"}, "testing") != signature


def test_role_arn_signs_with_the_assumed_roles_temporary_credentials(aws):
    iam = boto3_session().client("iam")
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": ACCOUNT},
                                                      "Action": "sts:AssumeRole"}]}
    role = iam.create_role(RoleName="skiff-admin", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    _, q = _decode(get_token(session(role_arn=role), "prod-cluster"))
    assert not q["X-Amz-Credential"][0].startswith("testing/"), "signed with the role's keys, not the caller's"
    assert q["X-Amz-Security-Token"], "temporary credentials carry their session token"


def test_token_command_prints_an_exec_credential(aws, capsys):
    before = datetime.now(UTC)
    assert main(["cloud", "aws", "token", "--cluster", "prod-cluster"]) == 0
    cred = json.loads(capsys.readouterr().out)
    assert cred["kind"] == "ExecCredential"
    assert cred["apiVersion"] == "client.authentication.k8s.io/v1beta1"
    expires = datetime.strptime(cred["status"]["expirationTimestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before + timedelta(minutes=13) < expires <= before + timedelta(minutes=15)
    url, _ = _decode(cred["status"]["token"])
    assert urlsplit(url).netloc == f"sts.{REGION}.amazonaws.com"


def test_no_region_is_a_clear_configuration_error(aws, monkeypatch):
    monkeypatch.delenv("AWS_REGION")
    with pytest.raises(ConfigError, match="no AWS region"):
        session()


def _cluster(name: str = "prod-cluster") -> dict:
    eks = boto3_session().client("eks")
    return eks.create_cluster(name=name, roleArn=f"arn:aws:iam::{ACCOUNT}:role/eks",
                              resourcesVpcConfig={"subnetIds": ["subnet-1"]})["cluster"]


@pytest.mark.slow  # the kubernetes client runs `skiff cloud aws token` as a subprocess
def test_kubeconfig_entry_round_trips_through_the_kubernetes_client(aws, tmp_path, monkeypatch):
    """The written kubeconfig loads in the kubernetes client, which runs `skiff cloud aws token` itself."""
    cluster = _cluster()
    path = tmp_path / "kube" / "config"
    skiff = str(Path(sys.executable).with_name("skiff"))
    assert main(["cloud", "aws", "kubeconfig", "--cluster", "prod-cluster", "--kubeconfig", str(path),
                 "--exec-command", skiff]) == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = yaml.safe_load(path.read_text())
    assert doc["current-context"] == cluster["arn"]
    (entry,) = doc["clusters"]
    assert entry["cluster"] == {"server": cluster["endpoint"],
                                "certificate-authority-data": cluster["certificateAuthority"]["data"]}
    (user,) = doc["users"]
    assert user["user"]["exec"]["args"] == ["cloud", "aws", "token", "--cluster", "prod-cluster", "--region", REGION]

    from kubernetes import client, config

    cfg = client.Configuration()
    # moto's CA is random text, not a certificate: load the credentials, not a TLS context
    monkeypatch.setattr(config.kube_config.KubeConfigLoader, "_load_cluster_info", lambda self: None)
    config.load_kube_config(config_file=str(path), client_configuration=cfg)
    bearer = cfg.api_key["authorization"]
    assert bearer.startswith("Bearer " + TOKEN_PREFIX)
    url, q = _decode(bearer.removeprefix("Bearer "))
    assert q["Action"] == ["GetCallerIdentity"] and CLUSTER_ID_HEADER in q["X-Amz-SignedHeaders"][0]


def test_kubeconfig_merge_keeps_other_entries_and_replaces_its_own(aws, tmp_path):
    _cluster()
    path = tmp_path / "config"
    other = {"apiVersion": "v1", "kind": "Config", "current-context": "kind",
             "clusters": [{"name": "kind", "cluster": {"server": "https://127.0.0.1:6443"}}],
             "users": [{"name": "kind", "user": {"token": "abc"}}],
             "contexts": [{"name": "kind", "context": {"cluster": "kind", "user": "kind"}}],
             "preferences": {"colors": True}}
    path.write_text(yaml.safe_dump(other))
    # a named profile of the AWS config file (the fixture points AWS_CONFIG_FILE at tmp_path/aws-config)
    (tmp_path / "aws-config").write_text(f"[profile ops]\nregion = {REGION}\naws_access_key_id = ops\n"
                                         "aws_secret_access_key = ops-secret\n")
    for _ in range(2):  # writing twice replaces the entry, never duplicates it
        assert main(["cloud", "aws", "kubeconfig", "--cluster", "prod-cluster", "--kubeconfig", str(path),
                     "--alias", "prod", "--no-set-current", "--profile", "ops"]) == 0
    doc = yaml.safe_load(path.read_text())
    assert [c["name"] for c in doc["contexts"]] == ["kind", "prod"]
    assert [c["name"] for c in doc["clusters"]] == ["kind", "prod"]
    assert doc["current-context"] == "kind" and doc["preferences"] == {"colors": True}
    assert doc["users"][0] == {"name": "kind", "user": {"token": "abc"}}
    assert doc["users"][1]["user"]["exec"]["env"] == [{"name": "AWS_PROFILE", "value": "ops"}]
    assert not list(tmp_path.glob(".config.*.tmp")), "no temporary file left behind"


def test_kubeconfig_refuses_an_unknown_cluster_and_an_unreadable_file(aws, tmp_path, capsys):
    assert main(["cloud", "aws", "kubeconfig", "--cluster", "nope", "--kubeconfig", str(tmp_path / "c")]) == 2
    assert "no EKS cluster 'nope'" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="not a kubeconfig mapping"):
        write_kubeconfig(bad, {"cluster": {}, "user": {}, "context": {}})
    assert bad.read_text() == "- just\n- a list\n"
