"""The model registry: immutable, numbered versions in the artifact store.

Layout (under the registry URI, ``<root>/models`` by default)::

    <name>/<version>/            version = 1, 2, 3 ... ; never rewritten once published
        <model file>             the model, in its flavor's file (:data:`FLAVORS`): model.joblib
                                 (sklearn, recommender: pickled by the registry), model.keras
                                 (tensorflow), model.onnx (onnx); ``metadata.model_file`` names it
        metadata.json            metrics, CV table, data fingerprint, spec, feature service, schema,
                                 statistics, pipeline run, code version, created at
        MODEL_CARD.md            the same, for people
        <extra files>            reports, schema.pbtxt, stats.pb, model.onnx ...
        _COMMITTED
    <name>/_champion.json        the champion version and the history of changes

A version is published with :meth:`Store.atomic_dir`: it appears whole or not at all. Every write —
a new version number, a change of champion and its history — happens under the model's lock
(:func:`skiff.locks.locks_for` picks it from the settings): a PostgreSQL advisory lock when the
control plane has a PostgreSQL database, which holds across processes and pods on any store, else a
file lock, which holds across processes on a local store (CLI, API, pipeline workers). So no history
entry is lost and no number is taken twice; on a local store a version's rename also refuses to
replace a folder, a second guard. (An object store without that database has neither a lock nor an
atomic rename: run one writer per model there, which a KFP pipeline does.)

Flavors: a version records its ``flavor``; ``metadata.model_file`` names its model file. A ``joblib`` flavor's model object is
pickled by :meth:`ModelRegistry.register` and read back by :meth:`ModelRegistry.load_model`; a file
flavor's model is one of the version's files (given to ``register`` with ``model=None``) and is loaded by
that flavor's runtime (TensorFlow by the model server), never through joblib. Versions written before
flavors were kept apart are read as they were: an old ``tensorflow`` version's ``model.joblib`` (a
pointer to its files) is never unpickled; its model is ``extra.model_files.keras``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field

from skiff import __version__
from skiff.config import Settings
from skiff.errors import ConflictError, NotFoundError, StorageError, UsageError
from skiff.identifiers import NAME_RE
from skiff.locks import FileLocks, Locks, locks_for
from skiff.modeling import MODEL_FILE
from skiff.storage import Store
from skiff.versions import parse_version

__all__ = ["ModelRegistry", "ModelVersion", "VersionMetadata", "ChampionEntry", "code_version", "Flavor", "FLAVORS",
           "register_flavor"]

log = logging.getLogger(__name__)

METADATA_FILE = "metadata.json"
CARD_FILE = "MODEL_CARD.md"
CHAMPION_FILE = "_champion.json"
_MAX_RACE_RETRIES = 20


@dataclass(frozen=True)
class Flavor:
    """How a flavor's model is stored in a version."""

    name: str
    #: the file that holds the model
    model_file: str
    #: True: ``register`` pickles the model object with joblib; False: the model file is one of ``files``
    joblib: bool = False


#: flavor name -> how its model is stored (other flavors plug in with :func:`register_flavor`)
FLAVORS: dict[str, Flavor] = {
    "sklearn": Flavor("sklearn", MODEL_FILE, joblib=True),  # a joblib flavor's model_file is MODEL_FILE
    "recommender": Flavor("recommender", MODEL_FILE, joblib=True),
    "tensorflow": Flavor("tensorflow", "model.keras"),
    "onnx": Flavor("onnx", "model.onnx"),
}


def register_flavor(flavor: Flavor) -> None:
    """Declare how another flavor's model is stored."""
    FLAVORS[flavor.name] = flavor


class ChampionEntry(TypedDict):
    """One change of champion in ``_champion.json``'s history."""

    version: int
    previous: int | None
    reason: str
    #: ISO 8601, UTC, seconds
    at: str


class _ChampionDoc(TypedDict):
    """``<name>/_champion.json``: the champion now and every change that led there."""

    version: int | None
    history: list[ChampionEntry]


class VersionMetadata(BaseModel):
    """What a model version records about itself. Unknown keys are kept in ``extra``."""

    model_config = ConfigDict(extra="forbid")

    name: str
    version: int = 0
    flavor: Literal["sklearn", "onnx", "tensorflow", "recommender"] = "sklearn"
    created_at: str = ""
    problem_type: str | None = None
    target: str | None = None
    estimator: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    threshold: float | None = None
    classes: list[Any] | None = None
    features: list[str] = Field(default_factory=list, description="Input columns, in order.")
    input_schema: dict[str, str] = Field(default_factory=dict, description="Input column -> spec type.")
    input_rules: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Input column -> the spec's column rules (true/false values, sentinels, missing policy, "
        "allowed, min/max ...) plus ``impute_value``, the statistic computed on the training rows: the model "
        "server coerces requests with them exactly as ingestion does. Empty in older versions: type only.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Held-out test metrics.")
    cv: list[dict[str, Any]] = Field(default_factory=list, description="Per-fold CV rows.")
    gate: dict[str, Any] = Field(default_factory=dict, description="Champion/challenger decision.")
    dataset: dict[str, Any] = Field(default_factory=dict, description="Name, partitions, spec.")
    data_fingerprint: str | None = None
    feature_service: str | None = None
    schema_uri: str | None = None
    statistics_uri: str | None = None
    pipeline_run_id: str | None = None
    code_version: dict[str, str] = Field(default_factory=dict)
    files: list[str] = Field(default_factory=list)
    extra: dict[str, Any] = Field(default_factory=dict)

    @property
    def model_file(self) -> str:
        """The file that holds the model: the flavor's (:data:`FLAVORS`); a ``tensorflow`` version's is
        ``extra.model_files.keras``; a file-flavor version registered the old way (a pickled object, no model
        file) names its ``model.joblib``."""
        flavor = FLAVORS.get(self.flavor)
        if self.flavor == "tensorflow":
            name = str((self.extra.get("model_files") or {}).get("keras") or (flavor.model_file if flavor else ""))
        else:
            name = flavor.model_file if flavor else MODEL_FILE
        if flavor is not None and not flavor.joblib and self.files and name not in self.files and MODEL_FILE in self.files:
            return MODEL_FILE
        return name


class ModelVersion(BaseModel):
    """A published version: its metadata, where it lives, and whether it is the champion."""

    model_config = ConfigDict(extra="forbid")

    name: str
    version: int
    uri: str
    champion: bool = False
    metadata: VersionMetadata


def code_version() -> dict[str, str]:
    """skiff's version and, when run from a git checkout, the commit."""
    out = {"skiff": __version__}
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        if sha.returncode == 0:
            out["git_commit"] = sha.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def _check_name(name: str) -> None:
    import re

    if not re.match(NAME_RE, name):
        raise UsageError(f"invalid model name {name!r}: letters, digits, '_' and '-', starting with a letter")


class ModelRegistry:
    """Register, list, read and promote model versions."""

    def __init__(self, store: Store, *, locks: Locks | None = None) -> None:
        self.store = store
        #: what every write holds; file locks unless given (:meth:`from_settings` picks them from settings)
        self.locks: Locks = locks or FileLocks()

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelRegistry:
        return cls(Store(settings.registry_uri, settings.storage_options), locks=locks_for(settings))

    # -- reading -------------------------------------------------------------------------------------
    def models(self) -> list[str]:
        return [n for n in self.store.listdir() if not n.startswith((".", "_")) and self.version_numbers(n)]

    def version_numbers(self, name: str) -> list[int]:
        nums = [int(n) for n in self.store.listdir(name) if n.isdigit()]
        return sorted(v for v in nums if self.store.is_committed(name, str(v)))

    def _champion_doc(self, name: str) -> _ChampionDoc:
        if not self.store.exists(name, CHAMPION_FILE):
            return {"version": None, "history": []}
        doc: _ChampionDoc = self.store.read_json(name, CHAMPION_FILE)  # written only by set_champion
        return doc

    def champion_version(self, name: str) -> int | None:
        return self._champion_doc(name).get("version")

    def get(self, name: str, version: int | str | None = None) -> ModelVersion:
        """A version by number, or 'champion', or 'latest' (None means champion, else latest).

        ``version`` is parsed strictly (:func:`skiff.versions.parse_version`): ``True``, ``" 1 "`` or
        ``"1_0"`` are a :class:`UsageError`, never a version."""
        if version is not None:
            version = parse_version(version)
        nums = self.version_numbers(name)
        if not nums:
            raise NotFoundError(f"model {name!r} has no versions in {self.store.uri()}")
        champ = self.champion_version(name)
        if version is None:
            version = champ if champ is not None else nums[-1]
        elif version == "latest":
            version = nums[-1]
        elif version == "champion":
            if champ is None:
                raise NotFoundError(f"model {name!r} has no champion yet")
            version = champ
        v = int(version)
        if v not in nums:
            raise NotFoundError(f"model {name!r} has no version {v} (versions: {nums})")
        meta = VersionMetadata.model_validate(self.store.read_json(name, str(v), METADATA_FILE))
        return ModelVersion(name=name, version=v, uri=self.store.uri(name, str(v)), champion=v == champ,
                            metadata=meta)

    def versions(self, name: str) -> list[ModelVersion]:
        return [self.get(name, v) for v in self.version_numbers(name)]

    def load_model(self, name: str, version: int | str | None = None) -> Any:
        """The model object of a ``joblib`` flavor's version (a file flavor's runtime reads its model file)."""
        import joblib

        mv = self.get(name, version)
        flavor = FLAVORS.get(mv.metadata.flavor)
        if flavor is None or not flavor.joblib:
            raise UsageError(f"model {name!r} version {mv.version} is a {mv.metadata.flavor} model: its runtime "
                             f"loads {mv.metadata.model_file}; only {sorted(n for n, f in FLAVORS.items() if f.joblib)} "
                             "versions load through the registry", flavor=mv.metadata.flavor)
        with self.store.open(name, str(mv.version), mv.metadata.model_file) as f:
            return joblib.load(f)

    def read_model_file(self, mv: ModelVersion) -> bytes:
        """The bytes of a version's model file, whatever its flavor."""
        return self.store.read_bytes(mv.name, str(mv.version), mv.metadata.model_file)

    def download(self, name: str, version: int | str | None, dest: Path) -> Path:
        """Copy a version's files to a local folder (for servers and steps that need paths)."""
        mv = self.get(name, version)
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        for fname in self.store.listdir(name, str(mv.version)):
            with self.store.open(name, str(mv.version), fname) as src, open(dest / fname, "wb") as out:
                shutil.copyfileobj(src, out)
        return dest

    # -- writing -------------------------------------------------------------------------------------
    def register(
        self,
        name: str,
        model: Any,
        metadata: VersionMetadata | Mapping[str, Any],
        files: Mapping[str, Path | str] | None = None,
    ) -> ModelVersion:
        """Publish a new version (the next number) with the model, its metadata and extra files.

        A ``joblib`` flavor (sklearn) passes the model object; a file flavor (tensorflow, onnx) passes
        ``model=None`` and its model file among ``files``."""
        _check_name(name)
        meta = metadata if isinstance(metadata, VersionMetadata) else VersionMetadata.model_validate(
            {"name": name, **dict(metadata)}
        )
        flavor = FLAVORS.get(meta.flavor)
        if flavor is None:
            raise UsageError(f"flavor {meta.flavor!r} has no storage declared (known: {sorted(FLAVORS)})")
        model_file = meta.model_file
        paths = {k: Path(v) for k, v in (files or {}).items()}
        reserved = (MODEL_FILE, METADATA_FILE, CARD_FILE, *((model_file,) if flavor.joblib else ()))
        for fname, path in paths.items():
            if "/" in fname or fname.startswith(("_", ".")) or fname in reserved:
                raise UsageError(f"invalid file name in a model version: {fname!r}")
            if not path.is_file():
                raise NotFoundError(f"file to register not found: {path}")
        if flavor.joblib and model is None:
            raise UsageError(f"a {flavor.name} version needs its model object (the registry pickles it)")
        if not flavor.joblib and model is not None:
            if model_file in paths:
                raise UsageError(f"a {flavor.name} version's model is its file {model_file}: pass model=None")
            # the registry's old way (a pickled object for every flavor), kept for callers not yet moved: the
            # version's model_file then names the pickle, so no runtime mistakes it for the flavor's file
            log.warning("%s: a %s version registered with a pickled model object instead of its %s",
                        name, flavor.name, model_file)
        elif not flavor.joblib and model_file not in paths:
            raise UsageError(f"a {flavor.name} version needs its model file {model_file!r} among the files "
                             f"(given: {sorted(paths)})")
        with self.locks.exclusive(self.store, name, "_versions"):
            for folder in self.store.clean_abandoned_staging(name):
                log.warning("%s: removed the staging folder of a registration that was killed: %s", name, folder)
            return self._publish(name, model, meta, paths)

    def _publish(self, name: str, model: Any, meta: VersionMetadata, files: dict[str, Path]) -> ModelVersion:
        import joblib

        for _ in range(_MAX_RACE_RETRIES):
            nums = [int(n) for n in self.store.listdir(name) if n.isdigit()]
            version = max(nums, default=0) + 1
            meta = meta.model_copy(update={
                "name": name,
                "version": version,
                "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "code_version": meta.code_version or code_version(),
                "files": sorted({METADATA_FILE, CARD_FILE, *files, *((MODEL_FILE,) if model is not None else ())}),
            })
            try:
                with self.store.atomic_dir(name, str(version)) as staging:
                    if model is not None:  # a joblib flavor (register checked which it is)
                        joblib.dump(model, staging / MODEL_FILE)
                    for fname, path in files.items():
                        shutil.copyfile(path, staging / fname)
                    (staging / METADATA_FILE).write_text(meta.model_dump_json(indent=2))
                    (staging / CARD_FILE).write_text(model_card(meta))
            except ConflictError:
                log.debug("version %s of %s taken concurrently; trying the next", version, name)
                continue
            log.info("registered %s version %s", name, version)
            return self.get(name, version)
        raise StorageError(f"could not allocate a version for {name!r} after {_MAX_RACE_RETRIES} tries")

    def set_champion(self, name: str, version: int, reason: str) -> ChampionEntry:
        """Make a version the champion; the history records every change with its reason."""
        if version not in self.version_numbers(name):
            raise NotFoundError(f"model {name!r} has no version {version}")
        with self.locks.exclusive(self.store, name, CHAMPION_FILE):  # read, append, write: no other writer between
            doc = self._champion_doc(name)
            entry: ChampionEntry = {"version": version, "previous": doc.get("version"), "reason": reason,
                     "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
            new_doc: _ChampionDoc = {"version": version, "history": [*doc.get("history", []), entry]}
            self.store.write_json(new_doc, name, CHAMPION_FILE)
        return entry

    def champion_history(self, name: str) -> list[ChampionEntry]:
        return list(self._champion_doc(name).get("history", []))


def model_card(meta: VersionMetadata) -> str:
    """A markdown model card from a version's metadata."""
    lines = [f"# {meta.name} — version {meta.version}", ""]
    lines += [f"- Created: {meta.created_at}", f"- Problem: {meta.problem_type or 'n/a'} (target `{meta.target}`)",
              f"- Estimator: {meta.estimator or 'n/a'}"]
    if meta.threshold is not None:
        lines.append(f"- Decision threshold: {meta.threshold:.4f}")
    if meta.dataset:
        parts = meta.dataset.get("partitions")
        lines.append(f"- Data: `{meta.dataset.get('name')}`" + (f", partitions {', '.join(parts)}" if parts else ""))
    if meta.data_fingerprint:
        lines.append(f"- Data fingerprint: `{meta.data_fingerprint}`")
    if meta.feature_service:
        lines.append(f"- Feature service: `{meta.feature_service}`")
    if meta.pipeline_run_id:
        lines.append(f"- Pipeline run: `{meta.pipeline_run_id}`")
    if meta.code_version:
        lines.append("- Code: " + ", ".join(f"{k} `{v}`" for k, v in meta.code_version.items()))
    if meta.params:
        lines += ["", "## Hyperparameters", "", "```json", json.dumps(meta.params, indent=2, default=str), "```"]
    if meta.metrics:
        lines += ["", "## Test metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in sorted(meta.metrics.items()) if isinstance(v, int | float)]
    if meta.cv:
        keys = [k for k in meta.cv[0] if k != "fold"]
        lines += ["", "## Cross-validation", "", "| fold | " + " | ".join(keys) + " |",
                  "|---" * (len(keys) + 1) + "|"]
        for row in meta.cv:
            cells = [f"{row[k]:.4f}" if isinstance(row.get(k), float) else str(row.get(k)) for k in keys]
            lines.append(f"| {row.get('fold')} | " + " | ".join(cells) + " |")
    if meta.gate:
        lines += ["", "## Gate", "", f"{meta.gate.get('reason', '')}"]
    if meta.features:
        lines += ["", "## Inputs", "", ", ".join(f"`{f}` ({meta.input_schema.get(f, '?')})" for f in meta.features)]
    return "\n".join(lines) + "\n"
