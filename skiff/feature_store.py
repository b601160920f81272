"""The feature store every part opens the same way: its repo, its location in the lake, its names.

Feast's repo (``feature_repo/feature_store.yaml`` in the project folder) says where Feast keeps its
registry and online store; :func:`open_store` opens it with ``${SKIFF_FEAST_DIR}`` and
``${SKIFF_FEATURE_SOURCE_DIR}`` pointed at this skiff root, and :func:`open_store_from_settings` does so
from the settings alone (what serving and the CLI use). The offline sources live in one place,
``<lake>/features/<dataset>/offline.parquet`` (:func:`feature_sources`), on the lake's file system
with its credentials.

A project that has no repo (a user's own folder, with skiff installed from a package) gets the
embedded default written there on first use — the local engine's SQLite online store and Parquet
offline store, with paths under the skiff root — and a note on stderr, so ``skiff features`` works
anywhere ``skiff run`` does. The repo's other variants (``feature_store.redis.yaml``,
``feature_store.cluster.yaml``) name services only the user can point at, so they are never made up:
a missing one is an error saying which file to write.

The names shared with the features step, training and serving: a dataset's feature service
(``<dataset>_v<hash of what it serves>``, :func:`feature_service_name`) and its event-time column
(:func:`timestamp_field`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skiff.errors import ConfigError
from skiff.lake import Lake
from skiff.storage import Store
from skiff.uri import absolute, azure_blob_url, is_remote, local_path, scheme

if TYPE_CHECKING:
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    from skiff.config import Settings
    from skiff.spec import DatasetSpec

__all__ = [
    "DEFAULT_FEATURE_STORE_YAML",
    "FEATURE_SOURCE_ENV",
    "DEFAULT_FEATURE_SOURCE_DIR",
    "TIMESTAMP_FIELD",
    "ensure_feature_repo",
    "feature_sources",
    "feast_config",
    "open_store",
    "open_store_from_settings",
    "online_features",
    "feature_service_version",
    "feature_service_name",
    "timestamp_field",
]

log = logging.getLogger(__name__)

#: The local engine's Feast config (kept equal to the source tree's feature_repo/feature_store.yaml by a test).
DEFAULT_FEATURE_STORE_YAML = """\
# skiff's Feast repo, local engine (the embedded default): SQLite online store, Parquet offline store.
# skiff sets SKIFF_FEAST_DIR (<root>/feast) and SKIFF_FEATURE_SOURCE_DIR (<lake>/features) when it
# opens the store; with the feast CLI, export them yourself.
project: skiff
provider: local
registry: ${SKIFF_FEAST_DIR}/registry.db
online_store:
  type: sqlite
  path: ${SKIFF_FEAST_DIR}/online.db
offline_store:
  type: file
entity_key_serialization_version: 3
"""
_DEFAULT_NAME = "feature_store.yaml"


def ensure_feature_repo(repo: str | Path, yaml_name: str = _DEFAULT_NAME) -> Path:
    """The path of ``<repo>/<yaml_name>``, writing the default config there first if it is the default
    name and absent. Atomic (temporary file + rename), so two first runs at once cannot leave half a file."""
    repo = Path(repo)
    fs_yaml = repo / yaml_name
    if fs_yaml.is_file():
        return fs_yaml
    if yaml_name != _DEFAULT_NAME:
        raise ConfigError(f"Feast config not found: {fs_yaml}; write it (see feature_repo/README.md in skiff's "
                          f"source) or use the default {_DEFAULT_NAME}", path=str(fs_yaml))
    if fs_yaml.exists():
        raise ConfigError(f"Feast config {fs_yaml} is not a file", path=str(fs_yaml))
    try:
        repo.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=repo, prefix=".feature_store-", suffix=".yaml")
        with os.fdopen(fd, "w") as f:
            f.write(DEFAULT_FEATURE_STORE_YAML)
        os.replace(tmp, fs_yaml)
    except OSError as e:
        raise ConfigError(f"cannot create the Feast repo {repo}: {e.strerror}; create {fs_yaml} or set "
                          "feature_repo in skiff.yaml to a writable folder", path=str(fs_yaml)) from e
    log.warning("created the Feast repo %s with the local default config (%s)", repo, fs_yaml)
    return fs_yaml


#: The lake folder of the offline feature sources (``<lake>/features/<dataset>/offline.parquet``).
_SOURCES_FOLDER = "features"
#: The environment variable the Feast config and the generated definitions read the sources folder from.
FEATURE_SOURCE_ENV = "SKIFF_FEATURE_SOURCE_DIR"
#: Its fallback in the generated definitions (the local engine's default lake).
DEFAULT_FEATURE_SOURCE_DIR = ".skiff/lake/features"
_FEAST_DIR_ENV = "SKIFF_FEAST_DIR"
#: Event-time column added when the spec names none (the run's ingest time).
TIMESTAMP_FIELD = "event_timestamp"


def feature_sources(lake: Lake) -> Store:
    """The folder of the offline feature sources: ``<lake>/features``, same file system and credentials."""
    return lake.store.child(_SOURCES_FOLDER)


def timestamp_field(spec: DatasetSpec) -> str:
    """The event-time column of the spec's features: its ``event_timestamp``, else :data:`TIMESTAMP_FIELD`."""
    return spec.event_timestamp or TIMESTAMP_FIELD


def feature_service_version(spec: DatasetSpec) -> int:
    """The feature service's version: a short stable hash of what it serves.

    A new set of features (or types, or derived expressions) gives a new service name, so a model
    version that records ``<dataset>_v<hash>`` keeps pointing at the features it was trained on.
    """
    desc = [(c, spec.columns[c].type) for c in spec.feature_columns] + [
        (d.name, d.expr, d.type) for d in spec.derived
    ]
    return int(hashlib.sha256(repr(desc).encode()).hexdigest()[:6], 16) % 100_000


def feature_service_name(spec: DatasetSpec) -> str:
    return f"{spec.name}_v{feature_service_version(spec)}"


@contextmanager
def _env(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def feast_config(repo_path: str | Path, feast_dir: str | Path, source_dir: str,
                 yaml_name: str = _DEFAULT_NAME) -> RepoConfig:
    """The Feast config of ``repo_path`` with its ``${SKIFF_*}`` paths pointed at this skiff root.

    ``feast_dir`` holds the registry (and the local engine's SQLite online store): a local folder, made
    absolute and created, or an object-store URI (``s3://bucket/skiff/feast``), passed on as it is —
    Feast picks its registry store by the scheme. ``source_dir`` is ``<lake>/features``
    (:func:`feature_sources`).
    """
    from feast.repo_config import load_repo_config

    repo = Path(repo_path)
    fs_yaml = ensure_feature_repo(repo, yaml_name)
    feast_location = absolute(feast_dir)
    if not is_remote(feast_location):
        local_path(feast_location, "the Feast folder").mkdir(parents=True, exist_ok=True)
    with _env(**{_FEAST_DIR_ENV: feast_location, FEATURE_SOURCE_ENV: source_dir}):
        config = load_repo_config(repo, fs_yaml)
        unresolved = re.findall(r"\$\{(\w+)\}", config.model_dump_json())
        if unresolved:
            raise ConfigError(f"{fs_yaml}: environment variables not set: {sorted(set(unresolved))}")
    _azure_registry(config)
    return config


def _azure_registry(config: RepoConfig) -> None:
    """Feast picks a file registry's store by scheme and knows no abfs://: a registry on ADLS goes to its
    Azure store (``AzureRegistryStore``), which takes the blob endpoint's https URL."""
    registry = config.registry
    if isinstance(registry, str) or registry.registry_store_type or scheme(registry.path) not in ("abfs", "abfss"):
        return
    registry.path = azure_blob_url(registry.path)
    registry.registry_store_type = "AzureRegistryStore"


def open_store(repo_path: str | Path, feast_dir: str | Path, source_dir: str,
               yaml_name: str = _DEFAULT_NAME) -> FeatureStore:
    """Open the Feast store of ``repo_path`` with its ``${SKIFF_*}`` paths pointed at this skiff root
    (:func:`feast_config`). Opening takes seconds (Feast's imports): do it once per process."""
    from feast import FeatureStore

    return FeatureStore(config=feast_config(repo_path, feast_dir, source_dir, yaml_name))


def open_store_from_settings(settings: Settings, lake: Lake | None = None) -> FeatureStore:
    """The project's feature store as the settings name it (repo, Feast folder, config file), its sources
    in ``lake`` (default: the settings' lake)."""
    sources = feature_sources(lake or Lake.from_settings(settings))
    return open_store(settings.feature_repo, settings.feast_dir, sources.uri(), settings.feature_store_yaml)


def online_features(store: FeatureStore, service: str, entity_rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Online feature values for entity rows (``{"customer_id": "..."}``); unknown keys give None."""
    fs = store.get_feature_service(service)
    # Feast types the response as Dict[str, Any]: each value is the column of the rows' values
    values: dict[str, list[Any]] = store.get_online_features(features=fs, entity_rows=entity_rows).to_dict()
    return values
