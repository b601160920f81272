"""What the recommender pipeline takes, checks before it starts and reports when it ends (see
:data:`pipelines.definitions.RECOMMENDER`).

The dataset spec is an interaction data set (``problem_type: recommendation``: user, item, event type,
event time, optional rating); ``recs_config`` says which columns play which part, the event weights,
the time decay, the held-out period and the models (:class:`skiff.recommend.events.RecsConfig`).
"""

from __future__ import annotations

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
from skiff.errors import NotFoundError, SkiffError, UsageError

if TYPE_CHECKING:
    from skiff.config import Settings
    from skiff.spec import DatasetSpec

__all__ = ["arguments", "preflight", "summarize", "summary_lines"]


def arguments(spec: DatasetSpec, params: dict[str, Any], settings: Settings, local: bool) -> dict[str, Any]:
    """Pipeline arguments: the spec as text, paths absolute for the local engine, where the run is logged in
    MLflow."""
    from pipelines.tabular_run import _absolute_source
    from skiff.spec_text import spec_to_text

    def _abs(uri: str) -> str:
        return uri if "://" in uri or not local else str(Path(uri).resolve())

    args = dict(params)
    args.setdefault("run_id", f"run-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}")
    args["model_name"] = args.get("model_name") or spec.name
    args.update(lake_uri=_abs(settings.lake_uri), registry_uri=_abs(settings.registry_uri))
    if local and args.get("sources"):
        args["sources"] = [_absolute_source(s) for s in args["sources"]]
    data = spec.model_dump(mode="json", exclude_none=True)
    if local:
        data = {**data, "sources": [_absolute_source(s) for s in data.get("sources", [])]}
    args["spec"] = spec_to_text(data)
    args["tracking_uri"] = local_tracking_uri(settings, local)
    return args


def preflight(spec: DatasetSpec, args: dict[str, Any]) -> None:
    """The spec is an interaction data set the config reads; the config parses; the margin is >= 0."""
    from skiff.recommend.events import RecsConfig, check_events_spec

    try:
        config = RecsConfig.model_validate(args.get("recs_config") or {})
    except ValueError as e:
        raise UsageError(f"pipeline parameter 'recs_config': {e}"[:600]) from e
    try:
        check_events_spec(spec, config)
    except SkiffError as e:
        raise UsageError(f"{e.message}; the recommender pipeline needs an interaction data set") from e
    check_margin(args)


def summarize(run: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Status, steps, what ingestion kept, each model's metrics, the registered version and its gate."""
    from skiff.registry import ModelRegistry

    args = run.get("arguments", {})
    summary: dict[str, Any] = {**summary_base(run, args.get("run_id")), "registered": None, "gate_failed": False}
    ingest = task_metadata(run, "ingest-op")
    if ingest:
        summary["ingest"] = {k: ingest.get(k) for k in ("status", "run_id", "counts", "quarantine_reasons")}
    trained = task_metadata(run, "train-recs-op")
    if trained:
        summary["training"] = {k: trained.get(k) for k in ("kind", "k", "metrics", "catalogue", "events", "ann",
                                                            "split")}
    name, run_id = args.get("model_name"), args.get("run_id")
    if name and run_id:
        try:
            versions = ModelRegistry.from_settings(settings).versions(name)
        except NotFoundError:
            versions = []
        for mv in versions:
            if mv.metadata.pipeline_run_id == run_id:
                summary["registered"] = {"name": name, "version": mv.version, "champion": mv.champion,
                                         "uri": mv.uri, "estimator": mv.metadata.estimator,
                                         "metrics": mv.metadata.metrics,
                                         "gate_reason": mv.metadata.gate.get("reason")}
    track_summary(summary, args, name, settings, params={"dataset": args.get("dataset") or args.get("model_name")})
    return summary


def summary_lines(summary: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    ing = summary.get("ingest") or {}
    if ing.get("counts"):
        reasons = ing.get("quarantine_reasons") or {}
        lines.append("ingest: " + ", ".join(f"{k} {v}" for k, v in ing["counts"].items())
                     + ("; quarantined because " + ", ".join(f"{k} ({v})" for k, v in reasons.items())
                        if reasons else ""))
    tr = summary.get("training") or {}
    k = tr.get("k") or 10
    base = (tr.get("metrics") or {}).get("popularity") or {}
    for kind, m in (tr.get("metrics") or {}).items():
        parts = []
        for metric in ("precision", "recall", "ndcg", "map", "hit_rate", "coverage"):
            key = f"{metric}@{k}"
            if key in m:
                ratio = f" ({m[key] / base[key]:.2f}x)" if base.get(key) else ""
                parts.append(f"{key} {m[key]:.4f}{ratio if kind != 'popularity' else ''}")
        lines.append(f"{kind}: " + ", ".join(parts))
    ann = tr.get("ann") or {}
    if ann:
        lines.append("ann index: " + ", ".join(f"{key} {v:.4f}" if isinstance(v, float) else f"{key} {v}"
                                               for key, v in ann.items()))
    reg = summary.get("registered")
    if reg:
        lines.append(f"registered {reg['name']} v{reg['version']} ({reg.get('estimator')})"
                     f"{' (champion)' if reg['champion'] else ''}")
        if reg.get("gate_reason"):
            lines.append(f"gate: {reg['gate_reason']}")
    return lines + tracking_line(summary)
