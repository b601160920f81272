"""Typed settings for skiff.

Read, in increasing priority, from defaults, ``skiff.yaml`` in the working folder (or the file named by
``SKIFF_CONFIG``), and ``SKIFF_*`` environment variables (``SKIFF_ROOT=s3://bucket/skiff``). Nested
fields use ``__`` in variables (``SKIFF_STORAGE_OPTIONS__ENDPOINT_URL``). Build settings inside entry
points with :func:`load_settings`, never at import time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from skiff import layout
from skiff.cluster import NAMESPACE, PIPELINE_SERVICE_ACCOUNT
from skiff.errors import ConfigError
from skiff.uri import is_remote, local_path
from skiff.yamlio import load_user_yaml

__all__ = ["Settings", "load_settings", "project_path", "CONFIG_FILE"]

CONFIG_FILE = "skiff.yaml"


class _YamlSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self._data: dict[str, Any] = {}
        if path is not None and path.is_file():
            loaded = load_user_yaml(path, "settings file", error=ConfigError) or {}
            if not isinstance(loaded, dict):
                raise ConfigError(f"{path}: expected a mapping of settings, got {type(loaded).__name__}")
            self._data = loaded

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover - required by the ABC
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


class Settings(BaseSettings):
    """Where skiff keeps its data and which engines it uses."""

    model_config = SettingsConfigDict(env_prefix="SKIFF_", env_nested_delimiter="__", extra="forbid")

    root: str = Field(
        default=".skiff",
        description="Root URI for the lake, artifacts and model registry: a local folder, s3:// or abfs://.",
    )
    lake: str | None = Field(default=None, description="Lake URI; defaults to <root>/lake.")
    artifacts: str | None = Field(default=None, description="Artifact URI; defaults to <root>/artifacts.")
    registry: str | None = Field(default=None, description="Model registry URI; defaults to <root>/models.")
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec options for remote roots (e.g. endpoint_url). Credentials come from the "
        "cloud SDK's own chain (IRSA, workload identity, env), never from this file.",
    )
    datasets_dir: str = Field(default="datasets", description="Folder of dataset specs (<name>.yaml).")
    feature_repo: str = Field(default="feature_repo", description="Path of the Feast repo.")
    feature_store_yaml: str = Field(
        default="feature_store.yaml",
        description="Feast config inside the repo: feature_store.yaml (SQLite online store), "
        "feature_store.redis.yaml, or feature_store.cluster.yaml.",
    )
    tfdv_python: str | None = Field(
        default=None,
        description="Interpreter of the TFDV environment; defaults to .venv-tfdv/bin/python next to the "
        "project, built by `make setup`.",
    )
    database_url: str | None = Field(
        default=None,
        description="Control-plane metadata database (SQLAlchemy URL); defaults to SQLite under <root>.",
    )
    kfp_host: str | None = Field(default=None, description="Kubeflow Pipelines endpoint for cluster runs.")
    kfp_namespace: str = Field(
        default=NAMESPACE,
        description="Namespace cluster runs execute in: the Kubeflow Pipelines profile namespace (multi-user "
        "mode), where the pipeline service account, the settings ConfigMap and the Secrets live; empty: KFP's "
        "own namespace (standalone mode).",
    )
    kfp_service_account: str = Field(
        default=PIPELINE_SERVICE_ACCOUNT,
        description="Kubernetes service account every step of a cluster run runs as: the one identity the "
        "cloud role of pipelines trusts.",
    )
    max_threads: int = Field(
        default=1, ge=1, description="Thread cap for numeric libraries in steps and servers (OpenMP, BLAS)."
    )
    log_level: str = Field(default="INFO", description="Python logging level.")
    # experiment tracking (skiff.tracking): where pipeline runs are logged in MLflow
    tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI pipeline runs are logged to (an MLflow server: http(s)://...; "
        "credentials from MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN, never here). Unset: "
        "sqlite:///<root>/mlflow.db for a local root, no tracking for an object-store root; 'off': none.",
    )
    tracking_experiment: str | None = Field(
        default=None, description="MLflow experiment of pipeline runs; unset: the model's name (one per model)."
    )
    serve_max_body_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024,
        description="Largest request body the model server reads (larger ones get 413); above the REST API's "
        "cap, since inference batches are larger than control-plane requests.",
    )
    # image models: the model server's micro-batcher (serving.runtime.images.MicroBatcher)
    serve_image_batch_max: int = Field(
        default=32, ge=1,
        description="Most images one model call of an image classifier takes from concurrent requests; 1 turns "
        "micro-batching off (every request its own model call).",
    )
    serve_image_batch_wait_ms: float = Field(
        default=5.0, ge=0, le=1000,
        description="Longest a request to an image classifier waits for others to share its model call.",
    )
    # the inference log (skiff.inference_log): what the model server and the log sink record, and the
    # node price resource use is costed with (skiff.monitoring.resources)
    inference_log_sample_rate: float = Field(
        default=0.0, ge=0.0, le=1.0,
        description="Share of requests the model server (or the log sink) records in the inference log; 0 (the "
        "default) records none: logging writes request data, so it is turned on per deployment.",
    )
    inference_log_sample_rates: dict[str, float] = Field(
        default_factory=dict,
        description="Per registered model: its sampling rate, over inference_log_sample_rate.",
    )
    inference_log_queue_size: int = Field(
        default=10_000, ge=1,
        description="Requests waiting to be written before further ones are dropped (and counted).",
    )
    node_price_per_hour: float | None = Field(
        default=None, ge=0.0,
        description="Price of one node per hour (any currency), for the cost per 1,000 predictions; an "
        "environment file's own price wins on a cluster.",
    )

    @field_validator("inference_log_sample_rates")
    @classmethod
    def _rates(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {m: r for m, r in v.items() if not 0.0 <= r <= 1.0}
        if bad:
            raise ValueError(f"sampling rates must be between 0 and 1: {bad}")
        return v

    @field_validator("root", "lake", "artifacts", "registry")
    @classmethod
    def _strip_slash(cls, v: str | None) -> str | None:
        return v.rstrip("/") if isinstance(v, str) and v not in ("/",) else v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = Path(os.environ.get("SKIFF_CONFIG", CONFIG_FILE))
        return (init_settings, env_settings, _YamlSource(settings_cls, path))

    @property
    def lake_uri(self) -> str:
        return self.lake or f"{self.root}/{layout.LAKE}"

    @property
    def artifacts_uri(self) -> str:
        return self.artifacts or f"{self.root}/{layout.ARTIFACTS}"

    @property
    def registry_uri(self) -> str:
        return self.registry or f"{self.root}/{layout.MODELS}"

    @property
    def feast_dir(self) -> str:
        """Where the Feast registry (and the local engine's SQLite online store) live: ``<root>/feast``."""
        return f"{self.root}/{layout.FEAST}"

    @property
    def metadata_url(self) -> str:
        if self.database_url:
            return self.database_url
        if is_remote(self.root):
            raise ConfigError("database_url must be set when root is remote (e.g. a PostgreSQL URL)")
        return f"sqlite:///{local_path(self.root, 'root') / 'skiff.db'}"


def project_path(path: str | Path) -> Path:
    """A project file (feature_repo/, examples/): as given when it exists from the working folder,
    else the copy in the source tree skiff runs from."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p.resolve()
    fallback = Path(__file__).resolve().parents[1] / p
    return fallback if fallback.exists() else p.resolve()


def load_settings(**overrides: Any) -> Settings:
    """Build settings from skiff.yaml, SKIFF_* variables and explicit overrides (highest priority)."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'settings'}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"invalid settings: {problems}") from e
