"""Pipeline runs in MLflow tracking: one MLflow run per skiff run, found by its skiff run id.

Where runs go (:func:`tracking_uri`): the ``tracking_uri`` setting (an MLflow server the platform team
runs; credentials only from ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``/``TOKEN`` in the environment, a
Secret on a cluster, never logged); unset, a SQLite store next to a local root
(``sqlite:///<root>/mlflow.db``, artifacts in ``<root>/mlflow-artifacts``), so ``mlflow ui
--backend-store-uri`` shows local runs with no setup; unset with an object-store root, nowhere (SQLite
needs a local file, and a store on S3/ADLS is no place to open a database from several pods); ``off``,
nowhere.

Who logs: in the tabular pipeline the **register** step logs the whole successful run, from what it
holds anyway — the published version (metrics, CV table, gate record, data fingerprint, partitions,
code version, model card, evaluation report with its charts) and the model folder (training config,
search candidates). One step talks to MLflow rather than each step finding the run by its tag because
(a) only one pod then needs the tracking server and its Secret, (b) a retried or cached step cannot log
twice or leave half a run, (c) train and evaluate need no run id, and (d) kfp.local and a KFP cluster
run the same step, so both log the same way. A run that stops earlier is marked FAILED by every
pipeline's exit task (:func:`track_final_status`: its steps run inside one ``dsl.ExitHandler``, on a
cluster and under kfp.local), which creates the run when no step had logged it and records the failed
task and error KFP hands it; the validation gate step (which fails on purpose) records its own step and
reason first, and the exit task keeps them. KFP hands the exit task only the exit handler's group as the
failed task, with an empty or generic error, so on a cluster the exit task asks the Kubeflow Pipelines
API (the ``kfp_host`` setting) which step failed and why (:func:`kfp_failed_task`). For a local run the
run's summary fills in the failed step and its error from the run's log
(:func:`pipelines.local_runs.track_summary`): kfp.local tells the exit task neither. The image
and recommender register steps publish versions that hold everything their runs' records need, so a
tracking step after them (:mod:`components.track.component`) logs :func:`version_record` of the version,
which reads it by flavor.

Logging never fails a pipeline: every call here returns None instead of raising, after
:data:`ATTEMPTS` tries with MLflow's own HTTP retries capped (:data:`REQUEST_TIMEOUT_S` per request), and
logs one warning naming the (redacted) URI. Nothing is lost: the record that could not be logged is kept
in the lake (``<lake>/tracking/pending/<run id>.json``, :func:`keep_pending`) and ``skiff tracking sync``
(:func:`sync_pending`) logs it later.

A run is found again by its ``skiff.run_id`` tag in the experiment (the model's name by default), so
logging is idempotent: params and metrics already present are not sent again, trials are found by their
``skiff.trial`` tag, and artifacts overwrite themselves.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import json
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from skiff.redact import redact_text, redact_url
from skiff.uri import is_remote, local_path

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from skiff.config import Settings
    from skiff.registry import ModelRegistry

__all__ = ["OFF", "DB_FILE", "ARTIFACTS_FOLDER", "RUN_ID_TAG", "PARENT_TAG", "TRIAL_TAG", "ATTEMPTS", "REQUEST_TIMEOUT_S",
           "Trial", "RunRecord", "tracking_uri", "local_store_uri", "experiment_name", "ui_command",
           "spec_fingerprint", "report_images", "version_record", "failure_record", "log_run", "log_failure",
           "track_version", "track_failure", "track_final_status", "kfp_failed_task", "KFP_TIMEOUT_S",
           "KFP_TOKEN_ENV", "KFP_TOKEN_PATH", "SUCCEEDED_STATES", "PENDING_FOLDER", "record_document", "record_from_document",
           "keep_pending", "pending_records", "sync_pending"]

log = logging.getLogger(__name__)

#: The ``tracking_uri`` value that turns tracking off.
OFF = "off"
#: The SQLite store of a local root, and the folder of its artifacts (both under the root).
DB_FILE = "mlflow.db"
ARTIFACTS_FOLDER = "mlflow-artifacts"
#: Tags a run and its trials are found by (a trial has its parent's skiff run id as PARENT_TAG, never
#: RUN_ID_TAG: a search for the run must not find its trials).
RUN_ID_TAG = "skiff.run_id"
PARENT_TAG = "skiff.parent_run_id"
TRIAL_TAG = "skiff.trial"
#: Tries per logging call, the wait between them, and the timeout of one HTTP request (MLflow's own
#: retries are turned off while skiff logs: its default backs off for minutes on a dead server).
ATTEMPTS = 2
RETRY_WAIT_S = 0.5
REQUEST_TIMEOUT_S = 5
#: MLflow's limits: a param value, a tag value, items per batch call.
_PARAM_MAX = 6000
_TAG_MAX = 8000
_BATCH = {"metrics": 1000, "params": 100, "tags": 100}
_KEY_BAD = re.compile(r"[^A-Za-z0-9_\-. /:]")
_IMAGE = re.compile(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')

#: The final states of a pipeline run (KFP's ``PipelineTaskFinalStatus.state``: kfp.local and KFP's task
#: states say SUCCEEDED, older KFP backends the MLMD execution state) that mean it succeeded.
SUCCEEDED_STATES = frozenset({"SUCCEEDED", "SUCCESS", "COMPLETE", "CACHED"})
#: The exit handler's own group, which KFP names as the "failed task" (it is not a step of the run).
_EXIT_GROUP = re.compile(r"exit-handler(-\d+)?")
#: How long the exit task waits for the Kubeflow Pipelines API to say which step failed (one request, no
#: retries: the run is over, and a slow answer only costs the step's name).
KFP_TIMEOUT_S = 5.0
#: Where a pod finds its Kubeflow Pipelines service-account token on multi-user Kubeflow (the variable and
#: the default path kfp's own client reads); sent as a bearer token when the file is there.
KFP_TOKEN_ENV = "KF_PIPELINES_SA_TOKEN_PATH"
KFP_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"
#: Task names in KFP's run details that are not steps of the run: the root DAG, and the driver and
#: executor nodes of KFP's Argo workflow (the step's own node carries its name).
_KFP_NOT_A_STEP = re.compile(r"root|executor|.*-driver|exit-handler(-\d+)?")

#: Where records that could not be logged are kept, under the lake (``<lake>/tracking/pending/<run id>.json``).
PENDING_FOLDER = "tracking/pending"

T = TypeVar("T")


@dataclass
class Trial:
    """One candidate of a hyper-parameter search (or of the automatic estimator choice): a nested run."""

    name: str
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class RunRecord:
    """Everything one MLflow run of a skiff run holds; plain values, built without MLflow."""

    run_id: str
    pipeline: str
    experiment: str
    #: FINISHED or FAILED (MLflow run statuses)
    status: str = "FINISHED"
    params: dict[str, str] = field(default_factory=dict)
    #: (key, value, step): per-fold CV metrics have the fold as step, the rest step 0
    metrics: list[tuple[str, float, int]] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    #: artifact path (may hold folders) -> content
    artifacts: dict[str, bytes] = field(default_factory=dict)
    trials: list[Trial] = field(default_factory=list)
    #: milliseconds since the epoch, one for the whole record, so a retried call sends identical metrics
    timestamp: int = field(default_factory=lambda: int(time.time() * 1000))
    #: tags set only on a run that has none of that key yet (the exit task's guess at the failed step never
    #: replaces what the step that failed, or the local run's summary, recorded)
    keep_tags: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# where


def local_store_uri(root: str | Path) -> str:
    """The SQLite tracking store of a local root: ``sqlite:///<absolute root>/mlflow.db``."""
    return f"sqlite:///{local_path(root, 'root') / DB_FILE}"


def tracking_uri(settings: Settings, override: str = "") -> str | None:
    """Where runs are logged: ``override`` (a pipeline's ``tracking_uri`` argument), else the
    ``tracking_uri`` setting, else the local root's SQLite store; None for ``off`` and for an
    object-store root without a configured URI."""
    uri = (override or settings.tracking_uri or "").strip()
    if uri.lower() == OFF:
        return None
    if uri:
        return uri
    if is_remote(settings.root):
        return None
    return local_store_uri(settings.root)


def experiment_name(settings: Settings, model_name: str) -> str:
    """The MLflow experiment of a model's runs: the ``tracking_experiment`` setting, else the model's name."""
    return settings.tracking_experiment or model_name or "skiff"


def ui_command(uri: str) -> str:
    """How to see the runs: ``mlflow ui --backend-store-uri <uri>`` for a local store, else the server."""
    if uri.startswith(("http://", "https://", "databricks")):
        return f"open {redact_url(uri)} (MLflow tracking server)"
    return f"mlflow ui --backend-store-uri {uri}"


def _artifact_location(uri: str) -> str | None:
    """Artifacts of a local SQLite store's experiments: ``<root>/mlflow-artifacts`` (MLflow's default is
    ``./mlruns`` of whatever folder the step runs in); a server decides for itself (None)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / ARTIFACTS_FOLDER).as_uri()
    return None


# --------------------------------------------------------------------------------------------------
# what


def spec_fingerprint(spec: Mapping[str, Any]) -> str:
    """A content hash of a dataset spec (key order and formatting do not count)."""
    text = json.dumps(dict(spec), sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def report_images(page: str) -> dict[str, bytes]:
    """The PNG charts an evaluation report embeds (``components.evaluate.logic.report`` writes each as
    ``<img alt="NAME" src="data:image/png;base64,...">``), by name: roc, pr, confusion_matrix ..."""
    return {html.unescape(name): base64.b64decode(data) for name, data in _IMAGE.findall(page)}


def _text(value: Any, limit: int = _PARAM_MAX) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _finite(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(float(value)):
        return float(value)
    return None


def _lake_runs(runs: Any) -> list[str]:
    """``<ingest date>/<run id>`` of each lake run training read (the features step's ``runs`` metadata)."""
    items = runs.get("runs", []) if isinstance(runs, Mapping) else runs if isinstance(runs, list) else []
    return [f"{r.get('ingest_date')}/{r.get('run_id')}" for r in items if isinstance(r, Mapping)]


def _trials(model_dir: Path, run_id: str) -> list[Trial]:
    """The candidates of the model folder's search table (``search.csv``), each a nested run."""
    from skiff.modeling import SEARCH_FILE

    path = model_dir / SEARCH_FILE
    if not path.is_file():
        return []
    import pandas as pd

    table = pd.read_csv(path)
    trials = []
    for row in table.to_dict(orient="records"):
        candidate = str(row.get("candidate"))
        try:
            chosen = json.loads(str(row.get("params") or "{}"))
        except ValueError:
            chosen = {}
        params = {"estimator": str(row.get("estimator")), **{f"hp.{k}": _text(v) for k, v in chosen.items()}}
        metrics = {str(k): v for k, v in ((k, _finite(v)) for k, v in row.items()
                                          if k not in ("candidate", "estimator", "params")) if v is not None}
        trials.append(Trial(name=f"{run_id}/trial-{candidate}", params=params, metrics=metrics,
                            tags={TRIAL_TAG: candidate, PARENT_TAG: run_id}))
    return trials


def version_record(
    registry: ModelRegistry,
    name: str,
    version: int,
    *,
    run_id: str,
    pipeline: str,
    experiment: str,
    model_dir: str | Path | None = None,
    validation: Mapping[str, Any] | None = None,
    lake_runs: Any = None,
    spec: Mapping[str, Any] | None = None,
) -> RunRecord:
    """The MLflow run of a successful pipeline run, from the version it registered (by its flavor: a
    tabular model, an image classifier, a recommender).

    ``model_dir`` is the trained model folder (its ``train.json`` holds the training config, its
    ``search.csv`` the search candidates: the nested trials); ``validation`` the statistics artifact's
    metadata (status, partition, statistics URI: the validation report sits beside it); ``lake_runs`` the
    features step's ``runs`` (which lake runs training read) — the tabular register step's; ``spec`` the
    run's dataset spec (an image or recommender run's spec fingerprint).
    """

    mv = registry.get(name, version)
    if mv.metadata.flavor == "tensorflow":
        return _image_record(registry, mv, run_id=run_id, pipeline=pipeline, experiment=experiment, spec=spec)
    if mv.metadata.flavor == "recommender":
        return _recs_record(registry, mv, run_id=run_id, pipeline=pipeline, experiment=experiment, spec=spec)
    return _tabular_record(registry, mv, run_id=run_id, pipeline=pipeline, experiment=experiment,
                           model_dir=model_dir, validation=validation, lake_runs=lake_runs)


def _common(mv: Any, run_id: str, pipeline: str) -> tuple[dict[str, Any], list[tuple[str, float, int]],
                                                          dict[str, str]]:
    """What every pipeline's run holds: the version's test metrics and gate, its data fingerprint, and the
    tags (run id, pipeline, skiff version, git revision, champion/candidate, gate reason)."""
    m = mv.metadata
    params: dict[str, Any] = {"problem_type": m.problem_type, "estimator": m.estimator,
                              "data_fingerprint": m.data_fingerprint, "dataset": m.dataset.get("name")
                              or m.dataset.get("dataset"), "model.name": m.name, "model.version": mv.version}
    metrics: list[tuple[str, float, int]] = [(f"test_{k}", v, 0) for k, v in
                                             ((k, _finite(x)) for k, x in m.metrics.items()) if v is not None]
    gate = m.gate
    champion = gate.get("champion")
    for key in ("promote", "margin", "improvement", "delta", "challenger", "champion"):
        value = gate.get(key)
        if key == "champion" and isinstance(champion, Mapping):  # the image gate: the champion's own scores
            value = next((champion[k] for k in ("top1_accuracy", "score") if k in champion), None)
        if (v := _finite(value)) is not None:
            metrics.append((f"gate_{key}", v, 0))
    code = m.code_version
    tags = {
        RUN_ID_TAG: run_id, "skiff.pipeline": pipeline, "skiff.version": code.get("skiff", ""),
        "skiff.model": m.name, "skiff.model_version": str(mv.version),
        "skiff.role": "champion" if mv.champion else "candidate",
        "skiff.model_uri": redact_url(mv.uri), "skiff.gate_reason": str(gate.get("reason") or ""),
        "skiff.gate_metric": str(gate.get("metric") or ""), "skiff.flavor": m.flavor,
    }
    if code.get("git_commit"):
        tags["skiff.git_commit"] = tags["mlflow.source.git.commit"] = code["git_commit"]
    return params, metrics, tags


def _record(run_id: str, pipeline: str, experiment: str, params: Mapping[str, Any],
            metrics: list[tuple[str, float, int]], tags: dict[str, str], artifacts: dict[str, bytes],
            trials: list[Trial] | None = None) -> RunRecord:
    return RunRecord(run_id=run_id, pipeline=pipeline, experiment=experiment,
                     params={k: _text(v) for k, v in params.items() if v is not None}, metrics=metrics, tags=tags,
                     artifacts=artifacts, trials=trials or [])


def _version_file(registry: ModelRegistry, mv: Any, file: str) -> bytes | None:
    if file not in mv.metadata.files:
        return None
    return registry.store.read_bytes(mv.metadata.name, str(mv.version), file)


def _image_record(registry: ModelRegistry, mv: Any, *, run_id: str, pipeline: str, experiment: str,
                  spec: Mapping[str, Any] | None) -> RunRecord:
    """An image classifier's run: the training config (backbone, weights, epochs ...), the test metrics,
    each phase's accuracies and per-epoch history (``training.json``), the gate; the evaluation report, its
    confusion matrix and the per-class scores as artifacts."""
    m = mv.metadata
    params, metrics, tags = _common(mv, run_id, pipeline)
    params.update({str(k): v for k, v in m.params.items()})
    params.update({"classes": m.classes, "spec_fingerprint": spec_fingerprint(spec) if spec else None,
                   "dataset.run_id": m.dataset.get("run_id"), "dataset.ingest_date": m.dataset.get("ingest_date"),
                   "dataset.counts": m.dataset.get("counts"), "device": m.extra.get("device")})
    for phase, values in (m.extra.get("phases") or {}).items():
        for key, value in (values or {}).items():
            if (v := _finite(value)) is not None:
                metrics.append((f"{phase}_{key}", v, 0))
    artifacts: dict[str, bytes] = {}
    training = _version_file(registry, mv, "training.json")
    if training is not None:
        artifacts["training.json"] = training
        history = json.loads(training).get("history") or {}
        for phase, series in history.items():
            for key, values in (series or {}).items():
                for epoch, value in enumerate(values or []):
                    if (v := _finite(value)) is not None:
                        metrics.append((f"{phase}_epoch_{key}", v, epoch))
    for file, path in (("report.html", "evaluation/report.html"),
                       ("confusion_matrix.png", "evaluation/confusion_matrix.png")):
        if (data := _version_file(registry, mv, file)) is not None:
            artifacts[path] = data
    if m.extra.get("per_class"):
        artifacts["evaluation/per_class.json"] = json.dumps(m.extra["per_class"], indent=2, default=str).encode()
    return _record(run_id, pipeline, experiment, params, metrics, tags, artifacts)


def _recs_record(registry: ModelRegistry, mv: Any, *, run_id: str, pipeline: str, experiment: str,
                 spec: Mapping[str, Any] | None) -> RunRecord:
    """A recommender's run: the chosen model and its parameters (factors, regularization ...), the
    configuration (k, held-out days, event weights ...), every candidate's held-out metrics, the lift over
    popularity, the catalogue index recall, the gate; ``evaluation.json`` as an artifact."""
    m = mv.metadata
    recs = m.extra.get("recs") or {}
    params, metrics, tags = _common(mv, run_id, pipeline)
    params.update({f"hp.{k}": v for k, v in m.params.items()})
    params.update({f"config.{k}": v for k, v in (recs.get("config") or {}).items()})
    params.update({"k": recs.get("k"), "spec_fingerprint": spec_fingerprint(spec) if spec else None,
                   "dataset.run_id": m.dataset.get("run_id"), "dataset.ingest_date": m.dataset.get("ingest_date"),
                   "dataset.lake_runs": m.dataset.get("runs"), "dataset.rows": m.dataset.get("rows"),
                   "split": recs.get("split"), "catalogue": recs.get("catalogue")})
    for kind, values in (recs.get("models") or {}).items():
        for key, value in (values or {}).items():
            if (v := _finite(value)) is not None:
                metrics.append((f"{kind}_{key}", v, 0))
    for kind, values in (recs.get("lift") or {}).items():
        for key, value in (values or {}).items():
            if (v := _finite(value)) is not None:
                metrics.append((f"lift_{kind}_{key}", v, 0))
    for key, value in (recs.get("ann") or {}).items():
        if (v := _finite(value)) is not None:
            metrics.append((f"ann_{key}", v, 0))
    artifacts: dict[str, bytes] = {}
    if (data := _version_file(registry, mv, "evaluation.json")) is not None:
        artifacts["evaluation.json"] = data
    artifacts["gate.json"] = json.dumps(m.gate, indent=2, default=str).encode()
    return _record(run_id, pipeline, experiment, params, metrics, tags, artifacts)


def _tabular_record(registry: ModelRegistry, mv: Any, *, run_id: str, pipeline: str, experiment: str,
                    model_dir: str | Path | None, validation: Mapping[str, Any] | None,
                    lake_runs: Any) -> RunRecord:
    from skiff.modeling import TRAIN_INFO_FILE
    from skiff.registry import CARD_FILE
    from skiff.validation import REPORT_FILE

    m = mv.metadata
    name = m.name
    folder = Path(model_dir) if model_dir else None
    info: dict[str, Any] = {}
    if folder is not None and (folder / TRAIN_INFO_FILE).is_file():
        info = json.loads((folder / TRAIN_INFO_FILE).read_text())
    config = info.get("config") or {}
    search = config.get("search") or {}
    spec = m.dataset.get("spec") or {}
    params, common_metrics, tags = _common(mv, run_id, pipeline)
    params.update({
        "target": m.target,
        "scoring": m.extra.get("scoring") or info.get("scoring"),
        "search.method": search.get("method", "none"), "search.space": search.get("space", {}),
        "search.n_iter": search.get("n_iter"),
        **{f"hp.{k}": v for k, v in m.params.items()},
        **{f"config.{k}": v for k, v in config.items() if k not in ("search", "params", "estimator")},
        "spec_fingerprint": spec_fingerprint(spec), "dataset": m.dataset.get("name"),
        "dataset.partitions": m.dataset.get("partitions", []),
        "dataset.rows": m.dataset.get("rows"), "dataset.lake_runs": _lake_runs(lake_runs),
    })
    metrics: list[tuple[str, float, int]] = []
    for row in m.cv:
        fold = str(row.get("fold"))
        for key, value in row.items():
            v = _finite(value)
            if key == "fold" or v is None:
                continue
            if fold.isdigit():
                metrics.append((f"cv_{key}", v, int(fold)))
            elif fold in ("mean", "std"):
                metrics.append((f"cv_{key}_{fold}", v, 0))
    metrics.extend(common_metrics)
    if (t := _finite(m.threshold)) is not None:
        metrics.append(("threshold", t, 0))
    validation = dict(validation or {})
    stats_uri = validation.get("uri") or m.statistics_uri
    report_uri = f"{str(stats_uri).rsplit('/', 1)[0]}/{REPORT_FILE}" if stats_uri else None
    if report_uri:
        tags["skiff.validation_report"] = redact_url(report_uri)
    if validation.get("status"):
        tags["skiff.validation_status"] = str(validation["status"])
    artifacts: dict[str, bytes] = {}
    store = registry.store
    if CARD_FILE in m.files:
        artifacts[CARD_FILE] = store.read_bytes(name, str(mv.version), CARD_FILE)
    if "report.html" in m.files:
        page = store.read_bytes(name, str(mv.version), "report.html")
        artifacts["evaluation/report.html"] = page
        for chart, png in report_images(page.decode("utf-8", errors="replace")).items():
            artifacts[f"evaluation/{chart}.png"] = png
    artifacts["validation.json"] = json.dumps({
        "status": validation.get("status"), "report_uri": report_uri and redact_url(report_uri),
        "statistics_uri": stats_uri and redact_url(str(stats_uri)), "ingest_date": validation.get("ingest_date"),
        "drifted": validation.get("drifted"), "blocking": validation.get("blocking", []),
    }, indent=2).encode()
    return _record(run_id, pipeline, experiment, params, metrics, tags, artifacts,
                   _trials(folder, run_id) if folder is not None else [])


def failure_record(*, run_id: str, pipeline: str, experiment: str, step: str | None, reason: str,
                   params: Mapping[str, Any] | None = None, tags: Mapping[str, str] | None = None) -> RunRecord:
    """The MLflow run of a pipeline run that stopped: FAILED, with the step and the reason (redacted)."""
    return RunRecord(
        run_id=run_id, pipeline=pipeline, experiment=experiment, status="FAILED",
        params={k: _text(v) for k, v in (params or {}).items() if v is not None},
        tags={RUN_ID_TAG: run_id, "skiff.pipeline": pipeline, "skiff.failed_step": step or "unknown",
              "skiff.error": _text(redact_text(reason), _TAG_MAX), **(tags or {})},
    )


# --------------------------------------------------------------------------------------------------
# logging (never raises)


def log_run(uri: str | None, record: RunRecord, *, keep: str | None = None,
            storage_options: Mapping[str, Any] | None = None) -> str | None:
    """Log ``record`` to the store at ``uri`` (None: tracking is off); the MLflow run id, or None when
    it could not be logged (a warning, never an exception). ``keep``: a lake URI where a record that
    could not be logged is kept as a pending record (:func:`keep_pending`) for :func:`sync_pending`."""
    if not uri:
        return None
    logged = _guarded(uri, f"log run {record.run_id}", lambda client: _log(client, uri, record))
    if logged is None and keep:
        keep_pending(keep, uri, record, storage_options=storage_options)
    return logged


def log_failure(uri: str | None, *, keep: str | None = None, storage_options: Mapping[str, Any] | None = None,
                **kwargs: Any) -> str | None:
    """:func:`failure_record` logged with :func:`log_run`; never raises, even on a bad argument."""
    try:
        record = failure_record(**kwargs)
    except Exception as e:  # tracking never fails a pipeline
        log.warning("experiment tracking: could not record a failed run (%s: %s)", type(e).__name__, e)
        return None
    return log_run(uri, record, keep=keep, storage_options=storage_options)


# --------------------------------------------------------------------------------------------------
# pending records: what could not be logged, kept in the lake and replayed later


def record_document(record: RunRecord) -> dict[str, Any]:
    """``record`` as a JSON document (artifacts base64)."""
    return {
        "run_id": record.run_id, "pipeline": record.pipeline, "experiment": record.experiment,
        "status": record.status, "params": record.params,
        "metrics": [[k, v, step] for k, v, step in record.metrics], "tags": record.tags,
        "artifacts": {k: base64.b64encode(v).decode() for k, v in record.artifacts.items()},
        "trials": [{"name": t.name, "params": t.params, "metrics": t.metrics, "tags": t.tags} for t in record.trials],
        "timestamp": record.timestamp, "keep_tags": list(record.keep_tags),
    }


def record_from_document(doc: Mapping[str, Any]) -> RunRecord:
    """The record :func:`record_document` wrote (a ValueError when it is not one)."""
    try:
        return RunRecord(
            run_id=str(doc["run_id"]), pipeline=str(doc["pipeline"]), experiment=str(doc["experiment"]),
            status=str(doc.get("status") or "FINISHED"),
            params={str(k): str(v) for k, v in dict(doc.get("params") or {}).items()},
            metrics=[(str(k), float(v), int(step)) for k, v, step in doc.get("metrics") or []],
            tags={str(k): str(v) for k, v in dict(doc.get("tags") or {}).items()},
            artifacts={str(k): base64.b64decode(v) for k, v in dict(doc.get("artifacts") or {}).items()},
            trials=[Trial(name=str(t["name"]), params=dict(t.get("params") or {}),
                          metrics={str(k): float(v) for k, v in dict(t.get("metrics") or {}).items()},
                          tags=dict(t.get("tags") or {})) for t in doc.get("trials") or []],
            timestamp=int(doc.get("timestamp") or time.time() * 1000),
            keep_tags=[str(k) for k in doc.get("keep_tags") or []],
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"not a pending tracking record: {type(e).__name__}: {e}") from e


def _pending_store(lake_uri: str, storage_options: Mapping[str, Any] | None = None) -> Any:
    from skiff.storage import Store

    return Store(lake_uri, dict(storage_options) if storage_options else None).child(*PENDING_FOLDER.split("/"))


def keep_pending(lake_uri: str, uri: str, record: RunRecord, *,
                 storage_options: Mapping[str, Any] | None = None) -> str | None:
    """Keep a record that could not be logged as ``<lake>/tracking/pending/<run id>.json`` (with the
    tracking URI it was meant for, credentials removed); its URI, or None (a warning). Never raises."""
    try:
        name = f"{_safe_tag_value(record.run_id)}.json"
        doc = {"tracking_uri": redact_url(uri), "kept_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "record": record_document(record)}
        where = str(_pending_store(lake_uri, storage_options).write_json(doc, name))
    except Exception as e:  # tracking never fails a pipeline
        log.warning("experiment tracking: could not keep run %s for a later `skiff tracking sync` (%s: %s)",
                    record.run_id, type(e).__name__, redact_text(str(e))[:300])
        return None
    log.warning("experiment tracking: run %s is kept at %s; `skiff tracking sync` logs it once the tracking "
                "server answers", record.run_id, redact_url(where))
    return where


def pending_records(lake_uri: str, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """The run ids of the records kept in the lake, oldest name first."""
    names = _pending_store(lake_uri, storage_options).listdir()
    return sorted(n[: -len(".json")] for n in names if n.endswith(".json"))


def sync_pending(lake_uri: str, uri: str | None, *, storage_options: Mapping[str, Any] | None = None,
                 run_ids: list[str] | None = None) -> dict[str, Any]:
    """Log the kept records to ``uri`` (None: the URI each was kept for) and remove each one logged.
    Idempotent: a run already in the store is found by its run id and completed, never logged twice.
    Returns ``{"logged": [{run_id, mlflow_run_id, tracking_uri}], "failed": [{run_id, reason}]}``."""
    store = _pending_store(lake_uri, storage_options)
    wanted = pending_records(lake_uri, storage_options)
    if run_ids:
        missing = sorted(set(run_ids) - set(wanted))
        if missing:
            from skiff.errors import NotFoundError

            raise NotFoundError(f"no pending tracking record for run(s) {', '.join(missing)} in "
                                f"{redact_url(store.uri())}")
        wanted = [r for r in wanted if r in run_ids]
    logged: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for run_id in wanted:
        name = f"{run_id}.json"
        try:
            doc = store.read_json(name)
            record = record_from_document(doc["record"])
        except (ValueError, KeyError, TypeError) as e:
            failed.append({"run_id": run_id, "reason": str(e)[:300]})
            continue
        target = uri or str(doc.get("tracking_uri") or "")
        if not target or target.lower() == OFF:
            failed.append({"run_id": run_id, "reason": "no tracking URI: set tracking_uri or give --tracking-uri"})
            continue
        mlflow_run = log_run(target, record)
        if mlflow_run is None:
            failed.append({"run_id": run_id, "reason": f"{redact_url(target)} did not answer (see the warning)"})
            continue
        store.delete(name)
        logged.append({"run_id": run_id, "mlflow_run_id": mlflow_run, "tracking_uri": redact_url(target)})
    return {"logged": logged, "failed": failed}


@contextlib.contextmanager
def _bounded_http() -> Iterator[None]:
    """MLflow's HTTP retries off and its request timeout short while skiff logs (unless the user set them)."""
    wanted = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT_S)}
    added = [k for k in wanted if k not in os.environ]
    os.environ.update({k: wanted[k] for k in added})
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def _guarded(uri: str, what: str, action: Callable[[MlflowClient], T]) -> T | None:
    last: Exception | None = None
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with _bounded_http():
                from mlflow import MlflowClient

                return action(MlflowClient(tracking_uri=uri))
        except Exception as e:  # tracking never fails a pipeline: any failure is a warning
            last = e
            if attempt < ATTEMPTS:
                time.sleep(RETRY_WAIT_S)
    message = redact_text(f"{type(last).__name__}: {last}").splitlines()[0][:300] if last else ""
    log.warning("experiment tracking: could not %s at %s after %d attempts (%s); the pipeline goes on, and "
                "its record stays in the registry and the lake", what, redact_url(uri), ATTEMPTS, message)
    return None


def _key(key: str) -> str:
    return _KEY_BAD.sub("_", key)[:250]


def _experiment_id(client: MlflowClient, uri: str, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(found.experiment_id)
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name, artifact_location=_artifact_location(uri)))
    except Exception:  # created meanwhile by a parallel step
        again = client.get_experiment_by_name(name)
        if again is None:
            raise
        return str(again.experiment_id)


def _find(client: MlflowClient, experiment_id: str, tags: Mapping[str, str]) -> Any:
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = client.search_runs([experiment_id], filter_string=query, max_results=1)
    return runs[0] if runs else None


def _safe_tag_value(value: str) -> str:
    """A tag value usable in a search filter (skiff run ids are names; anything else is refused)."""
    if not re.fullmatch(r"[A-Za-z0-9_.:/\-]+", value):
        raise ValueError(f"run id {value[:80]!r} cannot be searched for in MLflow")
    return value


def _log_batch(client: MlflowClient, mlflow_run: Any, params: Mapping[str, str],
               metrics: list[tuple[str, float, int]], tags: Mapping[str, str], timestamp: int) -> None:
    from mlflow.entities import Metric, Param, RunTag

    have_params = dict(mlflow_run.data.params)
    have_metrics = set(mlflow_run.data.metrics)
    run_id = mlflow_run.info.run_id
    ps = [Param(_key(k), v) for k, v in params.items() if _key(k) not in have_params]
    ms = [Metric(_key(k), v, timestamp, step) for k, v, step in metrics if _key(k) not in have_metrics]
    ts = [RunTag(_key(k), _text(v, _TAG_MAX)) for k, v in tags.items()]
    for i in range(0, len(ps), _BATCH["params"]):
        client.log_batch(run_id, params=ps[i:i + _BATCH["params"]])
    for i in range(0, len(ms), _BATCH["metrics"]):
        client.log_batch(run_id, metrics=ms[i:i + _BATCH["metrics"]])
    for i in range(0, len(ts), _BATCH["tags"]):
        client.log_batch(run_id, tags=ts[i:i + _BATCH["tags"]])


def _log(client: MlflowClient, uri: str, record: RunRecord) -> str:
    experiment_id = _experiment_id(client, uri, record.experiment)
    key = {RUN_ID_TAG: _safe_tag_value(record.run_id)}
    run = _find(client, experiment_id, key) or client.create_run(experiment_id, run_name=record.run_id, tags=key)
    have = dict(run.data.tags)
    tags = {k: v for k, v in record.tags.items() if not (k in record.keep_tags and _key(k) in have)}
    _log_batch(client, run, record.params, record.metrics, tags, record.timestamp)
    if record.artifacts:
        with tempfile.TemporaryDirectory() as tmp:
            for name, data in record.artifacts.items():
                path = Path(tmp) / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            client.log_artifacts(run.info.run_id, tmp)
    for trial in record.trials:
        wanted = {"mlflow.parentRunId": run.info.run_id, TRIAL_TAG: _safe_tag_value(trial.tags[TRIAL_TAG])}
        child = _find(client, experiment_id, wanted) or client.create_run(
            experiment_id, run_name=trial.name, tags={**wanted, PARENT_TAG: record.run_id})
        _log_batch(client, child, trial.params, [(k, v, 0) for k, v in trial.metrics.items()], trial.tags,
                   record.timestamp)
        client.set_terminated(child.info.run_id, "FINISHED")
    client.set_terminated(run.info.run_id, record.status)
    return str(run.info.run_id)


def track_version(settings: Settings, override: str, *, registry_uri: str, name: str, version: int, run_id: str,
                  pipeline: str, lake_uri: str | None = None, **record: Any) -> str | None:
    """What a pipeline's last step calls after publishing: the run's record (:func:`version_record`, with
    ``record``'s keyword arguments) logged where :func:`tracking_uri` says, kept in the lake (``lake_uri``,
    else the settings') when that fails; the MLflow run id, or None (tracking off, or a warning). Never
    raises."""
    uri = tracking_uri(settings, override)
    if uri is None or not run_id:
        return None
    try:
        from skiff.registry import ModelRegistry
        from skiff.storage import Store

        registry = ModelRegistry(Store(registry_uri, settings.storage_options))
        built = version_record(registry, name, version, run_id=run_id, pipeline=pipeline,
                               experiment=experiment_name(settings, name), **record)
    except Exception as e:  # tracking never fails a pipeline
        log.warning("experiment tracking: could not build the record of run %s (%s: %s)", run_id,
                    type(e).__name__, redact_text(str(e))[:300])
        return None
    return log_run(uri, built, keep=lake_uri or _lake_of(settings), storage_options=settings.storage_options)


def _lake_of(settings: Settings) -> str | None:
    try:
        return settings.lake_uri
    except Exception:  # tracking never fails a pipeline
        return None


def track_failure(override: str, *, run_id: str, pipeline: str, model_name: str, step: str | None, reason: str,
                  settings: Settings | None = None, params: Mapping[str, Any] | None = None,
                  tags: Mapping[str, str] | None = None, lake_uri: str | None = None) -> str | None:
    """Mark the skiff run ``run_id`` failed at ``step`` with ``reason`` in its model's experiment, where
    :func:`tracking_uri` says (``settings``: this process's by default), kept in the lake (``lake_uri``, else
    the settings') when that fails; the MLflow run id or None. Never raises: a step that fails keeps its own
    error."""
    if not run_id:
        return None
    try:
        if settings is None:
            from skiff.config import load_settings

            settings = load_settings()
        uri = tracking_uri(settings, override)
        experiment = experiment_name(settings, model_name)
    except Exception as e:  # tracking never fails a pipeline
        log.warning("experiment tracking: could not record the failure of run %s (%s: %s)", run_id,
                    type(e).__name__, redact_text(str(e))[:300])
        return None
    return log_failure(uri, keep=lake_uri or _lake_of(settings), storage_options=settings.storage_options,
                       run_id=run_id, pipeline=pipeline, experiment=experiment, step=step, reason=reason,
                       params=params, tags=tags)


def track_final_status(override: str, *, state: str, run_id: str, pipeline: str, model_name: str,
                       task: str | None = None, error_message: str | None = None, error_code: Any = None,
                       settings: Settings | None = None, lake_uri: str | None = None, kfp_run_id: str = "",
                       kfp_host: str | None = None) -> str | None:
    """What a pipeline's exit task calls with KFP's final status of the run: nothing when it succeeded
    (:data:`SUCCEEDED_STATES`: its own step logged it); otherwise the skiff run ``run_id`` is marked FAILED
    in its model's experiment, the run record created when no step logged it, with the failed task
    (``task``, unless it is the exit handler's group, which KFP names) and ``error_message`` (else the final
    state) as step and reason. When KFP named only the group and the run's KFP id (``kfp_run_id``) and an
    endpoint (``kfp_host``, else the ``kfp_host`` setting) are known, the Kubeflow Pipelines API says
    which step failed and why (:func:`kfp_failed_task`); when it does not answer, the step is ``unknown``.
    A step or summary that already recorded a step and reason keeps them (:attr:`RunRecord.keep_tags`),
    and a record already kept in the lake for this run is not replaced. The MLflow run id or None; never
    raises."""
    if not run_id or str(state or "").upper() in SUCCEEDED_STATES:
        return None
    try:
        if settings is None:
            from skiff.config import load_settings

            settings = load_settings()
        uri = tracking_uri(settings, override)
        if uri is None:
            return None
        step = task if task and not _EXIT_GROUP.fullmatch(task) else None
        reason = str(error_message or "").strip()
        tags = {"skiff.final_state": str(state or "")}
        host = settings.kfp_host if kfp_host is None else kfp_host
        if kfp_run_id:
            tags["skiff.kfp_run_id"] = kfp_run_id
        if step is None and kfp_run_id and host:
            found = kfp_failed_task(host, kfp_run_id)
            if found is not None:
                step, reason = found[0], found[1] or reason
        reason = reason or f"the run ended {state or 'without a final state'}"
        if isinstance(error_code, int | float) and not isinstance(error_code, bool) and error_code:
            tags["skiff.error_code"] = str(int(error_code))
        record = failure_record(run_id=run_id, pipeline=pipeline, experiment=experiment_name(settings, model_name),
                                step=step, reason=reason, tags=tags)
        record.keep_tags = ["skiff.failed_step", "skiff.error"]
        keep = lake_uri or _lake_of(settings)
    except Exception as e:  # tracking never fails a pipeline
        log.warning("experiment tracking: could not record the final status of run %s (%s: %s)", run_id,
                    type(e).__name__, redact_text(str(e))[:300])
        return None
    if keep and _has_pending(keep, run_id, settings.storage_options):
        keep = None  # the step that failed kept its own, fuller record
    return log_run(uri, record, keep=keep, storage_options=settings.storage_options)


def kfp_failed_task(host: str, kfp_run_id: str, *, timeout: float | None = None) -> tuple[str, str] | None:
    """The step of Kubeflow Pipelines run ``kfp_run_id`` that failed, and its error message ("" when KFP
    gives none), as the API at ``host`` tells them (``GET /apis/v2beta1/runs/{id}``, read into
    kfp-server-api's models): of the run's task details whose state is FAILED, the first by end time that is
    a step (not the root DAG, the exit handler's group or one of KFP's driver and executor nodes); its
    ``error.message``, else that of a failed task under it, else the run's. One request of at most
    ``timeout`` seconds (:data:`KFP_TIMEOUT_S` by default) to connect and as many to read, with the pod's KFP service-account token when it has one
    (:data:`KFP_TOKEN_ENV`). None, with a warning, when the API does not answer, refuses or names no failed
    step; never raises."""
    if not host or not kfp_run_id:
        return None
    try:
        run = _get_kfp_run(host, kfp_run_id, timeout or KFP_TIMEOUT_S)
        found = _failed_step(run)
    except Exception as e:  # the exit task never fails the run: without an answer the step is unknown
        status = getattr(e, "status", None)
        log.warning("experiment tracking: Kubeflow Pipelines at %s did not say which step of run %s failed (%s%s)",
                    redact_url(host), kfp_run_id[:80], type(e).__name__, f" {status}" if status else "")
        return None
    if found is None:
        log.warning("experiment tracking: Kubeflow Pipelines at %s names no failed step of run %s",
                    redact_url(host), kfp_run_id[:80])
    return found


def _kfp_token() -> str | None:
    path = Path(os.environ.get(KFP_TOKEN_ENV) or KFP_TOKEN_PATH)
    try:
        token = path.read_text().strip()
    except OSError:  # single-user KFP: no token mounted
        return None
    return token or None


def _get_kfp_run(host: str, kfp_run_id: str, timeout: float) -> Any:
    import kfp_server_api

    config = kfp_server_api.Configuration(host=host.rstrip("/"))
    config.retries = False  # one request: a dead endpoint is no reason to keep the pod waiting
    token = _kfp_token()
    if token:
        config.api_key["authorization"] = token
        config.api_key_prefix["authorization"] = "Bearer"
    client = kfp_server_api.ApiClient(config)
    try:
        return kfp_server_api.RunServiceApi(client).run_service_get_run(run_id=kfp_run_id,
                                                                         _request_timeout=(timeout, timeout))
    finally:
        client.close()


def _failed_step(run: Any) -> tuple[str, str] | None:
    details = getattr(run, "run_details", None)
    tasks = list(getattr(details, "task_details", None) or [])
    failed = [t for t in tasks if str(t.state or "").upper() == "FAILED" and t.display_name]
    steps = [t for t in failed if not _KFP_NOT_A_STEP.fullmatch(t.display_name)]
    if not steps:
        return None
    last = float("inf")
    first = min(steps, key=lambda t: t.end_time.timestamp() if t.end_time is not None else last)
    messages = [_message(first), *(_message(t) for t in failed if t.parent_task_id and
                                   t.parent_task_id == first.task_id), _message(run)]
    return str(first.display_name), next((m for m in messages if m), "")


def _message(item: Any) -> str:
    error = getattr(item, "error", None)
    return str(getattr(error, "message", None) or "").strip()


def _has_pending(lake_uri: str, run_id: str, storage_options: Mapping[str, Any] | None) -> bool:
    try:
        return run_id in pending_records(lake_uri, storage_options)
    except Exception:  # no pending folder yet, or a lake that does not answer: nothing kept
        return False
