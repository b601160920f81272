"""``skiff images push --registry acr``: skiff's images into Azure Container Registry as the Entra identity.

ACR takes no Entra token directly. The identity's token for Azure Resource Manager is exchanged at the
registry (``POST /oauth2/exchange``) for an ACR refresh token; that refresh token, as the password of the
all-zero user, is what ``az acr login`` hands docker. Before pushing, the refresh token is traded for an
access token scoped to each repository (``POST /oauth2/token``, ``repository:<repo>:pull,push``), so an
identity without ``AcrPush`` fails on that repository with a clear message instead of half-way through a
push. No identity, or one the registry refuses, is a :class:`~skiff.errors.ConfigError` (exit 2), as on
the ECR side. The identity needs ``AcrPush`` on the registry (nothing wider).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from skiff.config import Settings
from skiff.errors import ConfigError, SkiffError, SourceError, UsageError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

__all__ = ["ACR_USER", "PushResult", "login_server", "exchange_refresh_token", "access_token", "target_ref",
           "push_images"]

#: The user name docker presents with an ACR refresh token.
ACR_USER = "00000000-0000-0000-0000-000000000000"
_ARM_SCOPE = "https://management.azure.com/.default"
_LOGIN = re.compile(r"^(?P<server>[a-z0-9]+\.azurecr\.(io|cn|us)|[a-z0-9.-]+(:\d+)?)(?P<prefix>(/[a-z0-9._-]+)*)$")


@dataclass(frozen=True)
class PushResult:
    """One image pushed: its local name, where it went, and the digest the registry answered."""

    image: str
    target: str
    digest: str | None


def login_server(registry: str) -> tuple[str, str]:
    """``(login server, repository prefix)`` of ``<name>.azurecr.io[/prefix]`` (Terraform output
    ``image_registry``), a bare registry name (``<name>`` -> ``<name>.azurecr.io``), or ``acr`` for
    ``SKIFF_IMAGE_REGISTRY``."""
    value = registry.strip().rstrip("/")
    if value == "acr":
        value = os.environ.get("SKIFF_IMAGE_REGISTRY", "").strip().rstrip("/")
        if not value:
            raise UsageError("--registry acr needs SKIFF_IMAGE_REGISTRY (the Terraform output image_registry, "
                             "<name>.azurecr.io/<prefix>) or the registry itself as --registry")
    if re.fullmatch(r"[a-zA-Z0-9]{5,50}", value):
        value = f"{value.lower()}.azurecr.io"
    m = _LOGIN.match(value.lower())
    if not m:
        raise UsageError(f"{registry!r} is not an ACR login server (<name>.azurecr.io[/prefix])")
    return m.group("server"), m.group("prefix").lstrip("/")


def _post_form(url: str, form: dict[str, str]) -> dict[str, Any]:
    import httpx

    try:
        # trust_env: the CA bundle (SSL_CERT_FILE) and proxy of the environment, as the Azure SDKs do
        r = httpx.post(url, data=form, timeout=30)
    except httpx.HTTPError as e:
        raise SourceError(f"{url} unreachable: {type(e).__name__}") from e
    if r.status_code in (401, 403):  # a configuration problem, as AWS's AccessDenied is on the ECR side
        raise ConfigError(f"{url} refused the identity ({r.status_code}): it needs AcrPush on the registry")
    if r.status_code >= 400:
        raise SourceError(f"{url} answered {r.status_code}")
    try:
        body: dict[str, Any] = r.json()
    except ValueError as e:
        raise SourceError(f"{url} answered no JSON") from e
    return body


def exchange_refresh_token(server: str, credential: TokenCredential, *, tenant: str | None = None) -> str:
    """The ACR refresh token of the identity (``/oauth2/exchange`` with its ARM access token)."""
    aad = credential.get_token(_ARM_SCOPE).token
    form = {"grant_type": "access_token", "service": server, "access_token": aad}
    if tenant:
        form["tenant"] = tenant
    body = _post_form(f"https://{server}/oauth2/exchange", form)
    token = body.get("refresh_token")
    if not isinstance(token, str) or not token:
        raise SourceError(f"{server}/oauth2/exchange answered no refresh token")
    return token


def access_token(server: str, refresh_token: str, repository: str, actions: str = "pull,push") -> str:
    """An ACR access token for one repository (``/oauth2/token``): proves the identity may push there."""
    body = _post_form(f"https://{server}/oauth2/token", {
        "grant_type": "refresh_token", "service": server, "refresh_token": refresh_token,
        "scope": f"repository:{repository}:{actions}"})
    token = body.get("access_token")
    if not isinstance(token, str) or not token:
        raise SourceError(f"{server}/oauth2/token answered no access token for {repository}")
    return token


def target_ref(image: str, server: str, prefix: str) -> tuple[str, str]:
    """``(repository, tag)`` in the registry of a local image reference (``[registry/]path/name:tag``):
    the image's last path part under the prefix, the same tag (``latest`` when it has none)."""
    ref = image.split("@", 1)[0]
    name, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "latest")
    base = name.rsplit("/", 1)[-1]
    if not base:
        raise UsageError(f"{image!r} is not an image reference")
    repo = f"{prefix}/{base}" if prefix else base
    return repo, tag or "latest"


def _push_progress(lines: Iterator[dict[str, Any]]) -> str | None:
    digest = None
    for line in lines:
        if line.get("error"):
            raise SourceError(f"docker push failed: {str(line['error'])[:300]}")
        aux = line.get("aux") or {}
        if aux.get("Digest"):
            digest = str(aux["Digest"])
    return digest


def push_images(settings: Settings | Mapping[str, str] | list[str], registry: str | None = None,
                images: Mapping[str, str] | list[str] | None = None, *, tag: str | None = None,
                credential: TokenCredential | None = None, docker_client: Any = None, tenant: str | None = None,
                on_progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Tag and push local ``images`` to ACR ``registry`` as the azure-identity identity.

    ``images`` is a list of local references (pushed as their last path part) or a mapping of repository
    name -> local reference (``components._image.IMAGES``); ``tag`` is the tag in ACR (default: each local
    reference's own). ``registry`` is the login server, ``<server>/<prefix>``, a registry name or ``acr``/None
    for ``SKIFF_IMAGE_REGISTRY``. (The images may also come first, in place of the settings, which the push
    does not need: the registry and identity come from the arguments and azure-identity's chain.)"""
    if images is None and not isinstance(settings, Settings):
        images = settings
    if not images:
        raise UsageError("no images to push")
    server, prefix = login_server(registry or "acr")
    from skiff.cloud.azure.workspace import credential as default_credential

    named = images.items() if isinstance(images, Mapping) else ((None, i) for i in images)
    plan = []
    for name, image in named:
        repo, own_tag = target_ref(image, server, prefix)
        if name:
            repo = f"{prefix}/{name}" if prefix else name
        plan.append((image, repo, tag or own_tag))
    refresh = exchange_refresh_token(server, credential or default_credential(), tenant=tenant)
    for _, repo, _ in plan:
        access_token(server, refresh, repo)
    if docker_client is None:
        try:
            import docker  # type: ignore[import-untyped]
        except ImportError as e:  # pragma: no cover - docker is a dependency of the images commands
            raise SkiffError("the docker SDK is needed to push images") from e
        try:
            docker_client = docker.from_env()
            docker_client.ping()
        except docker.errors.DockerException as e:
            raise SourceError(f"docker is not reachable: {type(e).__name__}") from e
    auth = {"username": ACR_USER, "password": refresh}
    out = []
    for image, repo, repo_tag in plan:
        target = f"{server}/{repo}"
        if on_progress:
            on_progress(f"pushing {image} -> {target}:{repo_tag}")
        try:
            docker_client.images.get(image).tag(target, tag=repo_tag)
        except Exception as e:
            raise SourceError(f"local image {image} not found: build it first (make images)") from e
        digest = _push_progress(docker_client.images.push(target, tag=repo_tag, auth_config=auth, stream=True,
                                                          decode=True))
        out.append(asdict(PushResult(image=image, target=f"{target}:{repo_tag}", digest=digest)))
    return out
