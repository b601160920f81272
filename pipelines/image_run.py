"""What the image pipeline takes, checks before it starts and reports when it ends (see
:data:`pipelines.definitions.IMAGE`).

The dataset spec names the image data set (its ``name`` is the lake folder and the default model name; its
columns are not used: an image set's table is :data:`skiff.image_data.IMAGE_COLUMNS`). ``data`` is where the
images are: an ImageFolder root, a CSV/JSON manifest, or a URI. Without a spec the folder defines the data
set by itself (:func:`folder_spec`: ``skiff run image --local --param data=DIR``), named after the folder
(or ``--param name=NAME``). ``backbone``, ``weights``, ``image_size`` and ``epochs`` (each training phase's)
are shortcuts for the same keys of ``train_config``.
"""

from __future__ import annotations

import re
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

__all__ = ["arguments", "preflight", "summarize", "summary_lines", "folder_spec", "TRAIN_SHORTCUTS"]

#: parameter -> the train_config keys it sets (``epochs``: both phases')
TRAIN_SHORTCUTS: dict[str, tuple[str, ...]] = {"backbone": ("backbone",), "weights": ("weights",),
                                                "image_size": ("image_size",),
                                                "epochs": ("head_epochs", "fine_tune_epochs")}


def _folder_name(data: str) -> str:
    """A data set name (skiff.identifiers.NAME_RE) from the last part of a folder path or URI."""
    last = data.rstrip("/").rsplit("/", 1)[-1]
    last = re.sub(r"\.(csv|json|jsonl)$", "", last, flags=re.IGNORECASE)
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", last).strip("_-")[:56]
    return name if name[:1].isalpha() else f"images_{name}".rstrip("_")


def folder_spec(params: dict[str, Any]) -> DatasetSpec:
    """The data set an image folder (or manifest) defines by itself, when the run has no spec file: named
    ``params["name"]`` or after the folder. ``params`` loses its ``name`` entry."""
    from skiff.spec import DatasetSpec

    data = str(params.get("data") or "")
    if not data:
        raise UsageError("the image pipeline runs on a folder of images: give --param data=DIR (an ImageFolder "
                         "root: one sub-folder per class), or --dataset NAME / --spec FILE")
    name = str(params.pop("name", "") or _folder_name(data))
    try:
        return DatasetSpec.model_validate({"name": name, "entity_key": "path",
                                           "columns": {"path": {"type": "string"}, "label": {"type": "string"}}})
    except ValueError as e:
        raise UsageError(f"cannot name the image data set {name!r}: give --param name=NAME (letters, digits, "
                         f"'_' and '-', starting with a letter)") from e


def arguments(spec: DatasetSpec, params: dict[str, Any], settings: Settings, local: bool) -> dict[str, Any]:
    """Pipeline arguments: the dataset from the spec, paths absolute for the local engine, where the run is
    logged in MLflow."""
    from skiff.spec_text import spec_to_text

    def _abs(uri: str) -> str:
        return uri if "://" in uri or not local else str(Path(uri).resolve())

    args = dict(params)
    if args.pop("name", None):
        raise UsageError("--param name names a data set defined by its folder alone: with a spec, the spec names it")
    config = dict(args.get("train_config") or {})
    for param, keys in TRAIN_SHORTCUTS.items():
        value = args.pop(param, None)
        if value is None:
            continue
        for key in keys:
            if key in config and config[key] != value:
                raise UsageError(f"--param {param}={value!r} and train_config.{key}={config[key]!r} disagree: "
                                 "give one")
            config[key] = value
    if config:
        args["train_config"] = config
    args.setdefault("run_id", f"run-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}")
    args["dataset"] = spec.name
    args["model_name"] = args.get("model_name") or spec.name
    args["data"] = _abs(str(args.get("data") or ""))
    args.update(lake_uri=_abs(settings.lake_uri), registry_uri=_abs(settings.registry_uri),
                artifacts_uri=_abs(settings.artifacts_uri))
    # the spec is the MLflow run's spec fingerprint (the image steps read the data set's name only)
    args["spec"] = spec_to_text(spec.model_dump(mode="json", exclude_none=True))
    args["tracking_uri"] = local_tracking_uri(settings, local)
    workers = args.get("workers", 1)
    if local and isinstance(workers, int) and workers > 1:
        raise UsageError(f"workers={workers} trains past one node as a Kubeflow TFJob, which needs a cluster: "
                         "submit with --host (a local run trains in one process, workers=1)")
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
    for key in ("workers", "gpus_per_worker"):
        value = args.get(key, 1)
        if not isinstance(value, int) or isinstance(value, bool) or value < (1 if key == "workers" else 0):
            raise UsageError(f"pipeline parameter {key!r} must be an integer >= {1 if key == 'workers' else 0}, "
                             f"got {value!r}"[:200])
    check_margin(args)


def summarize(run: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Status, steps, what ingestion kept, the training phases, the registered version."""
    from skiff.registry import ModelRegistry

    args = run.get("arguments", {})
    summary: dict[str, Any] = {
        **summary_base(run, args.get("run_id")), "dataset": args.get("dataset"),
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
    return lines + tracking_line(summary)
