"""Validation of a lake partition with TFDV: statistics, schema, anomalies and drift; a blocking gate.

The CLI (``skiff validate``) and the KFP component call :func:`validate_partition`. TFDV runs in its own
environment (its pins clash with the project's), so this module resolves the partition, builds a
request from the dataset spec and starts :mod:`components.validate.tfdv_runner` once with the TFDV
interpreter (:func:`resolve_tfdv_python`). Outputs land in the lake, published whole::

    validation/<dataset>/schema.pbtxt                  the schema, inferred on the first run; editable
    validation/<dataset>/ingest_date=D/                one folder per validated partition
        stats.pb  schema.pbtxt  anomalies.pbtxt  anomalies.json  report.html  result.json

Later partitions are validated against the schema (or a reviewed copy given with ``schema=``), and
against the previous partition's statistics for drift: Jensen-Shannon divergence for numeric features,
L-infinity distance for categorical ones.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Literal, cast

import fsspec
from pydantic import BaseModel, ConfigDict, Field, field_validator

import skiff
from skiff.errors import (
    EnvironmentMissing,
    InputError,
    NotFoundError,
    SkiffError,
    SpecError,
    StorageError,
    UsageError,
    ValidationFailed,
)
from skiff.lake import Lake
from skiff.spec import DatasetSpec, spec_fingerprint
from skiff.validation import (
    RESULT_FILE,
    ValidationResult,
    gate_status,
    output_uris,
    result_from_doc,
    validation_parts,
)

from . import tfdv_runner

__all__ = [
    "ValidateConfig",
    "BLOCKING_TYPES",
    "PRESENCE_TYPES",
    "SCHEMA_FILE",
    "resolve_tfdv_python",
    "parse_feature_thresholds",
    "build_request",
    "parse_result",
    "validate_partition",
    "export_schema",
    "schema_uri",
    "drift_baseline",
    "blocking_failure",
]

SCHEMA_FILE = "schema.pbtxt"
OUTPUT_FILES = ("stats.pb", "schema.pbtxt", "anomalies.pbtxt", "anomalies.json", "report.html", "result.json")
DEFAULT_TFDV_PYTHON = ".venv-tfdv/bin/python"
RUNNER = Path(tfdv_runner.__file__)

#: TFDV anomaly types that make a partition unusable: wrong types, values outside the domain or range,
#: drift above its threshold, an empty partition. Blocking unless warn-only.
BLOCKING_TYPES = frozenset({
    "UNEXPECTED_DATA_TYPE",
    "ENUM_TYPE_UNEXPECTED_STRING_VALUES",
    "ENUM_TYPE_BYTES_NOT_STRING", "ENUM_TYPE_FLOAT_NOT_STRING", "ENUM_TYPE_INT_NOT_STRING",
    "ENUM_TYPE_INVALID_UTF8",
    "INT_TYPE_BIG_INT", "INT_TYPE_SMALL_INT", "INT_TYPE_NOT_INT_STRING", "INT_TYPE_NOT_STRING",
    "INT_TYPE_INT_EXPECTED", "INT_TYPE_STRING_EXPECTED",
    "FLOAT_TYPE_BIG_FLOAT", "FLOAT_TYPE_SMALL_FLOAT", "FLOAT_TYPE_NOT_FLOAT", "FLOAT_TYPE_STRING_NOT_FLOAT",
    "FLOAT_TYPE_NON_STRING", "FLOAT_TYPE_HAS_NAN", "FLOAT_TYPE_HAS_INF",
    "BOOL_TYPE_BIG_INT", "BOOL_TYPE_SMALL_INT", "BOOL_TYPE_UNEXPECTED_STRING", "BOOL_TYPE_UNEXPECTED_FLOAT",
    "BOOL_TYPE_BYTES_NOT_INT", "BOOL_TYPE_BYTES_NOT_STRING", "BOOL_TYPE_FLOAT_NOT_INT",
    "BOOL_TYPE_FLOAT_NOT_STRING", "BOOL_TYPE_INT_NOT_STRING", "BOOL_TYPE_STRING_NOT_INT",
    "STRING_TYPE_NOW_FLOAT", "STRING_TYPE_NOW_INT",
    "COMPARATOR_L_INFTY_HIGH", "COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH",
    "COMPARATOR_NORMALIZED_ABSOLUTE_DIFFERENCE_HIGH",
    "DATASET_LOW_NUM_EXAMPLES",
})
#: Presence anomalies: blocking for required columns (spec ``required``, the entity key, the target),
#: warnings for the others.
PRESENCE_TYPES = frozenset({
    "SCHEMA_MISSING_COLUMN",
    "FEATURE_TYPE_LOW_FRACTION_PRESENT",
    "FEATURE_TYPE_LOW_NUMBER_PRESENT",
    "FEATURE_TYPE_NOT_PRESENT",
    "INVALID_FEATURE_SHAPE",
})
_NO_DRIFT_TYPES = ("datetime",)


# -- configuration and results -----------------------------------------------------------------------------
def _check_threshold(value: float | None, what: str) -> float | None:
    if value is not None and not 0.0 < value <= 1.0:
        raise ValueError(f"{what} must be in (0, 1], got {value}")
    return value


class ValidateConfig(BaseModel):
    """How a partition is judged."""

    model_config = ConfigDict(extra="forbid")

    drift_threshold: float | None = Field(
        default=0.1,
        description="Default drift threshold for every spec feature: Jensen-Shannon divergence for numeric "
        "features, L-infinity distance for categorical ones (both in [0, 1]). None turns drift off.",
    )
    feature_thresholds: dict[str, float | None] = Field(
        default_factory=dict,
        description="Per-column drift thresholds overriding the default; None turns drift off for a column.",
    )
    warn_only: bool = Field(default=False, description="Report every anomaly as a warning; block only an empty "
                            "partition, which nothing downstream can use.")
    new_columns: Literal["error", "warning"] = Field(
        default="warning", description="Severity of a column in the data that the schema does not list."
    )
    domain_tolerance: float = Field(
        default=0.01, ge=0.0, lt=1.0,
        description="Fraction of values outside a categorical domain that is only a warning.",
    )
    timeout_s: float = Field(default=600.0, gt=0, description="Seconds the TFDV step may take.")

    @field_validator("drift_threshold")
    @classmethod
    def _default_range(cls, v: float | None) -> float | None:
        return _check_threshold(v, "drift_threshold")

    @field_validator("feature_thresholds")
    @classmethod
    def _feature_range(cls, v: dict[str, float | None]) -> dict[str, float | None]:
        for name, t in v.items():
            _check_threshold(t, f"the drift threshold of {name!r}")
        return v


# -- the TFDV interpreter ------------------------------------------------------------------------------------
def _repo_root() -> Path:
    return Path(skiff.__file__).resolve().parents[1]


def resolve_tfdv_python(configured: str | os.PathLike[str] | None = None) -> Path:
    """The TFDV environment's interpreter.

    ``configured`` is ``settings.tfdv_python`` (``SKIFF_TFDV_PYTHON``): an absolute path, a path tried
    against the current folder and then the repository holding skiff, or a bare command on PATH. Unset,
    ``.venv-tfdv/bin/python`` is tried in the same two places. Raises :class:`EnvironmentMissing`.
    """
    value = str(configured) if configured else DEFAULT_TFDV_PYTHON
    candidates: list[Path] = []
    if os.path.isabs(value):
        candidates.append(Path(value))
    elif os.sep not in value and "/" not in value:
        found = shutil.which(value)
        candidates.append(Path(found) if found else Path(value))
    else:
        candidates += [Path.cwd() / value, _repo_root() / value]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c.absolute()  # not resolve(): a venv's python is a symlink that must stay one
    tried = ", ".join(str(c) for c in dict.fromkeys(candidates))
    raise EnvironmentMissing(
        f"the TFDV environment is not installed (no interpreter at {tried}); run `make setup` "
        "(it builds .venv-tfdv), or point tfdv_python / SKIFF_TFDV_PYTHON at its python",
        tried=[str(c) for c in candidates],
    )


# -- request and result ----------------------------------------------------------------------------------------
def parse_feature_thresholds(items: list[str]) -> dict[str, float | None]:
    """``["tenure=0.2", "zip=off"]`` to ``{"tenure": 0.2, "zip": None}``; UsageError names a bad item."""
    out: dict[str, float | None] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise UsageError(f"--feature-threshold {item!r}: expected COLUMN=THRESHOLD (e.g. tenure=0.2, or zip=off)")
        if value.lower() in ("off", "none"):
            out[name] = None
            continue
        try:
            threshold = float(value)
        except ValueError as e:
            raise UsageError(f"--feature-threshold {item!r}: {value!r} is not a number or 'off'") from e
        if not 0.0 < threshold <= 1.0:
            raise UsageError(f"--feature-threshold {item!r}: the threshold must be in (0, 1]")
        out[name] = threshold
    return out


def required_columns(spec: DatasetSpec) -> list[str]:
    """Columns that must be present and complete: spec ``required``, the entity key and the target."""
    names = {n for n, c in spec.columns.items() if c.required} | set(spec.key_columns)
    if spec.target:
        names.add(spec.target)
    return sorted(names)


def _feature_rules(spec: DatasetSpec) -> dict[str, dict[str, Any]]:
    required = set(required_columns(spec))
    ids = {n for n, c in spec.columns.items() if c.unique}  # no top values in the report for these
    if len(spec.key_columns) == 1:  # one column of a composite key is no id by itself
        ids |= set(spec.key_columns)
    rules: dict[str, dict[str, Any]] = {}
    for name, col in spec.columns.items():
        rule: dict[str, Any] = {"type": col.type, "required": name in required, "unique": name in ids}
        if col.type in ("integer", "float"):
            lo, hi = col.min, col.max
            if col.allowed and col.type == "integer":
                try:
                    values = [int(v) for v in col.allowed]
                except (TypeError, ValueError) as e:
                    raise SpecError(f"{spec.name}: columns.{name}.allowed holds a value that is not an integer") from e
                lo = max(lo, min(values)) if lo is not None else min(values)
                hi = min(hi, max(values)) if hi is not None else max(values)
            rule.update(min=lo, max=hi)
        elif col.type in ("string", "category") and col.allowed:
            rule["domain"] = [str(v) for v in col.allowed]
        rules[name] = rule
    return rules


def _drift_thresholds(spec: DatasetSpec, config: ValidateConfig) -> dict[str, float | None]:
    unknown = sorted(set(config.feature_thresholds) - set(spec.columns))
    if unknown:
        raise UsageError(
            f"drift threshold for {', '.join(map(repr, unknown))}: not a column of dataset {spec.name!r}",
            columns=unknown,
        )
    skip = set(spec.key_columns) | {spec.event_timestamp}
    out: dict[str, float | None] = {}
    for name, col in spec.columns.items():
        if name in config.feature_thresholds:
            out[name] = config.feature_thresholds[name]
        elif name in skip or col.unique or col.type in _NO_DRIFT_TYPES:
            out[name] = None  # keys, ids and timestamps change every partition by design
        else:
            out[name] = config.drift_threshold
    return out


def severity_policy(spec: DatasetSpec, config: ValidateConfig) -> dict[str, Any]:
    blocking = set(BLOCKING_TYPES)
    if config.new_columns == "error":
        blocking.add("SCHEMA_NEW_COLUMN")
    return {
        "blocking": sorted(blocking),
        "blocking_if_required": sorted(PRESENCE_TYPES),
        "required": required_columns(spec),
        "warn_only": config.warn_only,
        "domain_tolerance": config.domain_tolerance,
    }


def build_request(
    spec: DatasetSpec,
    config: ValidateConfig,
    *,
    date: str,
    files: list[str],
    output_dir: str | Path,
    schema_path: str | Path,
    infer_schema: bool,
    schema_source: str | None = None,
    previous_date: str | None = None,
    previous_statistics: str | Path | None = None,
    previous_files: list[str] | None = None,
    runs: list[dict[str, Any]] | None = None,
    notes: list[str] | None = None,
) -> dict[str, Any]:
    """The runner's request for one partition (see :mod:`components.validate.tfdv_runner`)."""
    return {
        "version": tfdv_runner.REQUEST_VERSION,
        "dataset": spec.name,
        "date": date,
        "runs": list(runs or []),
        "notes": list(notes or []),
        "files": [str(f) for f in files],
        "previous_date": previous_date,
        "previous_statistics": str(previous_statistics) if previous_statistics else None,
        "previous_files": [str(f) for f in previous_files or []],
        "schema": {"path": str(schema_path), "infer": infer_schema, "source": schema_source},
        "features": _feature_rules(spec),
        "drift": _drift_thresholds(spec, config),
        "policy": severity_policy(spec, config),
        "output_dir": str(output_dir),
    }


def parse_result(doc: dict[str, Any], **uris: str | None) -> ValidationResult:
    """The runner's result document as a :class:`~skiff.validation.ValidationResult` (plus the outputs' URIs)."""
    try:
        result = result_from_doc(doc, **uris)
    except ValueError as e:
        raise SkiffError(f"the TFDV step returned a result skiff cannot read: {e}") from e
    # the runner (another interpreter, without skiff) states the verdict for its report; the gate's
    # rule is skiff.validation's, so a verdict that disagrees with the anomalies is a runner bug
    if result.status != gate_status(result.anomalies):
        raise SkiffError(f"the TFDV step said {result.status!r} but its anomalies say {gate_status(result.anomalies)!r}")
    return result


# -- lake locations ------------------------------------------------------------------------------------------------
def schema_uri(lake: Lake, dataset: str) -> str:
    return lake.store.uri(*validation_parts(dataset), SCHEMA_FILE)


def drift_baseline(lake: Lake, dataset: str, date: str) -> tuple[str | None, bool, list[str]]:
    """The partition drift is measured against: the latest earlier one that did not fail validation.

    Walks back from :meth:`Lake.previous_partition`: a partition that passed is used through its
    statistics, one never validated through its data; one that failed is skipped, so a rejected
    partition never becomes the yardstick for the next. Returns (date or None, validated, skipped dates).
    """
    store = lake.store
    skipped: list[str] = []
    prev = lake.previous_partition(dataset, date)
    while prev is not None:
        parts = validation_parts(dataset, prev)
        if not store.is_committed(*parts):
            return prev, False, skipped
        try:
            status = store.read_json(*parts, RESULT_FILE).get("status")
        except (FileNotFoundError, ValueError):
            status = None
        if status == "passed":
            return prev, True, skipped
        if status is None:  # an unreadable earlier result: use that partition's data
            return prev, False, skipped
        skipped.append(prev)
        prev = lake.previous_partition(dataset, prev)
    return None, False, skipped


def _fetch(lake: Lake, uri: str, dest: Path) -> str:
    """A local path for a lake file: itself on a local lake, a copy in ``dest`` otherwise."""
    if lake.store.is_local:
        return uri
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / f"{len(list(dest.iterdir())):05d}-{uri.rsplit('/', 1)[-1]}"
    try:
        # fsspec's get; skiff.storage.FileSystem does not name it yet
        cast(Any, lake.store.fs).get(uri, str(target))
    except OSError as e:
        raise StorageError(f"cannot copy {uri} from the lake: {e}") from e
    return str(target)


def _read_uri(uri: str, storage_options: dict[str, Any] | None = None) -> bytes:
    try:
        with fsspec.open(uri, "rb", **(storage_options or {})) as f:
            data: bytes = f.read()
            return data
    except FileNotFoundError as e:
        raise NotFoundError(f"schema file not found: {uri}", path=uri) from e
    except OSError as e:
        raise StorageError(f"cannot read {uri}: {e}") from e


# -- running the step ------------------------------------------------------------------------------------------------
def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])[-2000:]


def _run_runner(python: Path, request_path: Path, out_dir: Path, timeout_s: float, threads: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(
        OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
        TF_CPP_MIN_LOG_LEVEL="2", PYTHONWARNINGS="ignore", PYTHONNOUSERSITE="1",
    )
    cmd = [str(python), str(RUNNER), "--request", str(request_path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
    except subprocess.TimeoutExpired as e:
        raise SkiffError(f"the TFDV step took longer than {timeout_s:g} s and was stopped "
                         "(raise the validation timeout for large partitions)") from e
    except OSError as e:
        raise EnvironmentMissing(f"cannot start the TFDV interpreter {python}: {e}; run `make setup`") from e
    error_file = out_dir / "error.json"
    if proc.returncode != 0:
        kind, message = "internal", _tail(proc.stderr) or f"exit code {proc.returncode}"
        if error_file.is_file():
            try:
                err = json.loads(error_file.read_text())
                kind, message = err.get("kind", kind), err.get("message", message)
            except ValueError:
                pass
        if kind == "input":
            raise InputError(message)
        if kind == "schema":
            raise SpecError(message)
        if kind == "environment":
            raise EnvironmentMissing(f"{message}; run `make setup` to rebuild .venv-tfdv")
        raise SkiffError(f"the TFDV step failed ({kind}): {message}")
    result_file = out_dir / "result.json"
    if not result_file.is_file():
        raise SkiffError(f"the TFDV step wrote no result: {_tail(proc.stderr)}")
    result: dict[str, Any] = json.loads(result_file.read_text())
    return result


def _publish(lake: Lake, parts: tuple[str, ...], out_dir: Path) -> None:
    """Publish the outputs whole; a re-validation replaces the previous outputs of that partition."""
    store = lake.store
    if store.exists(*parts):
        store.delete(*parts)
    with store.atomic_dir(*parts) as staging:
        for name in OUTPUT_FILES:
            src = out_dir / name
            if src.is_file():
                shutil.copyfile(src, staging / name)


def validate_partition(
    spec: DatasetSpec,
    lake: Lake,
    *,
    date: str | None = None,
    config: ValidateConfig | None = None,
    schema: str | None = None,
    tfdv_python: str | os.PathLike[str] | None = None,
    storage_options: dict[str, Any] | None = None,
    threads: int = 1,
    run_id: str | None = None,
) -> ValidationResult:
    """Validate one partition of ``spec``'s dataset (the latest when ``date`` is None).

    The partition's runs are :meth:`Lake.select_runs`'s: those written under this spec (the features
    step reads the same), or the run ``run_id`` alone (its partition when ``date`` is None).

    ``schema`` names a reviewed schema text proto (a path or fsspec URI) to validate against; without
    it the lake's ``validation/<dataset>/schema.pbtxt`` is used, and inferred from this partition when
    absent. Returns the result whatever the verdict; the caller decides what a failure does (the CLI
    raises :func:`blocking_failure`'s :class:`~skiff.errors.ValidationFailed`, the component outputs
    ``passed``).
    """
    config = config or ValidateConfig()
    name = spec.name
    dates = lake.partitions(name)
    if not dates:
        raise NotFoundError(f"dataset {name!r} has no ingested partitions in {lake.store.uri('raw')}; "
                            "run `skiff ingest` first", dataset=name)
    if date is not None and date not in dates:
        raise NotFoundError(f"dataset {name!r} has no partition ingest_date={date} "
                            f"(partitions: {', '.join(dates)})", dataset=name, date=date)
    spec_hash = spec_fingerprint(spec)
    if run_id is not None:
        selection = lake.select_runs(name, spec_hash, dates=date, run_id=run_id)
        date = selection.dates[0]
    else:
        date = date or dates[-1]
        selection = lake.select_runs(name, spec_hash, dates=date)
    previous_date, baseline_validated, skipped = drift_baseline(lake, name, date)
    python = resolve_tfdv_python(tfdv_python)
    store = lake.store

    with tempfile.TemporaryDirectory(prefix="skiff-validate-") as tmp_name:
        tmp = Path(tmp_name)
        out_dir = tmp / "out"
        files = [_fetch(lake, u, tmp / "current") for ref in selection.runs for u in lake.run_files(ref)]
        if not files:
            raise InputError(f"partition ingest_date={date} of {name!r} has no Parquet files")

        previous_stats = previous_files = None
        if previous_date is not None:
            if baseline_validated:
                previous_stats = _fetch(lake, store.uri(*validation_parts(name, previous_date), "stats.pb"),
                                        tmp / "previous")
            else:  # not validated yet: its statistics come from its data, in the same TFDV run
                previous_files = [_fetch(lake, u, tmp / "previous")
                                  for ref in lake.select_runs(name, spec_hash, dates=previous_date).runs
                                  for u in lake.run_files(ref)]

        if schema is not None:
            schema_path = tmp / SCHEMA_FILE
            schema_path.write_bytes(_read_uri(schema, storage_options))
            infer, source = False, schema
        else:
            source = schema_uri(lake, name)
            infer = not store.exists(*validation_parts(name), SCHEMA_FILE)
            schema_path = tmp / SCHEMA_FILE
            if not infer:
                schema_path.write_bytes(store.read_bytes(*validation_parts(name), SCHEMA_FILE))

        request = build_request(
            spec, config, date=date, files=files, output_dir=out_dir, schema_path=schema_path,
            infer_schema=infer, schema_source=source, previous_date=previous_date,
            previous_statistics=previous_stats, previous_files=previous_files,
            runs=selection.describe()["runs"], notes=list(selection.notes),
        )
        request_path = tmp / "request.json"
        request_path.write_text(json.dumps(request, indent=2))
        doc = _run_runner(python, request_path, out_dir, config.timeout_s, threads)

        if infer:  # the first run keeps its inferred schema for review and for the next partitions
            store.write_bytes((out_dir / SCHEMA_FILE).read_bytes(), *validation_parts(name), SCHEMA_FILE)
        parts = validation_parts(name, date)
        _publish(lake, parts, out_dir)

    if skipped:
        doc["notes"] = [*doc.get("notes", []),
                        f"drift compared with {previous_date or 'nothing'}: earlier partitions "
                        f"{', '.join(skipped)} failed validation"]
    return parse_result(doc, **output_uris(lake, name, date), schema_uri=source)


def export_schema(lake: Lake, dataset: str, dest: str | Path) -> str:
    """Copy the dataset's current schema out of the lake (for review, e.g. into the repo)."""
    parts = (*validation_parts(dataset), SCHEMA_FILE)
    if not lake.store.exists(*parts):
        raise NotFoundError(
            f"dataset {dataset!r} has no schema yet ({lake.store.uri(*parts)}); run `skiff validate "
            f"--dataset {dataset}` once to infer it", dataset=dataset,
        )
    data = lake.store.read_bytes(*parts)
    dest_path = Path(dest)
    dest_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest_path.with_name(f".{dest_path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, dest_path)
    return str(dest_path)



def blocking_failure(result: ValidationResult) -> ValidationFailed | None:
    """The error a failed validation is (None when it passed): the blocking anomalies counted, the features
    they are in, and where the report is."""
    if result.passed:
        return None
    features = sorted({a.feature for a in result.blocking})
    n = len(result.blocking)
    return ValidationFailed(
        f"{result.dataset} ingest_date={result.date} failed validation: {n} blocking "
        f"{'anomaly' if n == 1 else 'anomalies'} in {', '.join(features)}; report: {result.report_uri}",
        features=features,
    )
