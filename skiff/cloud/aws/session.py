"""A boto3 session from the standard credential chain, optionally assuming a role on top.

boto3 is imported here, lazily, and only here: a missing ``skiff[aws]`` extra is one clear error, not an
ImportError deep in a command. Its objects are ``Any`` to the type checker (boto3 ships no types and skiff
adds no stub dependency).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any

from skiff.errors import ConfigError, EnvironmentMissing, SkiffError

__all__ = ["AwsIdentity", "boto3_module", "botocore_exceptions", "session", "identity", "error_code", "aws_error"]

#: The session name a role assumed by skiff carries in CloudTrail.
SESSION_NAME = "skiff"


def boto3_module() -> Any:
    """The ``boto3`` module, or a clear error naming the extra that installs it."""
    try:
        return importlib.import_module("boto3")
    except ImportError as e:
        raise EnvironmentMissing("the AWS commands need boto3: pip install 'skiff[aws]'") from e


def botocore_exceptions() -> Any:
    """``botocore.exceptions`` (installed with boto3)."""
    boto3_module()
    return importlib.import_module("botocore.exceptions")


@dataclass(frozen=True)
class AwsIdentity:
    """Who the session is: STS ``GetCallerIdentity``."""

    account: str
    arn: str
    user_id: str


def session(*, profile: str | None = None, region: str | None = None, role_arn: str | None = None,
            role_session_name: str = SESSION_NAME) -> Any:
    """A ``boto3.Session`` from the standard chain (env, ``profile``, web identity, instance metadata).

    With ``role_arn``, the chain's identity assumes that role (STS ``AssumeRole``) and the session holds the
    role's temporary credentials. The region is ``region``, else the chain's (``AWS_REGION``,
    ``AWS_DEFAULT_REGION``, the profile's); none at all is a :class:`ConfigError`.
    """
    boto3 = boto3_module()
    exc = botocore_exceptions()
    # botocore reads AWS_DEFAULT_REGION; AWS_REGION is what EKS's pod identity webhook and the other SDKs set
    region = region or os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or None
    try:
        base = boto3.Session(profile_name=profile, region_name=region)
    except exc.ProfileNotFound as e:
        raise ConfigError(f"AWS profile {profile!r} not found in the AWS config files") from e
    if not base.region_name:
        raise ConfigError("no AWS region: pass --region or set AWS_REGION (or a region in the AWS profile)")
    if role_arn is None:
        return base
    try:
        creds = base.client("sts").assume_role(RoleArn=role_arn, RoleSessionName=role_session_name)["Credentials"]
    except (exc.ClientError, exc.BotoCoreError) as e:
        raise aws_error(f"could not assume role {role_arn}", e) from e
    return boto3.Session(aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                         aws_session_token=creds["SessionToken"], region_name=base.region_name)


def identity(sess: Any) -> AwsIdentity:
    """The caller's identity (STS ``GetCallerIdentity``, which needs no IAM permission)."""
    exc = botocore_exceptions()
    try:
        r = sess.client("sts").get_caller_identity()
    except (exc.ClientError, exc.BotoCoreError) as e:
        raise aws_error("could not read the caller identity (are AWS credentials configured?)", e) from e
    return AwsIdentity(account=r["Account"], arn=r["Arn"], user_id=r["UserId"])


def error_code(e: BaseException) -> str:
    """The AWS error code of a botocore ``ClientError`` (``""`` for anything else)."""
    response = getattr(e, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def aws_error(what: str, e: BaseException) -> SkiffError:
    """A skiff error for a failed AWS call: access denied and missing credentials are configuration
    problems (exit 2), the rest a source error; the message keeps AWS's error code, never a credential."""
    from skiff.errors import SourceError

    code = error_code(e)
    exc = botocore_exceptions()
    if isinstance(e, exc.NoCredentialsError):
        return ConfigError(f"{what}: no AWS credentials found (env, profile or web identity)")
    if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "InvalidClientTokenId",
                "ExpiredToken", "ExpiredTokenException", "SignatureDoesNotMatch"):
        return ConfigError(f"{what}: {code} ({_message(e)})")
    return SourceError(f"{what}: {code or type(e).__name__} ({_message(e)})")


def _message(e: BaseException) -> str:
    response = getattr(e, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Message", "")) or str(e)
    return str(e)
