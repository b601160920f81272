"""GitOps environment files: which model version runs where, edited by ``skiff promote``.

Layout (the source of truth that Argo CD deploys, after ``skiff render env``)::

    infra/environments/<env>/
        environment.yaml      namespace, registry URI, ingress domain, serving defaults, rollout policy
        models/<name>.yaml    the version that should run, an optional canary, overrides, history

Edits go through ruamel.yaml's round-trip mode, so the comments and the key order people wrote stay as
they were. Every change of version appends an entry to the file's own ``history`` list (version,
previous, action, reason, forced, time); a rollback takes the version that ran before the current one
from that list. Nothing here talks to a cluster: Git history is the audit trail, and ``--commit`` makes
one commit per change with a message naming model, version, environment and reason.

Every edit (promote, copy, rollback, the end of a canary) reads the model file, decides, and writes it
back while holding that file's lock (``locks.exclusive_path``: a hidden ``.<name>.lock`` beside it, or
the PostgreSQL advisory lock of that path when :func:`skiff.locks.locks_for` picks database locks), so
the CLI, the API and a rollout controller editing at once never drop each other's history entries.
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import io
import re
import subprocess
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from serving.deploy.logger import InferenceLoggerConfig
from skiff.errors import ConfigError, GateFailed, NotFoundError, SkiffError, UsageError
from skiff.locks import FileLocks, Locks
from skiff.monitoring.retrain import RetrainPolicy
from skiff.registry import ModelRegistry, ModelVersion
from skiff.rollout_policy import RolloutPolicy
from skiff.versions import VersionNumber
from skiff.yamlio import load_user_yaml, read_user_text

__all__ = [
    "Resources",
    "GpuPlacement",
    "ServingDefaults",
    "EnvironmentConfig",
    "Canary",
    "HistoryEntry",
    "ModelDeployment",
    "Environments",
    "PromotionResult",
    "check_promotable",
    "git_commit",
    "commit_message",
    "DEFAULT_ENVIRONMENTS_DIR",
]

DEFAULT_ENVIRONMENTS_DIR = "infra/environments"
ENVIRONMENT_FILE = "environment.yaml"
MODELS_DIR = "models"
_LOCKABLE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")  # a plain file name: no '/', no '..'
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class Resources(BaseModel):
    """Container resources of a predictor. Unset fields fall back to the environment's defaults."""

    model_config = ConfigDict(extra="forbid")

    cpu: str | None = Field(default=None, description="CPU request, e.g. '500m'.")
    memory: str | None = Field(default=None, description="Memory request, e.g. '1Gi'.")
    cpu_limit: str | None = Field(default=None, description="CPU limit.")
    memory_limit: str | None = Field(default=None, description="Memory limit.")
    gpu: int | None = Field(
        default=None, ge=0,
        description="GPUs (nvidia.com/gpu). None: one for tensorflow models, none for sklearn ones.",
    )

    def merged_over(self, base: Resources) -> Resources:
        """These values where set, else the base's."""
        return base.model_copy(update=self.model_dump(exclude_none=True))


class GpuPlacement(BaseModel):
    """Where GPU predictors go: the tainted GPU node pool the Terraform modules create."""

    model_config = ConfigDict(extra="forbid")

    node_selector: dict[str, str] = Field(
        default_factory=lambda: {"skiff.io/node-pool": "gpu"}, description="Node labels of the GPU pool."
    )
    taint_key: str = Field(default="nvidia.com/gpu", description="Key of the GPU nodes' taint.")
    taint_value: str = Field(default="present", description="Value of the GPU nodes' taint.")
    taint_effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"


class ServingDefaults(BaseModel):
    """What every InferenceService of an environment gets unless its model file overrides it."""

    model_config = ConfigDict(extra="forbid")

    min_replicas: int = Field(default=1, ge=0, description="Fewest predictor replicas (0 = scale to zero).")
    max_replicas: int = Field(default=3, ge=1, description="Most predictor replicas.")
    scale_metric: Literal["concurrency", "rps", "cpu", "memory"] = Field(
        default="concurrency", description="Autoscaling metric (Knative KPA: concurrency or rps)."
    )
    scale_target: int = Field(default=8, ge=1, description="Target value of the scale metric per replica.")
    resources: Resources = Field(
        default_factory=lambda: Resources(cpu="500m", memory="1Gi", cpu_limit="1", memory_limit="2Gi"),
        description="Predictor container resources.",
    )
    transformer_resources: Resources = Field(
        default_factory=lambda: Resources(cpu="250m", memory="512Mi", cpu_limit="1", memory_limit="1Gi"),
        description="Feature transformer container resources.",
    )


class EnvironmentConfig(BaseModel):
    """``environment.yaml``: one deployment target (a namespace in a cluster)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Environment name; equals its folder name.")
    namespace: str = Field(description="Kubernetes namespace of the InferenceServices.")
    registry: str | None = Field(
        default=None,
        description="Registry URI the cluster reads model versions from (storageUri prefix, e.g. "
        "s3://bucket/skiff/models). None: the registry of the skiff settings.",
    )
    ingress_domain: str = Field(description="Knative ingress domain; endpoints are <isvc>.<namespace>.<domain>.")
    deployment_mode: Literal["Serverless", "RawDeployment"] = Field(
        default="Serverless",
        description="KServe deployment mode. Canaries (canaryTrafficPercent) need Serverless (Knative).",
    )
    service_account: str = Field(
        default="skiff-serving",
        description="Service account of serving pods. The platform chart helm/skiff creates it "
        "(serviceAccounts.serving.name) with the cloud identity Terraform made; the render only names it.",
    )
    service_account_annotations: dict[str, str] = Field(
        default_factory=dict,
        description="Refused unless empty: the service account and its identity annotations belong to the "
        "platform chart (serviceAccounts.serving.annotations), not to the environment's rendered manifests.",
    )
    feature_server_url: str | None = Field(
        default=None, description="Feast feature server the transformers query (models with a feature service)."
    )
    prometheus_url: str | None = Field(
        default=None, description="Prometheus HTTP API the rollout controller queries in this environment."
    )
    images: dict[str, str] = Field(
        default_factory=dict,
        description="Image overrides by role (predictor, gpu_predictor, transformer), e.g. pinned digests.",
    )
    defaults: ServingDefaults = Field(default_factory=ServingDefaults)
    gpu: GpuPlacement = Field(default_factory=GpuPlacement)
    rollout: RolloutPolicy = Field(default_factory=RolloutPolicy, description="Canary policy of this environment.")
    predict_url: str | None = Field(
        default=None, pattern=r"^https?://[A-Za-z0-9.\-\[\]:]+(/[!-~]*)?$",
        description="Base URL the REST API's predict proxy sends requests to (e.g. a local `skiff serve` on "
        "http://127.0.0.1:8080); None: each model's InferenceService endpoint (endpoint()).")
    # retrain policies (skiff.monitoring.retrain): a winning challenger lands here as a canary
    retrain: dict[str, RetrainPolicy] = Field(
        default_factory=dict, description="Retrain policy per model name (skiff monitor run --act).")
    # the inference log on a cluster (serving.deploy.logger): KServe's logger to skiff's log sink
    inference_log: InferenceLoggerConfig | None = Field(
        default=None, description="KServe's logger on every predictor, sending CloudEvents to the log sink; "
        "None: no logger.")
    node_price_per_hour: float | None = Field(
        default=None, ge=0.0, description="Price of one node per hour, for the cost per 1,000 predictions "
        "(skiff.monitoring.resources).")

    @field_validator("service_account_annotations")
    @classmethod
    def _owned_by_the_chart(cls, v: dict[str, str]) -> dict[str, str]:
        if v:
            raise ValueError("the serving service account belongs to the platform chart helm/skiff: move these "
                             "annotations to its values (serviceAccounts.serving.annotations)")
        return v

    @field_validator("namespace")
    @classmethod
    def _dns(cls, v: str) -> str:
        if not _DNS_LABEL.match(v):
            raise ValueError(f"{v!r} is not a valid namespace (lower-case DNS label)")
        return v

    def endpoint(self, isvc_name: str) -> str:
        return f"http://{isvc_name}.{self.namespace}.{self.ingress_domain}"


class Canary(BaseModel):
    """A new version that gets a share of the traffic next to the stable one."""

    model_config = ConfigDict(extra="forbid")

    version: VersionNumber
    percent: int = Field(default=0, ge=0, le=100, description="Share of requests the canary gets at first.")


class HistoryEntry(BaseModel):
    """One change of what runs, as recorded in the model file."""

    model_config = ConfigDict(extra="forbid")

    version: VersionNumber
    previous: VersionNumber | None = None
    action: Literal["promote", "copy", "rollback", "canary", "canary-promoted", "canary-rolled-back"]
    reason: str = ""
    forced: bool = False
    source: str | None = Field(default=None, description="Environment a copied version came from.")
    at: str


class ModelDeployment(BaseModel):
    """``models/<name>.yaml``: the version of one model that should run in an environment."""

    model_config = ConfigDict(extra="forbid")

    name: str
    version: VersionNumber = Field(description="The stable version.")
    canary: Canary | None = None
    min_replicas: int | None = Field(default=None, ge=0)
    max_replicas: int | None = Field(default=None, ge=1)
    scale_target: int | None = Field(default=None, ge=1)
    resources: Resources | None = None
    history: list[HistoryEntry] = Field(default_factory=list)

    @property
    def served_version(self) -> int:
        """The version the InferenceService spec names: the canary while there is one (KServe's latest
        revision), else the stable version."""
        return self.canary.version if self.canary else self.version

    def rollback_target(self) -> int:
        """The version that ran before the current one.

        The newest history entry that brought the current version in by a promotion (``promote``,
        ``copy`` or ``canary-promoted``; not a rollback) names it as ``previous``; so repeated rollbacks
        walk back through the versions. Canary entries never count: a canary did not replace the stable
        version until it was promoted.
        """
        for entry in reversed(self.history):
            if (entry.version == self.version and entry.action in ("promote", "copy", "canary-promoted")
                    and entry.previous is not None):
                return entry.previous
        raise UsageError(
            f"{self.name}: the history of its model file names no version before {self.version}; "
            "promote an explicit version instead"
        )


class PromotionResult(BaseModel):
    """What ``skiff promote`` changed."""

    model_config = ConfigDict(extra="forbid")

    name: str
    env: str
    path: str
    action: str
    version: int
    previous: int | None
    canary: Canary | None = None
    changed: bool
    forced: bool = False
    reason: str = ""
    commit: str | None = None


def _holding_model_lock(env_arg: str):
    """Run an edit of a model file under the lock of (environment ``env_arg``, model ``name``)."""

    def wrap(method):
        @functools.wraps(method)
        def locked(self: Environments, *args: Any, **kwargs: Any):
            bound = inspect.signature(method).bind(self, *args, **kwargs)
            env, name = bound.arguments[env_arg], bound.arguments["name"]
            folder = self.root / env
            if not (isinstance(name, str) and _LOCKABLE.match(name) and (folder / ENVIRONMENT_FILE).is_file()):
                return method(self, *args, **kwargs)  # it raises the precise error; nothing to lock
            with self.locks.exclusive_path(folder / MODELS_DIR / f".{name}.lock"):
                return method(self, *args, **kwargs)

        return locked

    return wrap


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _yaml() -> YAML:
    y = YAML()  # round-trip: keeps comments, key order and quoting
    y.preserve_quotes = True
    y.indent(mapping=2, sequence=4, offset=2)
    y.width = 110
    return y


def _load_rt(path: Path) -> CommentedMap:
    text = read_user_text(path, "environment file", error=ConfigError)
    # the same rules as every user YAML first (no aliases, one-line errors that never quote the file)
    load_user_yaml(text, "environment file", origin=str(path), error=ConfigError)
    try:
        data = _yaml().load(text)
    except YAMLError as e:  # what ruamel refuses beyond PyYAML: duplicate keys; its message quotes values
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        what = "a key appears twice in one mapping" if "duplicate key" in str(e) else "not valid YAML"
        raise ConfigError(f"{where}: environment file: {what}; fix the file at that position") from None
    if data is None:
        data = CommentedMap()
    if not isinstance(data, CommentedMap):
        raise ConfigError(f"{path}: expected a mapping, got {type(data).__name__}")
    return data


def _validate(cls: type[BaseModel], data: Any, path: Path) -> Any:
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'file'}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"{path}: {problems}") from e


def check_promotable(mv: ModelVersion, *, force: bool, reason: str | None) -> str:
    """Refuse a version whose gate did not pass unless forced with a reason; returns the reason recorded."""
    gate = mv.metadata.gate or {}
    if gate.get("promote") is True:
        return reason or str(gate.get("reason") or "gate passed")
    why = gate.get("reason") or ("no gate decision recorded" if not gate else "gate.promote is not true")
    if not force:
        raise GateFailed(
            f"{mv.name} version {mv.version} did not pass its gate ({why}); "
            "use --force --reason TEXT to deploy it anyway",
            gate=gate,
        )
    if not reason or not reason.strip():
        raise UsageError("--force needs --reason TEXT: the reason is recorded in the model file's history")
    return reason.strip()


class Environments:
    """The environments folder (``infra/environments`` by default)."""

    def __init__(self, root: str | Path = DEFAULT_ENVIRONMENTS_DIR, *, locks: Locks | None = None) -> None:
        self.root = Path(root)
        #: what every edit of a model file holds (``skiff.locks.locks_for(settings)``; file locks by default)
        self.locks: Locks = locks or FileLocks()

    # -- reading -------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / ENVIRONMENT_FILE).is_file())

    def env_dir(self, env: str) -> Path:
        d = self.root / env
        if not (d / ENVIRONMENT_FILE).is_file():
            known = ", ".join(self.names()) or "none"
            raise NotFoundError(f"environment {env!r} not found: no {d / ENVIRONMENT_FILE} (environments: {known})")
        return d

    def environment(self, env: str) -> EnvironmentConfig:
        path = self.env_dir(env) / ENVIRONMENT_FILE
        cfg = _validate(EnvironmentConfig, _load_rt(path), path)
        if cfg.name != env:
            raise ConfigError(f"{path}: name {cfg.name!r} differs from its folder {env!r}")
        return cfg

    def set_retrain_policy(self, env: str, name: str, policy: RetrainPolicy | None) -> EnvironmentConfig:
        """Set (None: remove) the retrain policy of model ``name`` in ``environment.yaml``, keeping comments."""
        path = self.env_dir(env) / ENVIRONMENT_FILE
        with self.locks.exclusive_path(path.with_name(f".{ENVIRONMENT_FILE}.lock")):
            doc = _load_rt(path)
            block = doc.get("retrain")
            if not isinstance(block, CommentedMap):
                block = doc["retrain"] = CommentedMap()
            if policy is None:
                block.pop(name, None)
            else:
                block[name] = CommentedMap(policy.model_dump(exclude_defaults=True))
            if not block:
                doc.pop("retrain", None)
            cfg: EnvironmentConfig = _validate(EnvironmentConfig, _plain(doc), path)
            buf = io.StringIO()
            _yaml().dump(doc, buf)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(buf.getvalue())
            tmp.replace(path)
        return cfg

    def model_path(self, env: str, name: str) -> Path:
        return self.env_dir(env) / MODELS_DIR / f"{name}.yaml"

    def model_names(self, env: str) -> list[str]:
        d = self.env_dir(env) / MODELS_DIR
        return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []

    def deployment(self, env: str, name: str) -> ModelDeployment:
        path = self.model_path(env, name)
        if not path.is_file():
            raise NotFoundError(f"model {name!r} is not deployed in {env!r}: no {path}")
        dep = _validate(ModelDeployment, _load_rt(path), path)
        if dep.name != name:
            raise ConfigError(f"{path}: name {dep.name!r} differs from its file name {name!r}")
        return dep

    def deployments(self, env: str) -> list[ModelDeployment]:
        return [self.deployment(env, n) for n in self.model_names(env)]

    # -- writing -------------------------------------------------------------------------------------
    def _edit(self, env: str, name: str, change: dict[str, Any], entry: HistoryEntry) -> Path:
        """Apply top-level key changes (None deletes) and append a history entry, keeping comments."""
        path = self.model_path(env, name)
        if path.is_file():
            doc = _load_rt(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            doc = CommentedMap()
            doc["name"] = name
            doc.yaml_set_start_comment(
                f"What runs of model {name} in {env}. Edit with `skiff promote`; history is appended.")
        for key, value in change.items():
            if value is None:
                doc.pop(key, None)
            elif isinstance(value, dict) and isinstance(doc.get(key), CommentedMap):
                node = doc[key]
                for k in [k for k in node if k not in value]:
                    del node[k]
                node.update(value)
            else:
                doc[key] = CommentedMap(value) if isinstance(value, dict) else value
        if "history" not in doc or not isinstance(doc["history"], CommentedSeq):
            doc["history"] = CommentedSeq()
        else:  # history stays last so new entries do not land in the middle of the file
            doc.move_to_end("history")
        doc["history"].append(CommentedMap(entry.model_dump(exclude_none=True, exclude_defaults=False)))
        # the result must still be a valid model file before anything is written
        _validate(ModelDeployment, _plain(doc), path)
        buf = io.StringIO()
        _yaml().dump(doc, buf)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(buf.getvalue())
        tmp.replace(path)
        return path

    @_holding_model_lock("env")
    def promote(
        self,
        registry: ModelRegistry,
        env: str,
        name: str,
        version: int | str,
        *,
        canary_percent: int | None = None,
        force: bool = False,
        reason: str | None = None,
    ) -> PromotionResult:
        """Make ``version`` the stable version (or, with ``canary_percent``, the canary) of ``name``."""
        cfg = self.environment(env)
        mv = registry.get(name, version)
        reason = check_promotable(mv, force=force, reason=reason)
        path = self.model_path(env, name)
        current = self.deployment(env, name) if path.is_file() else None
        if canary_percent is not None:
            if cfg.deployment_mode != "Serverless":
                raise UsageError(
                    f"environment {env!r} uses deployment mode {cfg.deployment_mode}; KServe canaries need "
                    "Serverless (Knative) mode"
                )
            if current is None:
                raise UsageError(f"{name} runs nothing in {env!r} yet: promote a stable version first")
            if mv.version == current.version:
                raise UsageError(f"version {mv.version} is already the stable version of {name} in {env!r}")
            canary = Canary(version=mv.version, percent=canary_percent)
            if current.canary == canary:
                return PromotionResult(name=name, env=env, path=str(path), action="canary", version=mv.version,
                                       previous=current.version, canary=canary, changed=False, reason=reason)
            entry = HistoryEntry(version=mv.version, previous=current.version, action="canary", reason=reason,
                                 forced=force, at=_now())
            self._edit(env, name, {"canary": canary.model_dump()}, entry)
            return PromotionResult(name=name, env=env, path=str(path), action="canary", version=mv.version,
                                   previous=current.version, canary=canary, changed=True, forced=force,
                                   reason=reason)
        return self._set_version(env, name, mv.version, current, "promote", reason, force)

    def _set_version(self, env: str, name: str, version: int, current: ModelDeployment | None, action: str,
                     reason: str, force: bool, source: str | None = None) -> PromotionResult:
        path = self.model_path(env, name)
        previous = current.version if current else None
        if current is not None and current.version == version and current.canary is None:
            return PromotionResult(name=name, env=env, path=str(path), action=action, version=version,
                                   previous=previous, changed=False, reason=reason)
        entry = HistoryEntry(version=version, previous=previous, action=action, reason=reason, forced=force,
                             source=source, at=_now())
        self._edit(env, name, {"version": version, "canary": None}, entry)
        return PromotionResult(name=name, env=env, path=str(path), action=action, version=version,
                               previous=previous, changed=True, forced=force, reason=reason)

    @_holding_model_lock("target_env")
    def copy(self, registry: ModelRegistry, name: str, source_env: str, target_env: str, *,
             force: bool = False, reason: str | None = None) -> PromotionResult:
        """Run in ``target_env`` the stable version that runs in ``source_env`` (gate checked again)."""
        self.environment(target_env)
        src = self.deployment(source_env, name)
        mv = registry.get(name, src.version)
        reason = check_promotable(mv, force=force, reason=reason or f"copied from {source_env}")
        path = self.model_path(target_env, name)
        current = self.deployment(target_env, name) if path.is_file() else None
        return self._set_version(target_env, name, mv.version, current, "copy", reason, force, source=source_env)

    @_holding_model_lock("env")
    def rollback(self, registry: ModelRegistry, env: str, name: str, *, reason: str | None = None) -> PromotionResult:
        """Run the version that ran before the current one (from the file's history); drops any canary."""
        current = self.deployment(env, name)
        target = current.rollback_target()
        registry.get(name, target)  # it must still exist in the registry
        return self._set_version(env, name, target, current, "rollback",
                                 reason or f"rollback from version {current.version}", False)

    def deployment_to_render(self, env: str, name: str, *, version: VersionNumber | None = None,
                             canary_version: VersionNumber | None = None,
                             canary_percent: int | None = None) -> ModelDeployment:
        """The deployment ``skiff render isvc`` shows: the model file's, with the version or canary asked for
        over it (a version alone drops the file's canary; a canary without a percent gets 10 %)."""
        if self.model_path(env, name).is_file():
            dep = self.deployment(env, name)
        elif version is not None:
            dep = ModelDeployment(name=name, version=version)
        else:
            raise UsageError(f"{name} has no model file in {env!r}: give --version")
        if version is not None:
            dep = dep.model_copy(update={"version": version, "canary": None})
        if canary_version is not None:
            return dep.model_copy(update={"canary": Canary(version=canary_version, percent=canary_percent or 10)})
        if canary_percent is not None:
            if dep.canary is None:
                raise UsageError("--canary-percent needs a canary: give --canary-version")
            return dep.model_copy(update={"canary": Canary(version=dep.canary.version, percent=canary_percent)})
        return dep

    def record_rollout_outcome(self, env: str, name: str, *, canary_version: str, promoted: bool,
                               reason: str) -> PromotionResult | None:
        """Write a finished rollout into the model file when that file names this canary; ``None`` when it
        does not (a rollout of a version Git never recorded leaves Git alone)."""
        if not self.model_path(env, name).is_file():
            return None
        current = self.deployment(env, name)
        if current.canary is None or str(current.canary.version) != str(canary_version):
            return None
        return self.finish_canary(env, name, promoted=promoted, reason=reason)

    @_holding_model_lock("env")
    def finish_canary(self, env: str, name: str, *, promoted: bool, reason: str) -> PromotionResult:
        """Record the outcome of a canary rollout: the canary becomes stable, or it is dropped."""
        current = self.deployment(env, name)
        if current.canary is None:
            raise UsageError(f"{name} has no canary in {env!r}")
        path = self.model_path(env, name)
        if promoted:
            entry = HistoryEntry(version=current.canary.version, previous=current.version,
                                 action="canary-promoted", reason=reason, at=_now())
            self._edit(env, name, {"version": current.canary.version, "canary": None}, entry)
            return PromotionResult(name=name, env=env, path=str(path), action="canary-promoted",
                                   version=current.canary.version, previous=current.version, changed=True,
                                   reason=reason)
        entry = HistoryEntry(version=current.version, previous=current.canary.version,
                             action="canary-rolled-back", reason=reason, at=_now())
        self._edit(env, name, {"canary": None}, entry)
        return PromotionResult(name=name, env=env, path=str(path), action="canary-rolled-back",
                               version=current.version, previous=current.canary.version, changed=True,
                               reason=reason)


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def git_commit(path: Path, message: str) -> str:
    """Commit one file in the Git repository that holds it; returns the new commit id."""
    path = Path(path).resolve()
    cwd = path.parent

    def git(*args: str) -> str:
        try:
            out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
        except OSError as e:
            raise SkiffError(f"cannot run git: {e}") from e
        if out.returncode != 0:
            raise SkiffError(f"git {args[0]} failed for {path}: {out.stderr.strip() or out.stdout.strip()}")
        return out.stdout.strip()

    git("add", "--", str(path))
    git("commit", "-m", message, "--", str(path))
    return git("rev-parse", "HEAD")


def commit_message(result: PromotionResult) -> str:
    what = (f"canary {result.version} at {result.canary.percent}%" if result.canary
            else f"version {result.version}")
    head = f"{result.env}: {result.name} {what} ({result.action})"
    body = [f"Previous version: {result.previous}", f"Reason: {result.reason or 'n/a'}"]
    if result.forced:
        body.append("Forced past a failed gate.")
    return head + "\n\n" + "\n".join(body) + "\n"
