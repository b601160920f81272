"""Which environments show their model versions in Azure ML, and the ``MLClient`` of their workspace.

An environment opts in with a file next to its ``environment.yaml``::

    infra/environments/<env>/azureml.yaml
        subscription_id: 00000000-0000-0000-0000-000000000000
        resource_group: skiff-prod
        workspace: skiff-prod-ml
        on_register: true        # each new version appears when registered (else only on promotion)

or, to share the models with every workspace that uses an Azure ML registry, ``registry_name: <registry>``
instead of the workspace (the registry's subscription and resource group come from registry discovery).

The file is read with :mod:`skiff.yamlio` (the core reads no serving code). The environments folder is
the one the CLI takes (``--environments``, ``SKIFF_ENVIRONMENTS``, ``infra/environments``). The identity
is azure-identity's ``DefaultAzureCredential`` chain: environment variables, workload identity (AKS),
managed identity, the Azure CLI's login.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from skiff.config import project_path
from skiff.errors import ConfigError, EnvironmentMissing
from skiff.yamlio import load_user_yaml

if TYPE_CHECKING:
    from azure.ai.ml import MLClient
    from azure.core.credentials import TokenCredential

__all__ = ["AzureMLTarget", "AZUREML_FILE", "environments_dir", "targets", "target", "ml_client", "credential",
           "ClientFactory", "SkiffCredential", "identity_error"]

AZUREML_FILE = "azureml.yaml"
_ENVIRONMENT_FILE = "environment.yaml"


class AzureMLTarget(BaseModel):
    """``<env>/azureml.yaml``: the Azure ML workspace, or registry, an environment's model versions appear in."""

    model_config = ConfigDict(extra="forbid")

    env: str = Field(default="", description="The environment (its folder name); set when read.")
    subscription_id: str | None = Field(default=None, min_length=1, description="Subscription of the workspace "
                                        "(a registry's comes from Azure ML's registry discovery).")
    resource_group: str | None = Field(default=None, min_length=1, description="Resource group of the workspace.")
    workspace: str | None = Field(default=None, min_length=1, description="Azure ML workspace name.")
    registry_name: str | None = Field(default=None, pattern=r"^[a-zA-Z0-9][a-zA-Z0-9\-_]{2,32}$",
                                      description="Azure ML registry name, instead of a workspace: the models are "
                                      "shared with every workspace that uses the registry.")
    on_register: bool = Field(default=True, description="Create the Azure ML model when a version is "
                              "registered (false: only when it is promoted into this environment).")
    cloud: str | None = Field(default=None, description="Azure cloud name (AzureCloud, AzureUSGovernment, "
                              "AzureChinaCloud); default: the SDK's (AzureCloud).")
    registry: str | None = Field(default=None, description="Where Azure ML finds the model registry (abfs[s]:// "
                                 "or https://<account>.blob.core.windows.net/<container>/<path>); default: the "
                                 "environment's own registry when it is on Azure storage, else skiff's registry.")

    @model_validator(mode="after")
    def _one_target(self) -> AzureMLTarget:
        if (self.workspace is None) == (self.registry_name is None):
            raise ValueError("name either a workspace (with subscription_id and resource_group) or a registry_name")
        if self.workspace is not None and (self.subscription_id is None or self.resource_group is None):
            raise ValueError("a workspace needs its subscription_id and resource_group")
        return self

    @property
    def is_registry(self) -> bool:
        return self.registry_name is not None

    @property
    def name(self) -> str:
        """The workspace's or the registry's name."""
        return str(self.registry_name or self.workspace)

    @property
    def label(self) -> str:
        """``workspace <name>`` or ``registry <name>``, for messages."""
        return f"{'registry' if self.is_registry else 'workspace'} {self.name}"

    @property
    def workspace_key(self) -> tuple[str, ...]:
        """One workspace (or registry), however many environments name it."""
        if self.registry_name is not None:
            return ("registry", self.registry_name.lower())
        return (str(self.subscription_id).lower(), str(self.resource_group).lower(), str(self.workspace).lower())


#: How the sync functions get a client for a workspace (tests give one that reaches a local server).
ClientFactory = Callable[[AzureMLTarget], "MLClient"]


def environments_dir(path: str | Path | None = None) -> Path:
    """The GitOps environments folder: ``path``, else ``SKIFF_ENVIRONMENTS``, else ``infra/environments``."""
    if path is not None:
        return Path(path)
    return project_path(os.environ.get("SKIFF_ENVIRONMENTS") or "infra/environments")


def target(root: Path, env: str) -> AzureMLTarget | None:
    """The Azure ML target of one environment; None when it has not opted in (no ``azureml.yaml``)."""
    if not (root / env / _ENVIRONMENT_FILE).is_file():
        raise ConfigError(f"environment {env!r} not found: no {root / env / _ENVIRONMENT_FILE}")
    path = root / env / AZUREML_FILE
    if not path.is_file():
        return None
    data = load_user_yaml(path, "Azure ML target", error=ConfigError)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping (subscription_id, resource_group and workspace, or "
                          "registry_name)")
    if "env" in data:
        raise ConfigError(f"{path}: 'env' is the folder's name, not a setting")
    if "registry" not in data:
        env_file = load_user_yaml(root / env / _ENVIRONMENT_FILE, "environment file", error=ConfigError)
        env_registry = env_file.get("registry") if isinstance(env_file, dict) else None
        if isinstance(env_registry, str) and env_registry.startswith(("abfs://", "abfss://", "https://")):
            data = {**data, "registry": env_registry}
    try:
        return AzureMLTarget.model_validate({**data, "env": env})
    except ValidationError as e:
        problems = "; ".join((f"{'.'.join(map(str, err['loc']))}: " if err["loc"] else "")
                             + str(err["msg"]).removeprefix("Value error, ") for err in e.errors())
        raise ConfigError(f"{path}: {problems}") from e


def targets(root: Path) -> list[AzureMLTarget]:
    """Every environment that opted in, by name."""
    if not root.is_dir():
        return []
    envs = sorted(p.name for p in root.iterdir() if (p / _ENVIRONMENT_FILE).is_file())
    return [t for t in (target(root, e) for e in envs) if t is not None]


#: What to do when azure-identity finds no identity.
_NO_IDENTITY = ("sign in with `az login`, set AZURE_CLIENT_ID and AZURE_TENANT_ID with AZURE_CLIENT_SECRET or "
                "AZURE_CLIENT_CERTIFICATE_PATH, or run as a workload identity or managed identity")


_UNAVAILABLE = ("unavailable", "not found", "not installed", "could not be found", "requires the", "not configured")


def identity_error(e: BaseException) -> ConfigError:
    """The :class:`ConfigError` of azure-identity failing to give a token: no identity in the chain, or one
    that Entra ID refused (the credential that failed and its first line, which names the AADSTS code;
    azure-identity's messages never hold the secret)."""
    text = str(e).strip()
    # a chain stops at the first credential that tried and failed; it lists every one it asked, that one last
    attempts = [line.strip() for line in text.splitlines() if line.startswith("\t")]
    last = attempts[-1] if attempts else (text.splitlines()[0] if text else type(e).__name__)
    if any(word in last.lower() for word in _UNAVAILABLE):
        return ConfigError(f"no Azure identity found: {_NO_IDENTITY}")
    return ConfigError(f"the Azure identity was refused ({last[:300]}): check its tenant, client ID and "
                       "secret or certificate")


class SkiffCredential:
    """azure-identity's credential whose failure to give a token is skiff's :class:`ConfigError` (exit 2, one
    line), wherever it is asked: skiff's own calls, azure-core's bearer policy, the Azure ML SDK."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.exceptions import ClientAuthenticationError

        try:
            return self._inner.get_token(*scopes, **kwargs)
        except ClientAuthenticationError as e:
            raise identity_error(e) from e

    def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        from azure.core.exceptions import ClientAuthenticationError

        inner = getattr(self._inner, "get_token_info", None)
        if inner is None:  # a credential of the older protocol: get_token only
            from azure.core.credentials import AccessTokenInfo

            token = self.get_token(*scopes)
            return AccessTokenInfo(token.token, token.expires_on)
        try:
            return inner(*scopes, options=options)
        except ClientAuthenticationError as e:
            raise identity_error(e) from e

    def close(self) -> None:
        self._inner.close()

    def __enter__(self) -> SkiffCredential:
        self._inner.__enter__()
        return self

    def __exit__(self, *args: Any) -> None:
        self._inner.__exit__(*args)


def _quiet_identity_logs() -> None:
    """azure-identity logs every credential it tries (and its HTTP calls) at INFO and the chain's failure
    at WARNING; skiff says what failed once, in its own error. ``--debug`` (DEBUG on the root) keeps them."""
    if logging.getLogger().getEffectiveLevel() <= logging.DEBUG:
        return
    for name, level in (("azure.identity", logging.ERROR),
                        ("azure.core.pipeline.policies.http_logging_policy", logging.WARNING)):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(level)


def credential() -> TokenCredential:
    """azure-identity's default chain (no interactive browser login); a missing or refused identity is a
    :class:`ConfigError` naming what to set."""
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError as e:
        raise EnvironmentMissing("Azure commands need the azure extra: pip install 'skiff[azure]'") from e
    _quiet_identity_logs()
    return cast("TokenCredential", SkiffCredential(DefaultAzureCredential(
        exclude_interactive_browser_credential=True)))


def ml_client(t: AzureMLTarget, cred: TokenCredential | None = None, **sdk_options: Any) -> MLClient:
    """The ``MLClient`` of the target's workspace or registry (no telemetry, no progress bars); ``sdk_options``
    go to the SDK (``cloud``/``cloud_metadata`` name a cloud the SDK does not know). A registry's client
    asks Azure ML's registry discovery where the registry is (its subscription, resource group and region)."""
    try:
        from azure.ai.ml import MLClient
    except ImportError as e:
        raise EnvironmentMissing("Azure ML needs the azure extra: pip install 'skiff[azure]'") from e
    if t.cloud and "cloud" not in sdk_options:
        sdk_options["cloud"] = t.cloud
    if t.registry_name is not None:
        return MLClient(cred or credential(), t.subscription_id, t.resource_group, registry_name=t.registry_name,
                        enable_telemetry=False, show_progress=False, **sdk_options)
    return MLClient(cred or credential(), t.subscription_id, t.resource_group, t.workspace,
                    enable_telemetry=False, show_progress=False, **sdk_options)
