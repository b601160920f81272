"""A version's files where its Azure ML model points, checked through the blob data plane.

An Azure ML model is only a pointer: a wrong ``registry`` in an environment's ``azureml.yaml`` makes models
that point at nothing, and Azure ML says so only when a job reads them. ``sync-models --verify-storage``
checks first, with the identity's own token (``Storage Blob Data Reader`` on the file system), that the
version is published there (its ``_COMMITTED`` marker) and, for an ``mlflow_model``, that the ``MLmodel``
file is in the folder the model points at.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from skiff.errors import NotFoundError, SourceError, UsageError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

__all__ = ["blob_location", "verify_version", "COMMITTED"]

COMMITTED = "_COMMITTED"
_ABFSS = re.compile(r"^abfss://(?P<container>[^@/]+)@(?P<account>[a-z0-9]+)\.dfs\.(?P<suffix>core\.[^/]+)(?P<path>/.*)?$")


def blob_location(path: str, account_url: str | None = None) -> tuple[str, str, str]:
    """``(account URL, container, prefix)`` of an ``abfss://`` path: the blob endpoint of the same account
    (``https://<account>.blob.<suffix>``) unless ``account_url`` names another (an emulator)."""
    m = _ABFSS.match(path)
    if not m:
        raise UsageError(f"{path!r} is not abfss://<container>@<account>.dfs.<suffix>/<path>")
    url = account_url or f"https://{m.group('account')}.blob.{m.group('suffix')}"
    return url.rstrip("/"), m.group("container"), (m.group("path") or "").strip("/")


def verify_version(version_path: str, model_path: str, model_type: str, credential: TokenCredential | Any, *,
                   account_url: str | None = None) -> None:
    """Raise :class:`NotFoundError` unless the version folder ``version_path`` holds its ``_COMMITTED`` marker
    and, for ``mlflow_model``, ``model_path`` its ``MLmodel``; :class:`SourceError` when storage refuses."""
    from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError
    from azure.storage.blob import ContainerClient

    url, container, prefix = blob_location(version_path, account_url)
    _, _, model_prefix = blob_location(model_path, account_url)
    client = ContainerClient(url, container, credential=credential, retry_total=1)
    wanted = [f"{prefix}/{COMMITTED}"]
    if model_type == "mlflow_model":
        wanted.append(f"{model_prefix}/MLmodel")
    try:
        for blob in wanted:
            if not client.get_blob_client(blob).exists():
                raise NotFoundError(f"{container}/{blob} is not in storage account {url}: the Azure ML model would "
                                    "point at nothing (check the registry in the environment's azureml.yaml)")
    except (ClientAuthenticationError, HttpResponseError) as e:
        raise SourceError(f"{url}/{container} refused the identity ({getattr(e, 'status_code', '?')}): it needs "
                          "Storage Blob Data Reader on skiff's file system") from e
    except AzureError as e:
        raise SourceError(f"{url} unreachable: {type(e).__name__}") from e
    finally:
        client.close()
