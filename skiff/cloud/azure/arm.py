"""The few Azure Resource Manager reads the doctor makes, through azure-core's pipeline.

azure-mgmt-storage and azure-mgmt-authorization are not dependencies of skiff: the doctor reads four
documented ARM resources (a storage account, its blob service, a user-assigned identity, role assignments)
with a GET each, so azure-core's ``PipelineClient`` with the azure-identity token (the bearer policy, retries,
HTTPS enforced) is all it takes, and skiff's extra stays two packages (azure-identity, azure-ai-ml).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from skiff.errors import NotFoundError, SourceError, UsageError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

__all__ = ["Arm", "ARM_ENDPOINT", "STORAGE_API", "AUTHORIZATION_API", "IDENTITY_API"]

ARM_ENDPOINT = "https://management.azure.com"
STORAGE_API = "2023-05-01"
AUTHORIZATION_API = "2022-04-01"
IDENTITY_API = "2023-01-31"


class Arm:
    """GETs against Azure Resource Manager as the azure-identity credential."""

    def __init__(self, credential: TokenCredential, endpoint: str = ARM_ENDPOINT, *, retries: int = 2) -> None:
        from azure.core import PipelineClient
        from azure.core.pipeline.policies import (
            BearerTokenCredentialPolicy,
            HeadersPolicy,
            RetryPolicy,
        )

        if not endpoint.startswith("https://"):
            raise UsageError(f"the Resource Manager endpoint must be https:// (bearer tokens go only over TLS): "
                             f"{endpoint!r}")
        self.endpoint = endpoint.rstrip("/")
        self._client: Any = PipelineClient(base_url=self.endpoint, policies=[
            HeadersPolicy({"Accept": "application/json"}),
            RetryPolicy(retry_total=retries, retry_backoff_factor=0.2),
            BearerTokenCredentialPolicy(credential, f"{self.endpoint}/.default"),
        ])

    def get(self, path: str, api_version: str, **query: str) -> dict[str, Any]:
        """The JSON of ``GET <endpoint><path>?api-version=...``; a 404 is a :class:`NotFoundError`, any other
        failure a :class:`SourceError` naming the path and ARM's error code (never the token)."""
        from azure.core.exceptions import AzureError

        params = {"api-version": api_version, **query}
        url = f"{self.endpoint}{quote(path)}?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
        try:
            response = self._client.send_request(_request(url))
        except AzureError as e:
            raise SourceError(f"Azure Resource Manager unreachable for {path}: {type(e).__name__}") from e
        if response.status_code == 404:
            raise NotFoundError(f"{path} not found in Azure Resource Manager")
        if response.status_code >= 400:
            code = ""
            with contextlib.suppress(ValueError):
                code = response.json().get("error", {}).get("code", "")
            raise SourceError(f"Azure Resource Manager answered {response.status_code} {code} for {path}".strip())
        body: dict[str, Any] = response.json()
        return body

    def get_all(self, path: str, api_version: str, **query: str) -> list[dict[str, Any]]:
        """A list resource, following ``nextLink`` pages."""
        page = self.get(path, api_version, **query)
        items: list[dict[str, Any]] = list(page.get("value", []))
        seen = 0
        while page.get("nextLink") and seen < 100:
            seen += 1
            link = str(page["nextLink"])
            if not link.startswith(self.endpoint + "/"):
                raise SourceError("Azure Resource Manager's nextLink points elsewhere")
            rest = link[len(self.endpoint):]
            p, _, qs = rest.partition("?")
            q = dict(kv.split("=", 1) for kv in qs.split("&") if "=" in kv)
            api = q.pop("api-version", api_version)
            from urllib.parse import unquote

            page = self.get(unquote(p), api, **{k: unquote(v) for k, v in q.items()})
            items.extend(page.get("value", []))
        return items


def _request(url: str) -> Any:
    from azure.core.rest import HttpRequest

    return HttpRequest("GET", url)
