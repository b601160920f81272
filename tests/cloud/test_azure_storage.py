"""A version's files where its Azure ML model points, checked against Azurite (the Azure Storage emulator,
npm ``azurite``, installed by ``.ci/fetch_tools.py`` into ``.tools``): the ``abfss://`` path skiff gives Azure
ML names the container and blob prefix the registry's files are under."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.storage.blob", reason="the azure extra (azure-storage-blob) is not installed")

from azure.storage.blob import BlobServiceClient  # noqa: E402
from sklearn.dummy import DummyClassifier  # noqa: E402

from skiff.cloud.azure import models as azml  # noqa: E402
from skiff.cloud.azure import storage, workspace  # noqa: E402
from skiff.errors import NotFoundError  # noqa: E402
from skiff.registry import ModelRegistry  # noqa: E402
from skiff.storage import Store  # noqa: E402
from tests.cloud.azure_fixtures import (  # noqa: E402
    ACCOUNT,
    CONTAINER,
    RESOURCE_GROUP,
    SUBSCRIPTION,
    WORKSPACE,
    FakeAzure,
    FakeCredential,
)

pytest_plugins = ["tests.cloud.azure_fixtures"]
pytestmark = pytest.mark.integration  # a real emulator process (Azurite)

REPO = Path(__file__).resolve().parents[2]
#: Azurite's well-known development account (public, documented; not a secret)
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
CRED = {"account_name": DEV_ACCOUNT, "account_key": DEV_KEY}
ABFSS = f"abfss://{CONTAINER}@{ACCOUNT}.dfs.core.windows.net/models"


def _azurite_blob() -> str:
    tools = REPO / ".tools"
    exe = tools / "azurite" / "node_modules" / ".bin" / "azurite-blob"
    if exe.exists():
        return str(exe)
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm not found: Azurite (npm azurite) cannot run here")
    sys.path.insert(0, str(REPO / ".ci"))
    import fetch_tools  # the same install `make setup` runs

    fetch_tools.fetch_azurite(tools, tools / "bin")
    return str(exe)


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    exe = _azurite_blob()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = tmp_path_factory.mktemp("azurite")  # its debug/extent files stay out of the working folder
    proc = subprocess.Popen([exe, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(folder),
                             "--silent", "--skipApiVersionCheck", "--loose"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=folder)
    url = f"http://127.0.0.1:{port}/{DEV_ACCOUNT}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                err = proc.stderr.read().decode()[:500] if proc.stderr else ''
                raise RuntimeError(f"Azurite did not start: {err}") from None
            time.sleep(0.2)
    yield url
    proc.kill()  # its data is a temporary folder; a graceful stop takes Azurite seconds
    proc.wait(timeout=10)


@pytest.fixture
def published(tmp_path: Path, azurite: str) -> tuple[ModelRegistry, Any]:
    """A local registry with two versions (the second with an MLflow export), version 1 and 2's folders
    uploaded to the emulator as a cluster's registry would hold them (``models/<name>/<version>/``)."""
    reg = ModelRegistry(Store(str(tmp_path / "models")))
    model = DummyClassifier().fit([[0], [1]], [0, 1])
    reg.register("churn", model, {"metrics": {"roc_auc": 0.8}})
    mlmodel = tmp_path / "MLmodel"
    mlmodel.write_text("flavors:\n  sklearn: {}\n")
    reg.register("churn", model, {"metrics": {"roc_auc": 0.9}}, files={"MLmodel": mlmodel})
    service = BlobServiceClient(azurite, credential=CRED)
    container = service.get_container_client(CONTAINER)
    if not container.exists():
        container.create_container()
    for blob in container.list_blobs():
        container.delete_blob(blob.name)
    for f in (tmp_path / "models").rglob("*"):
        if f.is_file() and not f.relative_to(tmp_path / "models").parts[1].startswith("_"):
            container.upload_blob(f"models/{f.relative_to(tmp_path / 'models').as_posix()}", f.read_bytes(),
                                  overwrite=True)
    return reg, container


def test_the_abfss_path_names_the_blobs_the_registry_wrote(published: tuple[ModelRegistry, Any], azurite: str) -> None:
    reg, container = published
    for v in (1, 2):
        mv = reg.get("churn", v)
        kind, path = azml.model_path(mv, f"https://{ACCOUNT}.blob.core.windows.net/{CONTAINER}/models")
        url, cont, prefix = storage.blob_location(path, azurite)
        assert (url, cont, prefix) == (azurite, CONTAINER, f"models/churn/{v}")
        names = {b.name for b in container.list_blobs(name_starts_with=prefix + "/")}
        assert f"{prefix}/_COMMITTED" in names and f"{prefix}/metadata.json" in names
        storage.verify_version(path, path, kind, CRED, account_url=azurite)


def test_a_wrong_registry_location_is_caught_before_azure_ml(published: tuple[ModelRegistry, Any], azurite: str) -> None:
    reg, container = published
    wrong = f"abfss://{CONTAINER}@{ACCOUNT}.dfs.core.windows.net/skiff/models/churn/1"
    with pytest.raises(NotFoundError, match="would point at nothing"):
        storage.verify_version(wrong, wrong, "custom_model", CRED, account_url=azurite)
    container.delete_blob("models/churn/2/MLmodel")
    path = f"{ABFSS}/churn/2"
    with pytest.raises(NotFoundError, match="MLmodel"):
        storage.verify_version(path, path, "mlflow_model", CRED, account_url=azurite)


def test_sync_models_verifies_storage_first(published: tuple[ModelRegistry, Any], azurite: str, tmp_path: Path,
                                            fake_azure: FakeAzure, azure_cloud: dict[str, Any]) -> None:
    reg, container = published
    env = tmp_path / "environments" / "dev"
    env.mkdir(parents=True)
    (env / "environment.yaml").write_text("name: dev\nnamespace: skiff\ningress_domain: example.com\n"
                                          f"registry: https://{ACCOUNT}.blob.core.windows.net/{CONTAINER}/models\n")
    (env / "azureml.yaml").write_text(f"subscription_id: {SUBSCRIPTION}\nresource_group: {RESOURCE_GROUP}\n"
                                      f"workspace: {WORKSPACE}\n")
    cred = FakeCredential()

    def factory(t: workspace.AzureMLTarget) -> Any:
        return workspace.ml_client(t, cred, retry_total=0, **azure_cloud)

    def check(version_path: str, model_path: str, kind: str) -> None:
        storage.verify_version(version_path, model_path, kind, CRED, account_url=azurite)

    out = azml.sync_models(reg, "churn", environments=tmp_path / "environments", client_factory=factory,
                           verify_storage=check)
    assert [(r.version, r.type) for r in out] == [(1, "custom_model"), (2, "mlflow_model")]
    container.delete_blob("models/churn/2/_COMMITTED")
    fake_azure.requests.clear()
    with pytest.raises(NotFoundError, match="churn/2/_COMMITTED"):
        azml.sync_models(reg, "churn", environments=tmp_path / "environments", client_factory=factory,
                         verify_storage=check)
    assert not fake_azure.calls("PUT", r"/versions/2$")
