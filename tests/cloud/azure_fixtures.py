"""A local stand-in for the few Azure endpoints skiff calls, and the fixtures that point the SDKs at it.

``FakeAzure`` is an HTTPS server on 127.0.0.1 (a self-signed certificate the SDKs are told to trust through
``REQUESTS_CA_BUNDLE``/``SSL_CERT_FILE``: azure-core refuses bearer tokens over plain HTTP) implementing:
Azure ML model versions (GET list, GET, PUT) and computes (PUT, GET) under a workspace; a storage account,
its blob service, a user-assigned identity and role assignments (the doctor's reads); ACR's
``/oauth2/exchange`` and ``/oauth2/token``. Every request is recorded with its JSON body, so tests check what
the SDK sent against the SDK's own REST models (``azure.ai.ml._restclient.arm_ml_service.models``).

Test modules use it with ``pytest_plugins = ["tests.cloud.azure_fixtures"]``. (PYTEST_DONT_REWRITE: the
test modules also import its names, and it asserts nothing.)
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

SUBSCRIPTION = "00000000-0000-0000-0000-00000000cafe"
RESOURCE_GROUP = "skiff-dev"
WORKSPACE = "skiff-dev-ml"
REGISTRY = "skiff-shared"
ACCOUNT = "skiffdevdata"
CONTAINER = "skiff"
TENANT = "11111111-2222-3333-4444-555555555555"
_WS = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/"
       f"Microsoft.MachineLearningServices/workspaces/{WORKSPACE}")
#: Where a registry's assets live: the registry's region's management front end (registry discovery says which)
MFE = "/mferp/managementfrontend"
_REG = (f"{MFE}/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/"
        f"Microsoft.MachineLearningServices/registries/{REGISTRY}")
ACCOUNT_ID = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.Storage/"
              f"storageAccounts/{ACCOUNT}")
CONTAINER_SCOPE = f"{ACCOUNT_ID}/blobServices/default/containers/{CONTAINER}"
ROLE = f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Authorization/roleDefinitions/"
BLOB_READER = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"
BLOB_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
KV_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"

__all__ = ["FakeAzure", "FakeCredential", "fake_azure", "azure_cloud", "rest_unknown_fields", "good_account",
           "SUBSCRIPTION", "RESOURCE_GROUP", "WORKSPACE", "REGISTRY", "ACCOUNT", "CONTAINER", "ACCOUNT_ID", "CONTAINER_SCOPE"]


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    authorization: str | None
    body: Any


def good_account() -> dict[str, Any]:
    """A storage account as modules/azure-aks makes it (what the doctor should pass)."""
    return {
        "account": {"id": ACCOUNT_ID, "name": ACCOUNT, "kind": "StorageV2", "location": "westeurope",
                    "properties": {"isHnsEnabled": True, "minimumTlsVersion": "TLS1_2",
                                   "supportsHttpsTrafficOnly": True, "allowBlobPublicAccess": False,
                                   "allowSharedKeyAccess": False}},
        "blob": {"properties": {"deleteRetentionPolicy": {"enabled": True, "days": 30},
                                "containerDeleteRetentionPolicy": {"enabled": True, "days": 30}}},
    }


@dataclass
class FakeAzure:
    url: str
    requests: list[Request] = field(default_factory=list)
    models: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    registry_models: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    computes: dict[str, dict[str, Any]] = field(default_factory=dict)
    storage: dict[str, Any] = field(default_factory=good_account)
    identities: dict[str, str] = field(default_factory=dict)  # identity resource id -> principal id
    assignments: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # principal -> assignments
    acr_tokens: dict[str, str] = field(default_factory=dict)  # refresh token -> the AAD token it came from
    acr_denied: set[str] = field(default_factory=set)  # repositories the identity may not push
    down: bool = False  # answer 503 to Azure ML calls (an unreachable workspace)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc

    def calls(self, method: str, pattern: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and re.search(pattern, r.path)]

    def assign(self, principal: str, role: str, scope: str, condition: str | None = None) -> None:
        props: dict[str, Any] = {"roleDefinitionId": ROLE + role, "principalId": principal, "scope": scope}
        if condition:
            props["condition"], props["conditionVersion"] = condition, "2.0"
        self.assignments.setdefault(principal, []).append(
            {"id": f"{scope}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}",
             "name": str(uuid.uuid4()), "type": "Microsoft.Authorization/roleAssignments", "properties": props})

    # -- the endpoints --------------------------------------------------------------------------------
    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        now = dt.datetime.now(dt.UTC).isoformat()
        if path == f"/registrymanagement/v1.0/registries/{REGISTRY}/discovery" and method == "GET":
            if self.down:
                return 503, {"error": {"code": "ServiceUnavailable", "message": "try later"}}
            return 200, {"registryName": REGISTRY, "tenantId": TENANT, "primaryRegion": "westeurope",
                         "regions": ["westeurope"], "subscriptionId": SUBSCRIPTION, "resourceGroup": RESOURCE_GROUP,
                         "primaryRegionResourceProviderUri": self.url + "/"}
        if path.startswith(_REG):
            if self.down:
                return 503, {"error": {"code": "ServiceUnavailable", "message": "try later"}}
            return self._registry(method, path, path[len(_REG):], body, now)
        if path.startswith(_WS):
            if self.down:
                return 503, {"error": {"code": "ServiceUnavailable", "message": "try later"}}
            rest = path[len(_WS):]
            if rest == "" and method == "GET":  # the workspace itself (attaching a compute reads its location)
                return 200, {"id": _WS, "name": WORKSPACE, "type": "Microsoft.MachineLearningServices/workspaces",
                             "location": "westeurope", "kind": "Default",
                             "properties": {"provisioningState": "Succeeded", "friendlyName": WORKSPACE}}
            m = re.fullmatch(r"/models/([^/]+)/versions", rest)
            if m and method == "GET":
                rows = [v for (n, _), v in self.models.items() if n == m.group(1)]
                return 200, {"value": rows}
            m = re.fullmatch(r"/models/([^/]+)/versions/([^/]+)", rest)
            if m:
                key = (m.group(1), m.group(2))
                if method == "GET":
                    return (200, self.models[key]) if key in self.models else (404, _not_found(path))
                if method == "PUT":
                    old = self.models.get(key)
                    if old and old["properties"]["modelUri"] != body["properties"]["modelUri"]:
                        return 409, {"error": {"code": "UserError", "message": "Cannot update the asset path"}}
                    doc = {"id": path, "name": key[1], "type": "Microsoft.MachineLearningServices/workspaces/"
                           "models/versions", "properties": {"flavors": {}, **body["properties"], "provisioningState": "Succeeded"},
                           "systemData": {"createdAt": now, "createdBy": "skiff", "lastModifiedAt": now}}
                    self.models[key] = doc
                    return (200 if old else 201), doc
            m = re.fullmatch(r"/computes/([^/]+)", rest)
            if m:
                if method == "PUT":
                    props = dict(body["properties"])
                    props["provisioningState"] = "Succeeded"
                    doc = {"id": path, "name": m.group(1), "type": "Microsoft.MachineLearningServices/workspaces/"
                           "computes", "location": body.get("location") or "westeurope", "properties": props}
                    self.computes[m.group(1)] = doc
                    return 200, doc
                if method == "GET":
                    doc = self.computes.get(m.group(1))
                    return (200, doc) if doc else (404, _not_found(path))
            return 404, _not_found(path)
        if path == f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Storage/storageAccounts":
            return 200, {"value": [self.storage["account"]]}
        if path == ACCOUNT_ID:
            return 200, self.storage["account"]
        if path == f"{ACCOUNT_ID}/blobServices/default":
            return 200, {"id": path, "name": "default", **self.storage["blob"]}
        if path in self.identities:
            return 200, {"id": path, "properties": {"principalId": self.identities[path], "tenantId": TENANT}}
        if path == f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Authorization/roleAssignments":
            m = re.fullmatch(r"principalId eq '([^']+)'", (query.get("$filter") or [""])[0])
            if not m:
                return 400, {"error": {"code": "InvalidFilter", "message": "filter by principalId"}}
            return 200, {"value": self.assignments.get(m.group(1), [])}
        if path == "/oauth2/exchange" and method == "POST":
            if body.get("grant_type") != ["access_token"] or body.get("service") != [self.host]:
                return 400, {"errors": [{"code": "UNSUPPORTED"}]}
            refresh = f"acr-refresh-{uuid.uuid4().hex}"
            self.acr_tokens[refresh] = body["access_token"][0]
            return 200, {"refresh_token": refresh}
        if path == "/oauth2/token" and method == "POST":
            refresh = (body.get("refresh_token") or [""])[0]
            scope = (body.get("scope") or [""])[0]
            repo = scope.split(":")[1] if scope.count(":") == 2 else ""
            if refresh not in self.acr_tokens or repo in self.acr_denied:
                return 401, {"errors": [{"code": "UNAUTHORIZED"}]}
            return 200, {"access_token": f"acr-access-{repo}"}
        return 404, _not_found(path)


def _registry(self: FakeAzure, method: str, path: str, rest: str, body: Any, now: str) -> tuple[int, Any]:
    """A registry's model versions on its management front end (``2021-10-01-dataplanepreview``)."""
    m = re.fullmatch(r"/tempdatarefs/([^/]+)/versions/([^/]+)", rest)
    if m and method == "PUT":  # where a local upload would go (nothing is uploaded for a remote path)
        if (m.group(1), m.group(2)) in self.registry_models:  # what the service answers once the asset exists
            return 409, {"error": {"code": "UserError", "message": "Asset already exists"}}
        blob = f"https://{REGISTRY}store.blob.core.windows.net/{m.group(1)}-{m.group(2)}"
        return 200, {"blobReferenceForConsumption": {"blobUri": blob, "storageAccountArmId": None,
                                                     "credential": {"credentialType": "SAS",
                                                                    "sasUri": blob + "?sv=fake"}}}
    m = re.fullmatch(r"/models/([^/]+)/versions", rest)
    if m and method == "GET":
        return 200, {"value": [v for (n, _), v in self.registry_models.items() if n == m.group(1)]}
    m = re.fullmatch(r"/models/([^/]+)/versions/([^/]+)", rest)
    if m:
        key = (m.group(1), m.group(2))
        if method == "GET":
            return (200, self.registry_models[key]) if key in self.registry_models else (404, _not_found(path))
        if method == "PUT":
            old = self.registry_models.get(key)
            if old and old["properties"]["modelUri"] != body["properties"]["modelUri"]:
                return 409, {"error": {"code": "UserError", "message": "Cannot update the asset path"}}
            doc = {"id": f"azureml://registries/{REGISTRY}/models/{key[0]}/versions/{key[1]}", "name": key[1],
                   "type": "Microsoft.MachineLearningServices/registries/"
                   "models/versions", "properties": {"flavors": {}, **body["properties"],
                                                      "provisioningState": "Succeeded"},
                   "systemData": {"createdAt": now, "createdBy": "skiff", "lastModifiedAt": now}}
            self.registry_models[key] = doc
            return (200 if old else 201), doc
    return 404, _not_found(path)


FakeAzure._registry = _registry  # type: ignore[attr-defined]


def _not_found(path: str) -> dict[str, Any]:
    return {"error": {"code": "ResourceNotFound", "message": f"{path} was not found"}}


class FakeCredential:
    """An azure-core ``TokenCredential`` whose tokens the fake server accepts; records the scopes asked."""

    def __init__(self) -> None:
        self.scopes: list[str] = []

    def get_token(self, *scopes: str, **_: Any) -> Any:
        from azure.core.credentials import AccessToken

        self.scopes.extend(scopes)
        return AccessToken(f"fake-aad-token-{len(self.scopes)}", int(time.time()) + 3600)


def _certificate(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="session")
def _azure_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    cert, key = _certificate(tmp_path_factory.mktemp("fake-azure"))
    holder: dict[str, FakeAzure] = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            fake = holder["fake"]
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            ctype = self.headers.get("Content-Type") or ""
            body: Any = (parse_qs(raw.decode()) if "form-urlencoded" in ctype
                         else json.loads(raw) if raw else None)
            query = parse_qs(url.query)
            with fake.lock:
                fake.requests.append(Request(self.command, url.path, query, self.headers.get("Authorization"), body))
                if not url.path.startswith("/oauth2/") and not (self.headers.get("Authorization") or "").startswith(
                        "Bearer fake-aad-token-"):
                    status, doc = 401, {"error": {"code": "AuthenticationFailed", "message": "no bearer token"}}
                else:
                    status, doc = fake.handle(self.command, url.path, query, body)
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, holder, cert
    server.shutdown()


@pytest.fixture
def fake_azure(_azure_server: Any, monkeypatch: pytest.MonkeyPatch) -> FakeAzure:
    """A fresh fake Azure (empty workspace, a good storage account) the SDKs trust."""
    server, holder, cert = _azure_server
    holder["fake"] = fake = FakeAzure(url=f"https://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    # the SDK records the cloud it last used in the process environment: keep that from leaking out
    monkeypatch.delenv("AZUREML_CURRENT_CLOUD", raising=False)
    return fake


@pytest.fixture
def azure_cloud(fake_azure: FakeAzure) -> dict[str, Any]:
    """``MLClient`` keyword arguments naming a cloud whose Resource Manager is the fake server."""
    url = fake_azure.url + "/"
    meta = {"azure_portal": url, "resource_manager": url, "active_directory": url, "aml_resource_id": url,
            "storage_endpoint": "core.windows.net", "registry_discovery_endpoint": url}
    return {"cloud": f"skiff-local-{urlsplit(fake_azure.url).port}", "cloud_metadata": meta}


def rest_unknown_fields(model: Any, where: str = "") -> list[str]:
    """Keys of a REST model's raw JSON that its class does not define, recursively: the body the SDK sent,
    read back with the SDK's own REST model, holds nothing the service's schema does not name."""
    from azure.ai.ml._restclient.arm_ml_service._utils.model_base import Model as RestModel

    known = {f._rest_name: attr for attr, f in model._attr_to_rest_field.items()}
    out = [f"{where}{k}" for k in model if k not in known]
    for rest_name, attr in known.items():
        if rest_name not in model:
            continue
        value = getattr(model, attr)
        if isinstance(value, RestModel):
            out += rest_unknown_fields(value, f"{where}{rest_name}.")
        elif isinstance(value, dict):
            for k, v in value.items():
                if isinstance(v, RestModel):
                    out += rest_unknown_fields(v, f"{where}{rest_name}.{k}.")
    return out
