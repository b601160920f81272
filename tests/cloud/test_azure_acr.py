"""``skiff images push --registry acr``: the Entra token exchanged at the registry (a local ACR token
endpoint over HTTPS), a scoped access token per repository before anything is pushed, then docker's push
with the refresh token as the all-zero user's password.

No Docker daemon runs on the test machines, so docker's side is a recording double of the docker SDK's
``images.get(...).tag`` / ``images.push`` (the shape docker-py 7 has); the token flow is the real code
against the fake registry's ``/oauth2/exchange`` and ``/oauth2/token``."""

from __future__ import annotations

from typing import Any

import pytest

from skiff.cloud.azure import acr
from skiff.config import Settings
from skiff.errors import ConfigError, UsageError
from tests.cloud.azure_fixtures import FakeAzure, FakeCredential

pytest_plugins = ["tests.cloud.azure_fixtures"]


class _Image:
    def __init__(self, log: list[tuple[Any, ...]], ref: str) -> None:
        self.log, self.ref = log, ref

    def tag(self, repository: str, tag: str) -> bool:
        self.log.append(("tag", self.ref, repository, tag))
        return True


class _Images:
    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []

    def get(self, ref: str) -> _Image:
        return _Image(self.log, ref)

    def push(self, repository: str, tag: str, auth_config: dict[str, str], stream: bool, decode: bool) -> Any:
        self.log.append(("push", repository, tag, auth_config))
        yield {"status": "Pushed"}
        yield {"aux": {"Tag": tag, "Digest": "sha256:" + "0" * 64, "Size": 1}}


class _Docker:
    def __init__(self) -> None:
        self.images = _Images()


def test_login_server_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    assert acr.login_server("skiffacr.azurecr.io/skiff") == ("skiffacr.azurecr.io", "skiff")
    assert acr.login_server("SkiffAcr") == ("skiffacr.azurecr.io", "")
    monkeypatch.setenv("SKIFF_IMAGE_REGISTRY", "skiffprod.azurecr.io/skiff")
    assert acr.login_server("acr") == ("skiffprod.azurecr.io", "skiff")
    monkeypatch.delenv("SKIFF_IMAGE_REGISTRY")
    with pytest.raises(UsageError, match="SKIFF_IMAGE_REGISTRY"):
        acr.login_server("acr")
    assert acr.target_ref("ghcr.io/skiff-ml/skiff-gpu:0.4.0", "x.azurecr.io", "skiff") == ("skiff/skiff-gpu", "0.4.0")
    assert acr.target_ref("skiff", "x.azurecr.io", "") == ("skiff", "latest")


def test_push_exchanges_the_token_checks_each_repository_and_pushes(fake_azure: FakeAzure) -> None:
    docker = _Docker()
    cred = FakeCredential()
    images = {"skiff": "ghcr.io/skiff-ml/skiff:0.4.0", "skiff-gpu": "ghcr.io/skiff-ml/skiff-gpu:0.4.0"}
    out = acr.push_images(Settings(), f"{fake_azure.host}/skiff", images, tag="0.4.1", credential=cred,
                          docker_client=docker)
    assert [r["target"] for r in out] == [f"{fake_azure.host}/skiff/skiff:0.4.1", f"{fake_azure.host}/skiff/skiff-gpu:0.4.1"]
    assert all(r["digest"] == "sha256:" + "0" * 64 for r in out)
    assert cred.scopes == ["https://management.azure.com/.default"]
    exchange = fake_azure.calls("POST", "^/oauth2/exchange$")
    assert len(exchange) == 1 and exchange[0].body["access_token"] == ["fake-aad-token-1"]
    scopes = [r.body["scope"][0] for r in fake_azure.calls("POST", "^/oauth2/token$")]
    assert scopes == ["repository:skiff/skiff:pull,push", "repository:skiff/skiff-gpu:pull,push"]
    (refresh,) = fake_azure.acr_tokens
    pushes = [e for e in docker.images.log if e[0] == "push"]
    assert [p[3] for p in pushes] == [{"username": acr.ACR_USER, "password": refresh}] * 2
    assert ("tag", "ghcr.io/skiff-ml/skiff:0.4.0", f"{fake_azure.host}/skiff/skiff", "0.4.1") in docker.images.log


def test_the_images_may_come_first_and_the_registry_from_the_environment(
        fake_azure: FakeAzure, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKIFF_IMAGE_REGISTRY", fake_azure.host)
    out = acr.push_images({"skiff": "ghcr.io/skiff-ml/skiff:0.4.0"}, tag=None, registry=None,
                          credential=FakeCredential(), docker_client=_Docker())
    assert out[0]["target"] == f"{fake_azure.host}/skiff:0.4.0"


def test_a_repository_the_identity_may_not_push_fails_before_any_push(fake_azure: FakeAzure) -> None:
    fake_azure.acr_denied.add("skiff/skiff-gpu")
    docker = _Docker()
    with pytest.raises(ConfigError, match="AcrPush"):
        acr.push_images(Settings(), f"{fake_azure.host}/skiff", ["a/skiff:1", "a/skiff-gpu:1"],
                        credential=FakeCredential(), docker_client=docker)
    assert docker.images.log == []


def _no_identity_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    """azure-identity's own chain with nothing to find: EnvironmentCredential without its variables (what
    DefaultAzureCredential meets first); no managed identity endpoint or CLI login to ask on the test machine."""
    from azure.identity import ChainedTokenCredential, EnvironmentCredential

    for key in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH",
                "AZURE_USERNAME", "AZURE_FEDERATED_TOKEN_FILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr("azure.identity.DefaultAzureCredential",
                        lambda **_: ChainedTokenCredential(EnvironmentCredential()))


def test_push_without_an_identity_is_a_config_error_through_the_cli(
        fake_azure: FakeAzure, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from skiff.cli import main

    _no_identity_chain(monkeypatch)
    code = main(["images", "push", "--registry", "acr", "--acr", f"{fake_azure.host}/skiff", "--image", "skiff"])
    err = capsys.readouterr().err
    assert code == ConfigError.exit_code == 2, err
    assert "no Azure identity found" in err and "az login" in err and "AZURE_CLIENT_ID" in err
    assert "unexpected error" not in err and "Traceback" not in err
    assert fake_azure.calls("POST", "^/oauth2/") == []  # nothing reached the registry


def test_a_refused_identity_names_the_credential_that_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    from azure.core.exceptions import ClientAuthenticationError
    from azure.identity import ChainedTokenCredential, EnvironmentCredential

    from skiff.cloud.azure.workspace import SkiffCredential

    class Refused:
        def get_token(self, *scopes: str, **kwargs: Any) -> Any:
            raise ClientAuthenticationError("Authentication failed: AADSTS7000215: Invalid client secret provided.")

        def close(self) -> None:
            pass

    monkeypatch.delenv("AZURE_CLIENT_ID", raising=False)
    chain = SkiffCredential(ChainedTokenCredential(EnvironmentCredential(), Refused()))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="refused.*AADSTS7000215"):
        chain.get_token("https://management.azure.com/.default")
