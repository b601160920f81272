"""Run, compile and submit skiff pipelines: kfp.local on this machine, Kubeflow Pipelines on a cluster.

The same ``@dsl.pipeline`` function goes to both engines: locally ``kfp.local.SubprocessRunner`` runs
each step as a process in the project environment; on a cluster the compiled IR YAML runs one
container per step.
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.definitions import get_pipeline
from skiff.cluster import NAMESPACE, PIPELINE_SERVICE_ACCOUNT
from skiff.errors import SkiffError, UsageError
from skiff.uri import is_remote, local_path

if TYPE_CHECKING:
    from skiff.config import Settings

__all__ = ["StepTimer", "compile_pipeline", "run_local", "local_pipeline_root", "submit", "RunTarget", "LocalRun",
           "failed_step_error"]

log = logging.getLogger(__name__)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_START = re.compile(r"Executing task '([^']+)'")
_END = re.compile(r"Task '([^']+)' finished with status (\w+)")
_LOG_RECORD = re.compile(r"^(\d{2}:\d{2}:\d{2}\.\d{3} - |\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3} )")
_TRACEBACK = "Traceback (most recent call last):"
#: How many lines of a failed step's error the run summary shows (the full log has the rest).
ERROR_LINES = 8


class StepTimer(logging.Filter):
    """Collects each local task's status and duration from kfp.local's log records.

    A filter on the root logger (kfp.local replaces the root handlers while it runs, not the filters).
    """

    def __init__(self, on_event: Callable[[str, str], None] | None = None) -> None:
        super().__init__()
        self.started: dict[str, float] = {}
        self.steps: dict[str, dict[str, Any]] = {}
        self.on_event = on_event

    def filter(self, record: logging.LogRecord) -> bool:
        self._see(record)
        return True

    def _see(self, record: logging.LogRecord) -> None:
        msg = _ANSI.sub("", record.getMessage())
        if m := _START.search(msg):
            self.started[m.group(1)] = record.created
            if self.on_event:
                self.on_event(m.group(1), "RUNNING")
        elif m := _END.search(msg):
            name, status = m.group(1), m.group(2)
            t0 = self.started.get(name, record.created)
            self.steps[name] = {"status": status, "duration_s": round(record.created - t0, 3)}
            if self.on_event:
                self.on_event(name, status)


@dataclass
class LocalRun:
    pipeline: str
    status: str
    duration_s: float
    steps: dict[str, dict[str, Any]]
    outputs: dict[str, Any] = field(default_factory=dict)
    pipeline_root: str = ""
    error: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    log_file: str | None = None
    run_dir: str | None = None
    failed_step: str | None = None
    step_error: str | None = None


def compile_pipeline(name: str, out: Path) -> Path:
    """Write the pipeline's IR YAML (what a Kubeflow Pipelines backend runs)."""
    from kfp import compiler

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(get_pipeline(name).function, package_path=str(out))
    return out


#: The folder of local runs under a local root; under an object-store root they stay in the working folder.
LOCAL_RUNS_FOLDER = "pipeline_runs"


def local_pipeline_root(settings: Settings) -> Path:
    """Where kfp.local keeps a local run's executor files: ``<root>/pipeline_runs`` for a local root, else
    ``./.skiff/pipeline_runs`` (kfp.local needs a local folder; the run's data still goes to the root)."""
    if is_remote(settings.root):
        return local_path(".skiff", "the local runs folder") / LOCAL_RUNS_FOLDER
    return local_path(settings.root, "root") / LOCAL_RUNS_FOLDER


def run_local(
    name: str,
    arguments: dict[str, Any],
    pipeline_root: Path,
    on_event: Callable[[str, str], None] | None = None,
    log_file: Path | None = None,
) -> LocalRun:
    """Run a pipeline with kfp.local in the project environment; steps are subprocesses.

    The steps' own output (kfp.local prints every executor's logs) goes to ``log_file`` (default
    ``<pipeline_root>/<run_id>.log``); ``on_event(step, status)`` reports progress.
    """
    import contextlib

    from kfp import local

    func = get_pipeline(name).function
    pipeline_root = local_path(pipeline_root, "the pipeline root of a local run")
    pipeline_root.mkdir(parents=True, exist_ok=True)
    log_path = Path(log_file) if log_file else pipeline_root / f"{arguments.get('run_id') or name}.log"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root),
               raise_on_error=True)
    before = {p.name for p in pipeline_root.iterdir() if p.is_dir()}
    log_start = log_path.stat().st_size if log_path.exists() else 0
    timer = StepTimer(on_event)
    root_logger = logging.getLogger()
    saved_handlers, saved_level = list(root_logger.handlers), root_logger.level
    t0 = time.perf_counter()
    with open(log_path, "a", encoding="utf-8") as log_out:
        file_handler = logging.StreamHandler(log_out)
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root_logger.handlers = [file_handler]
        root_logger.addFilter(timer)
        root_logger.setLevel(logging.INFO)
        try:
            with contextlib.redirect_stdout(log_out), warnings.catch_warnings():
                # kfp.local notes that display names, resources and images do not apply locally
                warnings.simplefilter("ignore", UserWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                task = func(**arguments)
            status, error = "SUCCESS", None
            outputs = _collect_outputs(task)
        except SkiffError:
            raise
        except Exception as e:  # kfp.local raises RuntimeError naming the failed task
            status, error, outputs = "FAILURE", _ANSI.sub("", str(e)), {}
        finally:
            root_logger.removeFilter(timer)
            root_logger.handlers = saved_handlers
            root_logger.setLevel(saved_level)
    failed_step = step_error = None
    if error:
        failed_step = next((n for n, st in reversed(timer.steps.items()) if st["status"] != "SUCCESS"), None)
        if failed_step is not None:
            with open(log_path, encoding="utf-8", errors="replace") as fh:
                fh.seek(log_start)
                step_error = failed_step_error(_ANSI.sub("", fh.read()), failed_step)
            error = f"step {failed_step} failed" + (f": {step_error}" if step_error else "")
        error = f"{error}\nfull log: {log_path}"
    new_dirs = sorted((p for p in pipeline_root.iterdir() if p.is_dir() and p.name not in before),
                      key=lambda p: p.stat().st_mtime)
    return LocalRun(pipeline=name, status=status, duration_s=round(time.perf_counter() - t0, 3),
                    steps=timer.steps, outputs=outputs, pipeline_root=str(pipeline_root), error=error,
                    arguments=arguments, log_file=str(log_path),
                    run_dir=str(new_dirs[-1]) if new_dirs else None, failed_step=failed_step,
                    step_error=step_error)


def failed_step_error(log_text: str, step: str, lines: int = ERROR_LINES) -> str | None:
    """The end of a failed step's error in a kfp.local log: the exception its process died with.

    kfp.local reports only "Inner task failed"; the step's own output (indented) sits between
    "Executing task '<step>'" and "Task '<step>' finished". The last traceback there ends with the
    exception type and message (the outermost of a chain: skiff's own error, raised ``from`` its
    cause); without a traceback, the section's last lines. None when the step left no output.
    """
    section: list[str] = []
    inside = False
    for line in log_text.splitlines():
        if f"Executing task '{step}'" in line:
            inside, section = True, []
        elif inside and (m := _END.search(line)) and m.group(1) == step:
            inside = False
        elif inside and not _LOG_RECORD.match(line) and line.strip() != "Streamed logs:":
            section.append(line)
    starts = [i for i, line in enumerate(section) if line.strip() == _TRACEBACK]
    if starts:
        first = section[starts[-1]]
        indent = len(first) - len(first.lstrip())
        tail = section[starts[-1] + 1:]
        # skip the frames (indented below the "Traceback" line); the rest is the exception
        k = next((i for i, line in enumerate(tail) if line.strip() and len(line) - len(line.lstrip()) <= indent),
                 len(tail))
        message = [line[indent:] if line[:indent].isspace() else line.strip() for line in tail[k:]]
    else:
        message = [line.strip() for line in section]
    message = [line.rstrip() for line in message]
    while message and not message[-1]:
        message.pop()
    text = "\n".join(message[-lines:]).strip()
    return text or None


def _collect_outputs(task: Any) -> dict[str, Any]:
    if task is None:
        return {}
    outs = getattr(task, "outputs", None)
    if outs is None:
        return {}
    result = {}
    for k, v in dict(outs).items():
        if hasattr(v, "metadata"):
            result[k] = {"uri": getattr(v, "uri", None), "metadata": dict(v.metadata)}
        else:
            result[k] = v
    return result


@dataclass(frozen=True)
class RunTarget:
    """Where and as whom a cluster run executes: the pipeline namespace, its service account, its root.

    Kubeflow Pipelines runs every step as the run's service account (the default, ``pipeline-runner``,
    holds no cloud identity: its steps could read and write nothing on S3 or ADLS); the pipeline root
    puts KFP's own artifacts under ``<root>/artifacts``, the prefix that identity may write.
    """

    namespace: str = NAMESPACE
    service_account: str = PIPELINE_SERVICE_ACCOUNT
    pipeline_root: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> RunTarget:
        remote = is_remote(settings.artifacts_uri)
        return cls(namespace=settings.kfp_namespace, service_account=settings.kfp_service_account,
                   pipeline_root=settings.artifacts_uri if remote else None)


def submit(
    name: str,
    arguments: dict[str, Any],
    host: str,
    experiment: str = "skiff",
    run_name: str | None = None,
    client_factory: Callable[..., Any] | None = None,
    target: RunTarget | None = None,
) -> dict[str, Any]:
    """Submit the pipeline to a Kubeflow Pipelines endpoint with ``kfp.Client``.

    The run executes in ``target``'s namespace as its service account (default: from this process's
    settings, :meth:`RunTarget.from_settings`); an empty namespace leaves it to KFP (standalone mode).
    """
    import kfp

    if target is None:
        from skiff.config import load_settings

        target = RunTarget.from_settings(load_settings())
    if not target.service_account:
        raise UsageError("kfp_service_account is empty: cluster runs need the pipeline service account "
                         f"({PIPELINE_SERVICE_ACCOUNT}), the identity the cloud role trusts")
    namespace = target.namespace or None
    factory = client_factory or kfp.Client
    client = factory(host=host, namespace=namespace) if namespace else factory(host=host)
    import contextlib
    import sys

    # kfp.Client prints the experiment's and the run's links: they go to stderr, so stdout stays the
    # caller's (``skiff run --json`` prints one JSON document there)
    with contextlib.redirect_stdout(sys.stderr):
        run = client.create_run_from_pipeline_func(
            get_pipeline(name).function, arguments=arguments, experiment_name=experiment,
            run_name=run_name or f"{name}-{time.strftime('%Y%m%d-%H%M%S')}", enable_caching=False,
            namespace=namespace, service_account=target.service_account, pipeline_root=target.pipeline_root,
        )
    return {"run_id": run.run_id, "host": host, "experiment": experiment, "pipeline": name,
            "namespace": target.namespace, "service_account": target.service_account}
