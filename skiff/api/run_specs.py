"""What an API-submitted pipeline run may name: specs by name, never server paths.

A bearer token must not turn into a file reader on the server. So a run submitted over the API:

- names its dataset spec, never a path: a **dataset name** (the spec is ``<datasets_dir>/<name>.yaml``
  of the server's settings, the name checked against the dataset-name rule, so nothing outside that
  folder can be named) or a **registered version** (``{"model": "churn", "version": 3}``: the spec
  that version was trained on, from its metadata). An inline spec mapping is refused: its sources
  would be server paths again;
- may override the spec's sources only with object-store URIs (``s3://``, ``gs://``, ``abfs://``, …),
  read with the cluster identity's own permissions; local paths, ``file://``, SQL, REST and MQTT
  sources are refused (they would read server files, environment variables or internal endpoints).

A spec that is missing is a 404; one that is not valid YAML, not a mapping or not a valid spec is a
422 :class:`~skiff.errors.SpecError`. Messages name the file, line and column and never quote it
(:mod:`skiff.yamlio`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from skiff.config import Settings
from skiff.errors import NotFoundError
from skiff.identifiers import NAME_RE
from skiff.registry import ModelRegistry
from skiff.spec import DatasetSpec, load_spec, parse_spec, spec_path
from skiff.versions import VersionRef

__all__ = ["RegisteredSpec", "RemoteFileSource", "OBJECT_STORE_PATTERN", "resolve_spec"]

#: object stores the cluster identity reads; never the API server's own disk
OBJECT_STORE_PATTERN = r"^(s3|gs|gcs|abfs|abfss|az)://[A-Za-z0-9][!-~]*$"  # printable ASCII, no space


class RegisteredSpec(BaseModel):
    """The dataset spec a registered model version was trained on."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(pattern=NAME_RE, description="Registered model name.")
    version: VersionRef = Field(default="latest", description="A version number, 'latest' or 'champion'.")


class RemoteFileSource(BaseModel):
    """A file source on an object store (the only source an API run may put in place of the spec's)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["file"] = "file"
    path: str = Field(pattern=OBJECT_STORE_PATTERN, max_length=2048,
                      description="s3://, gs://, gcs://, abfs://, abfss:// or az:// URI (glob or folder).")
    format: Literal["auto", "csv", "json", "jsonl", "parquet"] = "auto"
    delimiter: str | None = Field(default=None, min_length=1, max_length=1)
    encoding: str = Field(default="utf-8", pattern=r"^[A-Za-z0-9_\-]{1,40}$")
    records_path: str | None = Field(default=None, max_length=200)


def _dataset_spec(name: str, settings: Settings) -> DatasetSpec:
    path = spec_path(name, settings.datasets_dir)
    if not path.is_file():
        raise NotFoundError(f"no dataset {name!r} in the server's datasets folder ({settings.datasets_dir}): "
                            f"add {name}.yaml there, or name a registered version", dataset=name)
    return load_spec(path)


def _registered_spec(ref: RegisteredSpec, settings: Settings) -> DatasetSpec:
    mv = ModelRegistry.from_settings(settings).get(ref.model, ref.version)
    raw = (mv.metadata.dataset or {}).get("spec")
    if not isinstance(raw, dict):
        raise NotFoundError(f"model {ref.model!r} version {mv.version} records no dataset spec: name a dataset "
                            "instead", model=ref.model, version=mv.version)
    origin = f"model {ref.model} version {mv.version}"
    return parse_spec(raw, origin=origin)


def resolve_spec(ref: str | RegisteredSpec, settings: Settings) -> DatasetSpec:
    """The parsed spec a run names (a dataset name already matching NAME_RE, or a registered version)."""
    if isinstance(ref, RegisteredSpec):
        return _registered_spec(ref, settings)
    return _dataset_spec(ref, settings)
