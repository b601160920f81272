"""The model registry: immutable, numbered versions in the artifact store.

Layout (under the registry URI, ``<root>/models`` by default)::

    <name>/<version>/            version = 1, 2, 3 ... ; never rewritten once published
        model.joblib             the fitted pipeline (flavor "sklearn")
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
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import subprocess
from collections.abc import Mapping
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

__all__ = ["ModelRegistry", "ModelVersion", "VersionMetadata", "ChampionEntry", "code_version"]

log = logging.getLogger(__name__)

METADATA_FILE = "metadata.json"
CARD_FILE = "MODEL_CARD.md"
CHAMPION_FILE = "_champion.json"
_MAX_RACE_RETRIES = 20


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
    flavor: Literal["sklearn", "tensorflow"] = "sklearn"
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
        import joblib

        mv = self.get(name, version)
        with self.store.open(name, str(mv.version), MODEL_FILE) as f:
            return joblib.load(f)

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
        """Publish a new version (the next number) with the model, its metadata and extra files."""
        _check_name(name)
        meta = metadata if isinstance(metadata, VersionMetadata) else VersionMetadata.model_validate(
            {"name": name, **dict(metadata)}
        )
        paths = {k: Path(v) for k, v in (files or {}).items()}
        for fname, path in paths.items():
            if "/" in fname or fname.startswith(("_", ".")) or fname in (MODEL_FILE, METADATA_FILE, CARD_FILE):
                raise UsageError(f"invalid file name in a model version: {fname!r}")
            if not path.is_file():
                raise NotFoundError(f"file to register not found: {path}")
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
                "files": sorted([MODEL_FILE, METADATA_FILE, CARD_FILE, *files]),
            })
            try:
                with self.store.atomic_dir(name, str(version)) as staging:
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
