"""The Feast repo a project's feature store is opened from: found, or created on first use.

``feature_repo/feature_store.yaml`` in the project folder says where Feast keeps its registry and
online store. A project that has none (a user's own folder, with skiff installed from a package) gets
the embedded default written there on first use — the local engine's SQLite online store and Parquet
offline store, with paths under the skiff root — and a note on stderr, so ``skiff features`` works
anywhere ``skiff run`` does. The repo's other variants (``feature_store.redis.yaml``,
``feature_store.cluster.yaml``) name services only the user can point at, so they are never made up:
a missing one is an error saying which file to write.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from skiff.errors import ConfigError

__all__ = ["DEFAULT_FEATURE_STORE_YAML", "ensure_feature_repo"]

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
