"""A run of the tabular pipeline: its arguments, the checks before it starts, and its summary.

Plain functions behind :data:`pipelines.definitions.TABULAR` (no KFP import: the REST API and the
CLI check a run before the pipeline module and its components are loaded). The DAG itself is
:mod:`pipelines.tabular`.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.local_runs import (
    check_margin,
    local_tracking_uri,
    summary_base,
    task_metadata,
    track_summary,
    tracking_line,
)
from skiff.errors import NotFoundError, UsageError

if TYPE_CHECKING:
    from skiff.config import Settings
    from skiff.spec import DatasetSpec
    from skiff.validation import ValidationResult

__all__ = ["arguments", "preflight", "summarize", "summary_lines"]


def arguments(spec: DatasetSpec, params: dict[str, Any], settings: Settings, local: bool) -> dict[str, Any]:
    """Pipeline arguments from the spec, user parameters (checked against their types already) and
    settings; paths absolute for the local engine, whose steps run in their own working folders."""
    from skiff.config import project_path
    from skiff.spec_text import spec_to_text

    args = dict(params)
    estimator = args.pop("estimator", None)
    if estimator is not None:
        args["train_config"] = {**(args.get("train_config") or {}), "estimator": estimator}

    def _abs(uri: str) -> str:
        return uri if "://" in uri or not local else str(Path(uri).resolve())

    args.setdefault("run_id", f"run-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}")
    args.update(
        lake_uri=_abs(settings.lake_uri),
        registry_uri=_abs(settings.registry_uri),
        feature_repo=str(project_path(settings.feature_repo)) if local else "/app/feature_repo",
        feast_dir=_abs(settings.feast_dir),
        feature_store_yaml=settings.feature_store_yaml,
    )
    # locally the register step logs where this process resolves (a step's working folder is its own);
    # on a cluster the steps' settings decide (skiff.tracking.runs.tracking_uri)
    args["tracking_uri"] = local_tracking_uri(settings, local)
    if local and args.get("sources"):
        args["sources"] = [_absolute_source(s) for s in args["sources"]]
    data = spec.model_dump(mode="json", exclude_none=True)
    if local:
        data = {**data, "sources": [_absolute_source(s) for s in data.get("sources", [])]}
    args["spec"] = spec_to_text(data)
    return args


def _absolute_source(source: Any) -> Any:
    if isinstance(source, dict) and source.get("type", "file") == "file" and "://" not in source.get("path", "://"):
        return {**source, "path": str(Path(source["path"]).resolve())}
    if isinstance(source, str) and "://" not in source:
        return str(Path(source).resolve())
    return source


def preflight(spec: DatasetSpec, args: dict[str, Any]) -> None:
    """Check what can be checked before any step runs: the spec trains a model, the training config
    suits its problem type (estimator, parameters, search space, scoring), the gate margin, and a pinned
    ``lake_run`` (no ``sources`` with it; on a local lake, the run exists)."""
    from components.train.logic import check_config, parse_config

    if spec.target is None or spec.problem_type is None:
        raise UsageError(f"dataset {spec.name!r} has no target/problem_type: the tabular pipeline trains a model")
    check_config(parse_config(args.get("train_config")), spec)
    check_margin(args)
    if args.get("lake_run"):
        _check_lake_run(spec, args)


def _check_lake_run(spec: DatasetSpec, args: dict[str, Any]) -> None:
    """A pinned run is read instead of ingesting: sources would be ingested for nothing. The run's
    existence is checked here when the lake is a local folder (elsewhere the ingest step checks it,
    before anything is trained)."""
    from skiff.lake import Lake
    from skiff.storage import Store

    if args.get("sources"):
        raise UsageError("pipeline parameters 'lake_run' and 'sources' exclude each other: a pinned run is "
                         "read instead of ingesting; drop 'sources' (or 'lake_run' to ingest them)")
    uri = str(args.get("lake_uri") or "")
    if uri and ("://" not in uri or uri.startswith("file://")):
        Lake(Store(uri)).select_runs(spec.name, run_id=args["lake_run"])


def summarize(run: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The run summary: status, step durations, validation, metrics, the registered version."""
    from skiff.registry import ModelRegistry

    args = run.get("arguments", {})
    run_id = args.get("run_id")
    spec = json.loads(args["spec"]) if isinstance(args.get("spec"), str) else args.get("spec") or {}
    summary: dict[str, Any] = {
        **summary_base(run, run_id),
        "dataset": spec.get("name"), "validation": None, "registered": None, "gate_failed": False,
    }
    ingest_meta = task_metadata(run, "ingest-op")
    validated_date = task_metadata(run, "validate").get("ingest_date") or ingest_meta.get("ingest_date")
    validation = _validation_result(settings, spec.get("name"), validated_date)
    if validation:
        summary["validation"] = {
            "status": validation.status, "date": validation.date,
            "blocking": [a.model_dump(mode="json") for a in validation.blocking],
            "warnings": [a.model_dump(mode="json") for a in validation.warnings],
            "drifted": validation.drifted, "runs": validation.runs, "report_uri": validation.report_uri,
        }
        summary["gate_failed"] = not validation.passed
    features_runs = task_metadata(run, "features").get("runs") or {}
    summary["runs"] = {  # which lake runs validation and training read (skiff.lake.Lake.select_runs)
        "selection": "pinned" if args.get("lake_run") else "current_spec", "pinned": args.get("lake_run") or None,
        "validated": validation.runs if validation else [],
        "features": features_runs.get("runs", []),
        "notes": features_runs.get("notes", []),
    }
    if ingest_meta:
        summary["ingest"] = {k: ingest_meta.get(k) for k in ("status", "ingest_date", "run_id", "counts",
                                                              "quarantine_reasons")}
    name = args.get("model_name") or spec.get("name")
    if name and run_id:
        registry = ModelRegistry.from_settings(settings)
        try:
            versions = registry.versions(name)
        except NotFoundError:
            versions = []
        for mv in versions:
            if mv.metadata.pipeline_run_id == run_id:
                summary["registered"] = {
                    "name": name, "version": mv.version, "champion": mv.champion, "uri": mv.uri,
                    "metrics": mv.metadata.metrics, "estimator": mv.metadata.estimator,
                    "gate_reason": mv.metadata.gate.get("reason"),
                    "onnx": (mv.metadata.extra.get("onnx") or {}).get("exact"),
                }
    if validation is not None and summary["gate_failed"] and summary["status"] == "SUCCESS":
        summary["status"] = "GATE_FAILED"
        summary["error"] = "validation gate failed: " + "; ".join(
            f"{a.feature}: {a.anomaly}" for a in validation.blocking[:5])
    track_summary(summary, args, name, settings, params={"dataset": summary.get("dataset")})
    return summary


def _validation_result(settings: Settings, dataset: str | None, date: str | None) -> ValidationResult | None:
    """The run's partition's validation result (None before validation wrote one)."""
    from skiff.lake import Lake
    from skiff.validation import read_result

    if not dataset or not date:
        return None
    try:
        return read_result(Lake.from_settings(settings), dataset, date)
    except NotFoundError:
        return None


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """A few lines for people: what ingestion kept, the validation verdict, the runs read, the
    registered version and the gate's reason."""
    lines: list[str] = []
    ing = summary.get("ingest") or {}
    counts = ing.get("counts") or {}
    if counts:
        reasons = ing.get("quarantine_reasons") or {}
        unchanged = {"unchanged": " (input unchanged: the earlier run's partition is used)",
                     "pinned": " (nothing ingested: the pinned run's counts)"}.get(ing.get("status") or "", "")
        lines.append("ingest: " + ", ".join(f"{k} {v}" for k, v in counts.items())
                     + ("; quarantined because " + ", ".join(f"{k} ({v})" for k, v in reasons.items())
                        if reasons else "")
                     + unchanged)
    if summary.get("validation"):
        v = summary["validation"]
        lines.append(f"validation: {v.get('status')} ({len(v.get('blocking', []))} blocking, "
                     f"{len(v.get('warnings', []))} warnings) — report {v.get('report_uri')}")
    runs = summary.get("runs") or {}
    if runs.get("validated") or runs.get("features"):
        def names(items: list[dict[str, Any]]) -> str:
            return ", ".join(f"{r.get('ingest_date')}/{r.get('run_id')}" for r in items) or "none"

        read = runs.get("features", [])
        pinned = f"pinned run {runs['pinned']}: " if runs.get("pinned") else ""
        lines.append(f"runs: {pinned}validated {names(runs.get('validated', []))}; features and training read "
                     f"{len(read)} ({'…, ' if len(read) > 3 else ''}{names(read[-3:])})")
        lines.extend(f"note: {note}" for note in runs.get("notes", []))
    if reg := summary.get("registered"):
        m = reg.get("metrics", {})
        shown = ", ".join(f"{k}={m[k]:.3f}" for k in ("roc_auc", "pr_auc", "f1", "accuracy", "rmse", "mae", "r2")
                          if k in m)
        lines.append(f"model {reg['name']} version {reg['version']} "
                     f"({'champion' if reg['champion'] else 'candidate'}): {shown}")
        lines.append(f"gate: {reg.get('gate_reason')}")
    return lines + tracking_line(summary)
