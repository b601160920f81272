"""skiff model versions as Azure ML models: created on registration, tagged on promotion, back-filled.

A version becomes ``azure.ai.ml.entities.Model(name=<skiff name>, version=<skiff version>)`` of type
``mlflow_model`` when the version holds an MLflow export (a folder with an ``MLmodel`` file; the model
path is that folder) and ``custom_model`` otherwise (the path is the version folder). The path is the
version's ADLS Gen2 location, ``abfss://<container>@<account>.dfs.core.windows.net/<path>``: Azure ML
reads the files where skiff wrote them; nothing is copied.

Tags (strings, as Azure ML keeps them): ``skiff.version_id`` (``<name>/<version>``), ``skiff.uri``,
``metric.<name>`` per held-out metric, ``data_fingerprint``, ``gate.promote``/``gate.metric``/
``gate.reason``, and ``skiff.env.<env>`` (when it was promoted there) per environment the version ran in;
the model's ``stage`` is the environment it was last promoted to.

The target is a workspace, or an Azure ML registry (``registry_name`` in the environment's ``azureml.yaml``),
which shares the models with every workspace that uses it: the same entity, created through the
registry's ``MLClient`` (Azure ML's registry discovery finds its region and management front end).

Registration never fails because Azure ML is unreachable (or the SDK is missing): the sync is recorded as
pending under the model's registry folder (``<name>/_azureml/pending/<env>/<version>.json``) and
``skiff cloud azure sync-models NAME`` completes it.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from skiff.cloud.azure.workspace import (
    AzureMLTarget,
    ClientFactory,
    environments_dir,
    ml_client,
    target,
    targets,
)
from skiff.errors import ConfigError, NotFoundError, SkiffError, SourceError, UsageError
from skiff.redact import redact_text
from skiff.registry import ModelRegistry, ModelVersion

if TYPE_CHECKING:
    from azure.ai.ml import MLClient
    from azure.ai.ml.entities import Model
    from azure.core.credentials import TokenCredential

__all__ = ["SyncResult", "StorageCheck", "abfss_path", "model_entity", "model_path", "sync_version", "on_register", "on_promote",
           "sync_models", "pending", "ENV_TAG"]

log = logging.getLogger(__name__)

ENV_TAG = "skiff.env."
_PENDING = ("_azureml", "pending")
_ABFS = re.compile(r"^(abfss?|az)://(?P<container>[^@/]+)(@(?P<account>[a-z0-9]+)\.dfs\.(?P<suffix>core\.[^/]+))?"
                   r"(?P<path>/.*)?$")
_BLOB = re.compile(r"^https://(?P<account>[a-z0-9]+)\.blob\.(?P<suffix>core\.[^/]+)/(?P<container>[^/]+)(?P<path>/.*)?$")
_TAG_MAX = 256


class SyncResult(BaseModel):
    """One version in one environment's workspace (or registry): synced, or pending with the reason."""

    model_config = ConfigDict(extra="forbid")

    env: str
    workspace: str | None
    registry_name: str | None = None
    name: str
    version: int
    status: str  # "synced" | "pending"
    type: str | None = None
    path: str | None = None
    stage: str | None = None
    reason: str | None = None


def abfss_path(uri: str, storage_options: Mapping[str, Any] | None = None) -> str:
    """The ``abfss://<container>@<account>.dfs.<suffix>/<path>`` form of an Azure storage location.

    Takes ``abfs[s]://<container>@<account>.dfs.core.windows.net/...``; ``abfs://<container>/...`` and
    ``az://<container>/...`` (adlfs's short forms, the account from ``storage_options['account_name']``);
    and ``https://<account>.blob.core.windows.net/<container>/...`` (KServe's form, the environments'
    registry). Anything else (a local folder, ``s3://``) is a :class:`UsageError`: Azure ML reads ADLS."""
    m = _BLOB.match(uri)
    if m:
        path = (m.group("path") or "").rstrip("/")
        return f"abfss://{m.group('container')}@{m.group('account')}.dfs.{m.group('suffix')}{path}"
    m = _ABFS.match(uri)
    if not m:
        raise UsageError(f"Azure ML models point at ADLS Gen2: {uri!r} is not an abfs:// or blob https:// location "
                         "(set the registry in the environment's azureml.yaml, or skiff's root to the Terraform "
                         "output skiff_root)")
    account = m.group("account") or (storage_options or {}).get("account_name")
    if not account:
        raise UsageError(f"{uri!r} names no storage account: use abfs://<container>@<account>.dfs.core.windows.net/"
                         "... or set storage_options.account_name")
    suffix = m.group("suffix") or "core.windows.net"
    path = (m.group("path") or "").rstrip("/")
    return f"abfss://{m.group('container')}@{account}.dfs.{suffix}{path}"


def _mlflow_dir(mv: ModelVersion) -> str | None:
    """The version's MLflow export folder (relative), when one of its files is an ``MLmodel``."""
    for f in sorted(mv.metadata.files):
        p = Path(f)
        if p.name == "MLmodel":
            return p.parent.as_posix() if p.parent.as_posix() != "." else ""
    return None


def model_path(mv: ModelVersion, registry: str | None = None,
               storage_options: Mapping[str, Any] | None = None) -> tuple[str, str]:
    """``(type, path)`` of a version's Azure ML model: ``mlflow_model`` at its MLflow folder, else
    ``custom_model`` at the version folder; under ``registry`` (where Azure finds the registry) when
    given, else at the version's own URI."""
    base = (f"{abfss_path(registry)}/{mv.name}/{mv.version}" if registry
            else abfss_path(mv.uri, storage_options))
    mlflow = _mlflow_dir(mv)
    if mlflow is None:
        return "custom_model", base
    return "mlflow_model", f"{base}/{mlflow}" if mlflow else base


def _tag(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value) if isinstance(value, float) else str(value)
    return text if len(text) <= _TAG_MAX else text[: _TAG_MAX - 1] + "…"


def version_tags(mv: ModelVersion) -> dict[str, str]:
    """The tags skiff owns on a version's Azure ML model (the environment tags aside)."""
    meta = mv.metadata
    tags = {"skiff.version_id": f"{mv.name}/{mv.version}", "skiff.uri": _tag(mv.uri)}
    tags.update({f"metric.{k}": _tag(float(v)) for k, v in sorted(meta.metrics.items())})
    if meta.data_fingerprint:
        tags["data_fingerprint"] = meta.data_fingerprint
    gate = meta.gate
    if gate:
        if "promote" in gate:
            tags["gate.promote"] = "true" if gate["promote"] else "false"
        for key in ("metric", "reason"):
            if gate.get(key) is not None:
                tags[f"gate.{key}"] = _tag(gate[key])
    return tags


def model_entity(mv: ModelVersion, *, registry: str | None = None,
                 storage_options: Mapping[str, Any] | None = None, environments: Mapping[str, str] | None = None, stage: str | None = None) -> Model:
    """The ``azure.ai.ml.entities.Model`` of a skiff version; ``environments`` maps an environment to when
    the version was promoted there (``skiff.env.<env>`` tags)."""
    from azure.ai.ml.entities import Model

    kind, path = model_path(mv, registry, storage_options)
    meta = mv.metadata
    tags = version_tags(mv)
    tags.update({f"{ENV_TAG}{env}": at for env, at in sorted((environments or {}).items())})
    properties = {k: v for k, v in {
        "skiff.flavor": meta.flavor, "skiff.estimator": meta.estimator, "skiff.problem_type": meta.problem_type,
        "skiff.created_at": meta.created_at, "skiff.pipeline_run_id": meta.pipeline_run_id,
        "skiff.code_version": meta.code_version.get("skiff"),
    }.items() if v}
    what = ", ".join(x for x in (meta.estimator, meta.problem_type) if x)
    return Model(name=mv.name, version=str(mv.version), type=kind, path=path, tags=tags, properties=properties,
                 stage=stage, description=f"skiff model {mv.name} version {mv.version}" + (f" ({what})" if what else ""))


def _existing(client: MLClient, name: str, version: int) -> Model | None:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        found: Model = client.models.get(name, str(version))
        return found
    except ResourceNotFoundError:
        return None


def sync_version(client: MLClient, mv: ModelVersion, *, registry: str | None = None,
                 storage_options: Mapping[str, Any] | None = None, promoted: Mapping[str, str] | None = None) -> Model:
    """Create or update one version's Azure ML model, keeping the environment tags it already has;
    ``promoted`` adds environments (env -> when) and makes the latest of them the stage."""
    existing = _existing(client, mv.name, mv.version)
    envs = {k[len(ENV_TAG):]: v for k, v in ((existing.tags or {}) if existing else {}).items()
            if k.startswith(ENV_TAG)}
    envs.update(promoted or {})
    stage = max(promoted.items(), key=lambda kv: kv[1])[0] if promoted else (existing.stage if existing else None)
    entity = model_entity(mv, registry=registry, storage_options=storage_options, environments=envs, stage=stage)
    created: Model = client.models.create_or_update(entity)
    return created


# -- pending syncs -------------------------------------------------------------------------------------
def _pending_parts(name: str, env: str, version: int) -> tuple[str, ...]:
    return (name, *_PENDING, env, f"{version}.json")


def _record_pending(registry: ModelRegistry, t: AzureMLTarget, name: str, version: int, reason: str,
                    promoted_at: str | None) -> None:
    parts = _pending_parts(name, t.env, version)
    record: dict[str, Any] = registry.store.read_json(*parts) if registry.store.exists(*parts) else {}
    record.update({"env": t.env, "workspace": t.workspace, "registry_name": t.registry_name, "name": name,
                   "version": version,
                   "reason": reason, "at": _now()})
    if promoted_at:
        record["promoted_at"] = promoted_at
    registry.store.write_json(record, *parts)


def pending(registry: ModelRegistry, name: str) -> list[dict[str, Any]]:
    """The syncs of ``name`` that still wait for Azure ML, oldest environment first."""
    out: list[dict[str, Any]] = []
    base = (name, *_PENDING)
    if not registry.store.exists(*base):
        return out
    for env in sorted(registry.store.listdir(*base)):
        for f in sorted(registry.store.listdir(*base, env)):
            if f.endswith(".json"):
                out.append(registry.store.read_json(*base, env, f))
    return out


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return redact_text(f"{type(e).__name__}: {text}")[:500]


def _options(registry: ModelRegistry) -> dict[str, Any]:
    """The storage account of a registry on ADLS (adlfs keeps it on its file system)."""
    account = getattr(registry.store.fs, "account_name", None)
    return {"account_name": account} if isinstance(account, str) else {}


#: Retries of a registration's or promotion's sync: one, so an unreachable workspace delays neither by more
#: than a second or two (the pending record and sync-models, with the SDK's default retries, do the rest).
_HOOK_RETRIES = 1


def _factory(client_factory: ClientFactory | None, cred: TokenCredential | None, *,
             hook: bool = False) -> ClientFactory:
    if client_factory is not None:
        return client_factory
    if hook:
        return lambda t: ml_client(t, cred, retry_total=_HOOK_RETRIES)
    return lambda t: ml_client(t, cred)


def _sync_or_pend(registry: ModelRegistry, t: AzureMLTarget, mv: ModelVersion, factory: ClientFactory,
                  promoted_at: str | None) -> SyncResult:
    promoted = {t.env: promoted_at} if promoted_at else None
    try:
        model = sync_version(factory(t), mv, registry=t.registry, storage_options=_options(registry),
                             promoted=promoted)
    except UsageError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure to reach Azure ML leaves a pending sync, never a failure
        reason = _reason(e)
        log.warning("Azure ML %s (environment %s) not updated for %s version %s: %s; recorded as "
                    "pending: run `skiff cloud azure sync-models %s`", t.label, t.env, mv.name, mv.version,
                    reason, mv.name)
        _record_pending(registry, t, mv.name, mv.version, reason, promoted_at)
        return SyncResult(env=t.env, workspace=t.workspace, registry_name=t.registry_name, name=mv.name,
                          version=mv.version, status="pending",
                          reason=reason)
    parts = _pending_parts(mv.name, t.env, mv.version)
    if registry.store.exists(*parts):
        registry.store.delete(*parts)
    return SyncResult(env=t.env, workspace=t.workspace, registry_name=t.registry_name, name=mv.name,
                      version=mv.version, status="synced",
                      type=model.type, path=str(model.path), stage=model.stage)


def _distinct(ts: list[AzureMLTarget]) -> list[AzureMLTarget]:
    seen: set[tuple[str, ...]] = set()
    out = []
    for t in ts:
        if t.workspace_key not in seen:
            seen.add(t.workspace_key)
            out.append(t)
    return out


def on_register(registry: ModelRegistry, mv: ModelVersion, *, environments: str | Path | None = None,
                client_factory: ClientFactory | None = None,
                credential: TokenCredential | None = None) -> list[SyncResult]:
    """The register step's hook: the new version in the workspace (or registry) of every environment that
    opted in with ``on_register: true`` (once per workspace or registry). Never raises for Azure: a failure is a warning and a pending
    sync; nothing happens (and no Azure SDK is imported) when no environment opted in."""
    try:
        ts = _distinct([t for t in targets(environments_dir(environments)) if t.on_register])
        if not ts:
            return []
        factory = _factory(client_factory, credential, hook=True)
        return [_sync_or_pend(registry, t, mv, factory, None) for t in ts]
    except SkiffError as e:  # a bad azureml.yaml or a registry not on ADLS: registration still stands
        log.warning("model %s version %s not shown in Azure ML: %s", mv.name, mv.version, e.message)
        return []


def on_promote(registry: ModelRegistry, env: str, name: str, version: int, *,
               environments: str | Path | None = None, client_factory: ClientFactory | None = None,
               credential: TokenCredential | None = None) -> SyncResult | None:
    """The promote command's hook: the version's Azure ML model gets ``skiff.env.<env>`` and the stage
    ``env`` when ``env`` opted in (None otherwise). Never raises for Azure (a pending sync instead)."""
    try:
        t = target(environments_dir(environments), env)
        if t is None:
            return None
        mv = registry.get(name, version)
        return _sync_or_pend(registry, t, mv, _factory(client_factory, credential, hook=True), _now())
    except SkiffError as e:
        log.warning("promotion of %s version %s in %s not shown in Azure ML: %s", name, version, env, e.message)
        return None


#: Checks that a version's files are where its Azure ML model points: (version path, model path, type).
StorageCheck = Callable[[str, str, str], None]


def sync_models(registry: ModelRegistry, name: str, *, environments: str | Path | None = None,
                env: str | None = None, client_factory: ClientFactory | None = None,
                credential: TokenCredential | None = None,
                verify_storage: StorageCheck | None = None) -> list[SyncResult]:
    """Back-fill: every version of ``name`` into the workspace (or registry) of each environment that opted
    in (or of ``env`` only), completing the pending syncs (their promotions included). A
    :class:`SourceError` when a workspace or registry could not be reached; what was synced before that stays synced. ``verify_storage``
    (:func:`skiff.cloud.azure.storage.verify_version`) checks each version's files first."""
    root = environments_dir(environments)
    if env is not None:
        one = target(root, env)
        if one is None:
            raise UsageError(f"environment {env!r} has not opted in to Azure ML: no {root / env / 'azureml.yaml'}")
        ts = [one]
    else:
        ts = targets(root)
        if not ts:
            raise UsageError(f"no environment under {root} has opted in to Azure ML (an azureml.yaml next to its "
                             "environment.yaml)")
    versions = registry.versions(name)
    if not versions:
        raise NotFoundError(f"model {name!r} has no versions in {registry.store.uri()}")
    waiting = {(p["env"], int(p["version"])): p for p in pending(registry, name)}
    factory = _factory(client_factory, credential)
    results: list[SyncResult] = []
    for t in ts:
        try:
            client = factory(t)  # a registry's client asks registry discovery first
        except (UsageError, ConfigError):
            raise
        except Exception as e:
            raise SourceError(f"Azure ML {t.label} (environment {t.env}) could not be reached: {_reason(e)}") from e
        for mv in versions:
            promoted_at = waiting.get((t.env, mv.version), {}).get("promoted_at")
            if verify_storage is not None:
                kind, path = model_path(mv, t.registry, _options(registry))
                _, version_path = model_path(mv.model_copy(update={"metadata": mv.metadata.model_copy(
                    update={"files": []})}), t.registry, _options(registry))
                verify_storage(version_path, path, kind)
            try:
                model = sync_version(client, mv, registry=t.registry, storage_options=_options(registry),
                                     promoted={t.env: promoted_at} if promoted_at else None)
            except (UsageError, ConfigError):  # a bad registry location, no Azure identity
                raise
            except Exception as e:
                raise SourceError(f"Azure ML {t.label} (environment {t.env}) did not take {name} "
                                  f"version {mv.version}: {_reason(e)}") from e
            parts = _pending_parts(name, t.env, mv.version)
            if registry.store.exists(*parts):
                registry.store.delete(*parts)
            results.append(SyncResult(env=t.env, workspace=t.workspace, registry_name=t.registry_name, name=name,
                                      version=mv.version,
                                      status="synced", type=model.type, path=str(model.path), stage=model.stage))
    return results
