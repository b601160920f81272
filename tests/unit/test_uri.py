"""No URI goes through ``pathlib.Path`` (issue 11, finding 4): skiff.uri's helpers, the Feast registry on an
object store, and a static check over the code that fails on ``Path()`` of a location-named value."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest

from skiff.errors import StorageError
from skiff.uri import absolute, is_remote, is_uri, local_path, scheme
from tests.conftest import REPO

PACKAGES = ("skiff", "components", "pipelines", "serving")


@pytest.mark.parametrize(
    ("location", "expected_scheme", "remote"),
    [
        ("s3://bucket/skiff/feast", "s3", True),
        ("abfs://data@acct.dfs.core.windows.net/skiff", "abfs", True),
        ("ABFSS://data@acct.dfs.core.windows.net", "abfss", True),
        ("gs://b", "gs", True),
        ("file:///tmp/skiff", "file", False),
        ("/tmp/skiff", "", False),
        (".skiff", "", False),
        ("C:\\data\\skiff", "", False),  # a drive letter is no scheme
        ("weird:name/without-slashes", "", False),
    ],
)
def test_scheme_and_remoteness(location, expected_scheme, remote):
    assert scheme(location) == expected_scheme
    assert is_remote(location) is remote
    assert is_uri(location) is bool(expected_scheme)


def test_absolute_keeps_uris_and_anchors_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute("s3://bucket/skiff/feast/") == "s3://bucket/skiff/feast"
    assert absolute("file:///") == "file:///"
    assert absolute("feast") == str(tmp_path / "feast")
    assert absolute(Path("a/../b")) == str(tmp_path / "b")
    assert not (tmp_path / "s3:").exists()


def test_local_path_refuses_a_uri(tmp_path):
    with pytest.raises(StorageError, match=r"the Feast folder must be a local folder here.*s3://bucket/feast"):
        local_path("s3://bucket/feast", "the Feast folder")
    assert local_path(f"file://{tmp_path}/x") == tmp_path / "x"


def test_path_turns_a_uri_into_a_local_folder():
    """Why the rule exists: the bug the Feast registry had."""
    assert str(Path("s3://bucket/feast")) == "s3:/bucket/feast"
    assert not str(Path("s3://bucket/feast").resolve()).startswith("s3://")


def test_the_feast_registry_on_an_object_store_stays_there(tmp_path, monkeypatch):
    """Regression (finding 4): ``Path(feast_dir).resolve()`` made s3://bucket/feast a folder of the cwd."""
    from skiff.feature_store import feast_config

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SKIFF_REDIS", "redis.example:6379,ssl=true")
    config = feast_config(REPO / "feature_repo", "s3://skiff-prod/skiff/feast", "s3://skiff-prod/skiff/lake/features",
                          "feature_store.cluster.yaml")
    registry = config.registry
    assert (registry.path if not isinstance(registry, str) else registry) == "s3://skiff-prod/skiff/feast/registry.db"
    assert config.online_store.connection_string == "redis.example:6379,ssl=true"
    assert list(tmp_path.iterdir()) == []  # no local "s3:" folder appeared


def test_a_local_feast_folder_is_created_and_absolute(tmp_path, monkeypatch):
    from skiff.feature_store import feast_config

    monkeypatch.chdir(tmp_path)
    config = feast_config(REPO / "feature_repo", "root/feast", str(tmp_path / "features"))
    assert (tmp_path / "root" / "feast").is_dir()
    assert config.registry.path == str(tmp_path / "root" / "feast" / "registry.db")
    assert os.path.isabs(config.online_store.path)


# --- the static check ----------------------------------------------------------------------------------

#: What a value holding a location is called in skiff: a Path() over such an expression is a bug unless
#: it is the local branch of a test for a scheme.
LOCATION = re.compile(r"uri|feast_dir|registry|lake|storage|artifacts|\.root\b|\bremote\b", re.IGNORECASE)
GUARD = re.compile(r"://|is_remote|is_uri|scheme\(|is_local")


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _guarded(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Inside the branch of an ``if`` (statement or expression) whose test looks at the scheme."""
    while node in parents:
        parent = parents[node]
        if isinstance(parent, ast.If | ast.IfExp) and node is not parent.test and GUARD.search(ast.unparse(parent.test)):
            return True
        node = parent
    return False


def _is_path_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call) or not node.args:
        return False
    f = node.func
    return (isinstance(f, ast.Name) and f.id in ("Path", "PurePath", "PosixPath")) or (
        isinstance(f, ast.Attribute) and f.attr in ("Path", "PurePath") and ast.unparse(f.value) == "pathlib"
    )


def path_calls_on_locations(source: str) -> list[tuple[int, str]]:
    tree = ast.parse(source)
    parents = _parents(tree)
    found = []
    for node in ast.walk(tree):
        if _is_path_call(node):
            arg = ast.unparse(node.args[0])
            if LOCATION.search(arg) and not _guarded(node, parents):
                found.append((node.lineno, ast.unparse(node)))
    return found


def test_the_static_check_catches_the_bug_and_passes_the_guarded_form():
    assert path_calls_on_locations("Path(feast_dir).resolve()") == [(1, "Path(feast_dir)")]
    assert path_calls_on_locations("x = Path(settings.root) / 'runs'") == [(1, "Path(settings.root)")]
    assert path_calls_on_locations("pathlib.Path(self.registry_uri)")
    assert not path_calls_on_locations("x = uri if '://' in uri else str(Path(uri).resolve())")
    assert not path_calls_on_locations("if is_remote(root_uri):\n    pass\nelse:\n    p = Path(root_uri)")
    assert not path_calls_on_locations("Path(__file__).parent / 'feature_repo'")


def test_no_location_goes_through_path():
    offenders = []
    for package in PACKAGES:
        for file in sorted((REPO / package).rglob("*.py")):
            if file == REPO / "skiff" / "uri.py":
                continue  # the one place that turns a checked local location into a Path
            for line, call in path_calls_on_locations(file.read_text(encoding="utf-8")):
                offenders.append(f"{file.relative_to(REPO)}:{line}: {call}")
    assert not offenders, "a location that may be a URI goes through Path (use skiff.uri.absolute / " \
                          "local_path):\n" + "\n".join(offenders)


def test_azure_blob_url_of_an_abfs_location():
    from skiff.uri import azure_blob_url

    assert azure_blob_url("abfs://skiff@skiffprod.dfs.core.windows.net/skiff/feast/") == \
        "https://skiffprod.blob.core.windows.net/skiff/skiff/feast"
    assert azure_blob_url("abfss://c@acct.dfs.core.windows.net") == "https://acct.blob.core.windows.net/c"
    with pytest.raises(StorageError, match="not an abfs://"):
        azure_blob_url("s3://bucket/feast")


def test_a_feast_registry_on_adls_goes_to_feasts_azure_store(tmp_path, monkeypatch):
    """Feast has no abfs:// registry store: the ADLS Feast folder becomes its Azure store's https URL."""
    from skiff.feature_store import feast_config

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SKIFF_REDIS", "redis.example:6380,ssl=true")
    config = feast_config(REPO / "feature_repo", "abfs://skiff@skiffprod.dfs.core.windows.net/skiff/feast",
                          "abfs://skiff@skiffprod.dfs.core.windows.net/skiff/lake/features",
                          "feature_store.cluster.yaml")
    assert config.registry.registry_store_type == "AzureRegistryStore"
    assert config.registry.path == "https://skiffprod.blob.core.windows.net/skiff/skiff/feast/registry.db"
    assert list(tmp_path.iterdir()) == []
