"""The tabular pipeline: ingest → validate → features → train → evaluate → register.

One ``@dsl.pipeline``: kfp.local runs it on this machine (``skiff run tabular --local``) and a Kubeflow
Pipelines backend runs its compiled IR YAML (``skiff compile tabular``, ``skiff run tabular --host``).
Validation is a blocking gate: the rest runs only when the partition passed (``dsl.If``).
"""


import secrets
import time
from typing import Any

from kfp import dsl

from components.evaluate.component import evaluate
from components.features.component import features
from components.gate.component import validation_blocked
from components.ingest.component import ingest_op
from components.register.component import register
from components.train.component import train
from components.validate.component import validate

__all__ = ["tabular", "PARAMETERS", "build_arguments", "summarize", "print_human_summary"]

#: Parameters a user sets with --param (the rest come from settings).
PARAMETERS = {
    "spec": "the dataset spec (a YAML file path on the command line; its JSON text in the pipeline, which keeps "
            "the column order a dict parameter loses)",
    "sources": "list of sources overriding the spec's (same form as the spec's sources)",
    "model_name": "registered model name (default: the dataset name)",
    "train_config": "training config: estimator, params, pca, cv_folds, search, imbalance, threshold_metric …",
    "estimator": "shortcut for train_config.estimator",
    "metric": "gate metric (default: the training scoring metric, e.g. roc_auc or rmse)",
    "margin": "how much the challenger must beat the champion by on the gate metric",
    "drift_threshold": "default drift threshold (JSD / L-infinity) for validation",
    "feature_thresholds": "per-feature drift thresholds {column: value}",
    "warn_only": "validation never blocks",
    "ingest_date": "partition date to ingest into (default: today)",
}


@dsl.pipeline(name="skiff-tabular", description="ingest → validate → features → train → evaluate → register")
def tabular(
    spec: str,
    lake_uri: str,
    registry_uri: str,
    feature_repo: str,
    feast_dir: str,
    sources: list = [],  # noqa: B006 - KFP parameter defaults are literals, never mutated
    model_name: str = "",
    train_config: dict = {},  # noqa: B006
    metric: str = "",
    margin: float = 0.0,
    drift_threshold: float = 0.1,
    feature_thresholds: dict = {},  # noqa: B006
    warn_only: bool = False,
    feature_store_yaml: str = "feature_store.yaml",
    run_id: str = "",
    ingest_date: str = "",
):
    ingested = ingest_op(spec=spec, lake_uri=lake_uri, run_id=run_id, sources=sources, ingest_date=ingest_date)
    ingested.set_caching_options(False).set_display_name("ingest")
    validated = validate(
        ingested=ingested.outputs["manifest"], spec=spec, lake_uri=lake_uri, drift_threshold=drift_threshold,
        feature_thresholds=feature_thresholds, warn_only=warn_only,
    ).set_caching_options(False).set_display_name("validate")
    with dsl.If(validated.outputs["passed"] == True, name="validation-passed"):  # noqa: E712 - KFP condition
        feats = features(
            ingested=ingested.outputs["manifest"], spec=spec, lake_uri=lake_uri, feature_repo=feature_repo,
            feast_dir=feast_dir, feature_store_yaml=feature_store_yaml,
        ).set_caching_options(False).set_display_name("features")
        trained = train(training_data=feats.outputs["training_data"], spec=spec, config=train_config)
        trained.set_display_name("train").set_cpu_limit("2").set_memory_limit("8G")
        evaluated = evaluate(
            model=trained.outputs["model"], test_data=trained.outputs["test_data"], spec=spec,
            metric=metric, margin=margin, registry_uri=registry_uri, model_name=model_name,
        ).set_caching_options(False).set_display_name("evaluate")
        register(
            model=trained.outputs["model"], test_data=trained.outputs["test_data"],
            training_data=feats.outputs["training_data"], report=evaluated.outputs["report"],
            statistics=validated.outputs["statistics"], spec=spec, registry_uri=registry_uri,
            model_name=model_name, feature_service=feats.outputs["feature_service"],
            test_metrics=evaluated.outputs["test_metrics"], promote=evaluated.outputs["promote"],
            reason=evaluated.outputs["reason"], gate_metric=metric, margin=margin, run_id=run_id,
            pipeline_job=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        ).set_caching_options(False).set_display_name("register")
    with dsl.Else(name="validation-blocked"):
        validation_blocked(statistics=validated.outputs["statistics"], blocking=validated.outputs["blocking"])


def build_arguments(params: dict[str, Any], settings, local: bool) -> dict[str, Any]:
    """Pipeline arguments from user parameters and settings (paths absolute for the local engine)."""
    from pathlib import Path

    from skiff.config import project_path
    from skiff.errors import UsageError
    from skiff.spec_text import spec_to_text

    args = dict(params)
    estimator = args.pop("estimator", None)
    if estimator is not None:
        args["train_config"] = {**(args.get("train_config") or {}), "estimator": estimator}
    for key, kind in (("train_config", dict), ("feature_thresholds", dict), ("sources", list)):
        if key in args and not isinstance(args[key], kind):
            raise UsageError(f"--param {key} must be a JSON {kind.__name__}")

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
    if local and args.get("sources"):
        args["sources"] = [_absolute_source(s) for s in args["sources"]]
    spec = args["spec"]
    if local:
        spec = {**spec, "sources": [_absolute_source(s) for s in spec.get("sources", [])]}
    args["spec"] = spec_to_text(spec)
    return args


def _absolute_source(source: Any) -> Any:
    """Steps run in their own working folder: make relative file paths absolute."""
    from pathlib import Path

    if isinstance(source, dict) and source.get("type", "file") == "file" and "://" not in source.get("path", "://"):
        return {**source, "path": str(Path(source["path"]).resolve())}
    if isinstance(source, str) and "://" not in source:
        return str(Path(source).resolve())
    return source


def summarize(run: dict[str, Any], settings) -> dict[str, Any]:
    """The run summary: status, step durations, validation, metrics, the registered version."""
    import json

    from skiff.errors import NotFoundError
    from skiff.registry import ModelRegistry

    args = run.get("arguments", {})
    run_id = args.get("run_id")
    spec = json.loads(args["spec"]) if isinstance(args.get("spec"), str) else args.get("spec") or {}
    summary: dict[str, Any] = {
        "pipeline": run["pipeline"], "status": run["status"], "duration_s": run["duration_s"],
        "steps": run["steps"], "error": run.get("error"), "run_id": run_id,
        "failed_step": run.get("failed_step"), "log_file": run.get("log_file"),
        "dataset": spec.get("name"), "validation": None, "registered": None, "gate_failed": False,
    }
    ingest_meta = _task_metadata(run, "ingest-op")
    validation = _validation_result(settings, spec.get("name"), ingest_meta.get("ingest_date"))
    if validation:
        summary["validation"] = validation
        summary["gate_failed"] = validation.get("status") == "failed"
    features_runs = _task_metadata(run, "features").get("runs") or {}
    summary["runs"] = {  # which lake runs validation and training read (skiff.lake.Lake.select_runs)
        "validated": (validation or {}).get("runs", []),
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
    if summary["gate_failed"] and summary["status"] == "SUCCESS":
        summary["status"] = "GATE_FAILED"
        summary["error"] = "validation gate failed: " + "; ".join(
            f"{a.get('feature')}: {a.get('anomaly')}" for a in validation.get("blocking", [])[:5])
    return summary


def _task_metadata(run: dict[str, Any], task: str) -> dict[str, Any]:
    """The output artifact metadata of one task of this local run (from kfp.local's run folder)."""
    import json
    from pathlib import Path

    if not run.get("run_dir"):
        return {}
    path = Path(run["run_dir"]) / task / "executor_output.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    found: dict[str, Any] = {}
    for artifacts in doc.get("artifacts", {}).values():
        for art in artifacts.get("artifacts", []):
            found.update(art.get("metadata", {}))
    return found


def _validation_result(settings, dataset: str | None, date: str | None) -> dict[str, Any] | None:
    from skiff.lake import Lake

    if not dataset or not date:
        return None
    lake = Lake.from_settings(settings)
    folder = ("validation", dataset, f"ingest_date={date}")
    if not lake.store.exists(*folder, "result.json"):
        return None
    result = lake.store.read_json(*folder, "result.json")
    anomalies = result.get("anomalies") or []
    return {
        "status": result.get("status"),
        "date": date,
        "blocking": [a for a in anomalies if a.get("severity") == "error"],
        "warnings": [a for a in anomalies if a.get("severity") != "error"],
        "drifted": [f for f, d in (result.get("drift") or {}).items() if isinstance(d, dict) and d.get("drifted")],
        "runs": result.get("runs") or [],
        "report_uri": lake.store.uri(*folder, "report.html"),
    }


def print_human_summary(summary: dict[str, Any], console) -> None:
    """A few lines for people: what ingestion kept, the validation verdict, the registered version."""
    reg = summary.get("registered")
    ing = summary.get("ingest") or {}
    counts = ing.get("counts") or {}
    if counts:
        reasons = ing.get("quarantine_reasons") or {}
        unchanged = " (input unchanged: the earlier run's partition is used)" if ing.get("status") == "unchanged" else ""
        console.print(
            "ingest: " + ", ".join(f"{k} {v}" for k, v in counts.items())
            + ("; quarantined because " + ", ".join(f"{k} ({v})" for k, v in reasons.items()) if reasons else "")
            + unchanged,
            highlight=False,
        )
    if summary.get("validation"):
        v = summary["validation"]
        console.print(f"validation: {v.get('status')} ({len(v.get('blocking', []))} blocking, "
                      f"{len(v.get('warnings', []))} warnings) — report {v.get('report_uri')}", highlight=False)
    runs = summary.get("runs") or {}
    if runs.get("validated") or runs.get("features"):
        def names(items: list[dict[str, Any]]) -> str:
            return ", ".join(f"{r.get('ingest_date')}/{r.get('run_id')}" for r in items) or "none"

        read = runs.get("features", [])
        console.print(f"runs: validated {names(runs.get('validated', []))}; features and training read "
                      f"{len(read)} ({'…, ' if len(read) > 3 else ''}{names(read[-3:])})", highlight=False)
        for note in runs.get("notes", []):
            console.print(f"note: {note}", highlight=False)
    if reg:
        m = reg.get("metrics", {})
        shown = ", ".join(f"{k}={m[k]:.3f}" for k in ("roc_auc", "pr_auc", "f1", "accuracy", "rmse", "mae", "r2")
                          if k in m)
        console.print(f"model [bold]{reg['name']}[/] version {reg['version']} "
                      f"({'champion' if reg['champion'] else 'candidate'}): {shown}", highlight=False)
        console.print(f"gate: {reg.get('gate_reason')}", highlight=False)
