"""What the image pipeline takes, checks before it starts and reports when it ends (see
:data:`pipelines.definitions.IMAGE`).

The dataset spec names the image data set (its ``name`` is the lake folder and the default model name; its
columns are not used: an image set's table is :data:`skiff.image_data.IMAGE_COLUMNS`). ``data`` is where the
images are: an ImageFolder root, a CSV/JSON manifest, or a URI.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.local_runs import task_metadata
from skiff.errors import NotFoundError, UsageError

if TYPE_CHECKING:
    from skiff.config import Settings
    from skiff.spec import DatasetSpec

__all__ = ["arguments", "preflight", "summarize", "summary_lines"]


def arguments(spec: DatasetSpec, params: dict[str, Any], settings: Settings, local: bool) -> dict[str, Any]:
    """Pipeline arguments: the dataset from the spec, paths absolute for the local engine."""

    def _abs(uri: str) -> str:
        return uri if "://" in uri or not local else str(Path(uri).resolve())

    args = dict(params)
    args.setdefault("run_id", f"run-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}")
    args["dataset"] = spec.name
    args["model_name"] = args.get("model_name") or spec.name
    args["data"] = _abs(str(args.get("data") or ""))
    args.update(lake_uri=_abs(settings.lake_uri), registry_uri=_abs(settings.registry_uri))
    return args


def preflight(spec: DatasetSpec, args: dict[str, Any]) -> None:
    """The images' location is given (and exists, when local); the configs parse; the margin is >= 0."""
    from components.ingest_images.logic import IngestImagesConfig
    from components.train_image.logic import TrainImageConfig

    data = str(args.get("data") or "")
    if not data or data == str(Path("").resolve()):
        raise UsageError("the image pipeline needs --param data=DIR (an ImageFolder root, a CSV/JSON manifest "
                         "or a URI)")
    if "://" not in data and not Path(data).exists():
        raise UsageError(f"image data not found: {data}")
    for key, model in (("ingest_config", IngestImagesConfig), ("train_config", TrainImageConfig)):
        try:
            model.model_validate(args.get(key) or {})
        except ValueError as e:
            raise UsageError(f"pipeline parameter {key!r}: {e}"[:600]) from e
    margin = args.get("margin", 0.0)
    if not isinstance(margin, int | float) or isinstance(margin, bool) or margin < 0:
        raise UsageError("pipeline parameter 'margin' must be a number >= 0")


def summarize(run: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Status, steps, what ingestion kept, the training phases, the registered version."""
    from skiff.registry import ModelRegistry

    args = run.get("arguments", {})
    summary: dict[str, Any] = {
        "pipeline": run["pipeline"], "status": run["status"], "duration_s": run["duration_s"],
        "steps": run["steps"], "error": run.get("error"), "run_id": args.get("run_id"),
        "failed_step": run.get("failed_step"), "log_file": run.get("log_file"), "dataset": args.get("dataset"),
        "registered": None, "gate_failed": False,
    }
    ingest = task_metadata(run, "ingest-images-op")
    if ingest:
        summary["ingest"] = {k: ingest.get(k) for k in ("status", "run_id", "counts", "quarantine_reasons",
                                                         "classes", "imbalance")}
    trained = task_metadata(run, "train-image-op")
    if trained:
        summary["training"] = {k: trained.get(k) for k in ("classes", "counts", "phases", "device")}
    name, run_id = args.get("model_name"), args.get("run_id")
    if name and run_id:
        try:
            versions = ModelRegistry.from_settings(settings).versions(name)
        except NotFoundError:
            versions = []
        for mv in versions:
            if mv.metadata.pipeline_run_id == run_id:
                summary["registered"] = {"name": name, "version": mv.version, "champion": mv.champion,
                                         "uri": mv.uri, "metrics": mv.metadata.metrics,
                                         "gate_reason": mv.metadata.gate.get("reason")}
    return summary


def summary_lines(summary: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    ing = summary.get("ingest") or {}
    if ing.get("counts"):
        reasons = ing.get("quarantine_reasons") or {}
        lines.append("ingest: " + ", ".join(f"{k} {v}" for k, v in ing["counts"].items())
                     + ("; quarantined because " + ", ".join(f"{k} ({v})" for k, v in reasons.items())
                        if reasons else ""))
    phases = (summary.get("training") or {}).get("phases") or {}
    for phase, p in phases.items():
        lines.append(f"train {phase}: val accuracy {p.get('val_accuracy', 0):.3f}, test accuracy "
                     f"{p.get('test_accuracy', 0):.3f} ({p.get('epochs')} epochs)")
    reg = summary.get("registered")
    if reg:
        lines.append(f"registered {reg['name']} v{reg['version']}{' (champion)' if reg['champion'] else ''}: "
                     + ", ".join(f"{k} {v:.3f}" for k, v in (reg.get("metrics") or {}).items()))
        if reg.get("gate_reason"):
            lines.append(f"gate: {reg['gate_reason']}")
    return lines
