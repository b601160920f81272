"""The monitoring pipeline and its recurring run: ``skiff monitor run`` on a schedule in Kubeflow Pipelines.

On a cluster the monitor runs as a KFP **recurring run** of a one-step pipeline (``skiff-monitor``): the step
runs ``skiff monitor run <model> --json`` in the skiff image, as the pipeline service account, with the
cluster's settings ConfigMap and the control plane's PostgreSQL URL (``SKIFF_DATABASE_URL``) like any
step, so its drift and performance scores, alerts and retrain decisions land in the same control plane
the REST API serves (and exports as ``skiff_drift_*`` / ``skiff_model_performance_*`` metrics for the
PrometheusRules). A window that drifted or decayed is a finding, not a failure: the step succeeds and
reports the counts (``drifted_windows``, ``decayed_windows``); any other error fails it.

:func:`schedule` creates the recurring run through ``kfp.Client`` (``skiff monitor schedule``); running it
again for the same model replaces the earlier one (KFP has no update of a recurring run: the one with the
same display name in the experiment is deleted, then the new one created). :func:`recurring_run_body` is
the request body it sends, as kfp-server-api's ``V2beta1RecurringRun`` (what ``--dry-run`` prints).

KFP's cron has six fields, seconds first (robfig/cron): a five-field expression gets ``0`` seconds.

With ``act`` the step also applies the model's retrain policy: the retrain on the Kubeflow Pipelines at
``retrain_host`` (as the pod reaches it), the policy and a winner's canary in the environments folder,
which :func:`monitor_pipeline` mounts from a PersistentVolumeClaim holding the GitOps checkout.

The monitoring pipeline is not in :data:`pipelines.definitions.PIPELINES`: that registry holds the
pipelines a user runs on a dataset spec; this one runs on a registered model and is only scheduled.
"""

import datetime as dt
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from kfp import dsl, kubernetes

from components._image import BASE_IMAGE
from pipelines.cluster_wiring import in_namespace
from skiff.errors import UsageError
from skiff.identifiers import check_name

if TYPE_CHECKING:
    from pipelines.runner import RunTarget

__all__ = ["monitor", "monitor_pipeline", "monitor_op", "compile_monitor", "ENVIRONMENTS_MOUNT", "MonitorSchedule",
           "kfp_cron", "recurring_run_name", "recurring_run_body", "request_json", "schedule", "PIPELINE_NAME",
           "DEFAULT_EXPERIMENT"]

#: the compiled pipeline's name
PIPELINE_NAME = "skiff-monitor"
#: the KFP experiment the recurring runs are created in
DEFAULT_EXPERIMENT = "skiff-monitoring"

_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,?#\-]+$")
_K8S_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,251}[a-z0-9])?")
#: where the step finds the environments folder when the schedule mounts a PersistentVolumeClaim
ENVIRONMENTS_MOUNT = "/skiff/environments"


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)  # type: ignore[untyped-decorator]
def monitor_op(model: str, act: bool = False, env: str = "dev", environments: str = "infra/environments",
               lookback_hours: int = 24, min_rows: int = 200, labels_dataset: str = "", retrain_host: str = ""
               ) -> NamedTuple("MonitorCounts", [("drifted_windows", int), ("decayed_windows", int)]):  # type: ignore[valid-type]  # noqa: UP014, E501
    """``skiff monitor run`` for ``model`` over the windows of the last ``lookback_hours`` (0: every logged
    window); ``act`` applies its retrain policy in ``env``, the retrain on the Kubeflow Pipelines at
    ``retrain_host`` (kfp.local in this pod without one). Exit 1 (a window drifted or decayed) is a
    finding: the counts come back; any other exit fails the step with the command's error."""
    import datetime
    import json
    import subprocess
    import sys
    argv = [sys.executable, "-m", "skiff", "monitor", "run", model, "--json", "--min-rows", str(min_rows)]
    if lookback_hours > 0:
        since = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=lookback_hours)
        argv += ["--since", since.replace(minute=0, second=0, microsecond=0).isoformat()]
    if labels_dataset:
        argv += ["--labels-dataset", labels_dataset]
    if act:
        argv += ["--act", "--env", env, "--environments", environments]
        if retrain_host:
            argv += ["--host", retrain_host]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    sys.stderr.write(done.stderr)
    sys.stdout.write(done.stdout)
    if done.returncode not in (0, 1):
        tail = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise RuntimeError(f"skiff monitor run {model} failed: {tail}")
    try:
        result = json.loads(done.stdout)
    except ValueError:
        raise RuntimeError(f"skiff monitor run {model} printed no JSON result (exit {done.returncode})") from None
    return (int(result.get("drifted_windows", 0)), int(result.get("decayed_windows", 0)))


def _wire(task: Any) -> None:
    task.set_caching_options(False).set_display_name("monitor").set_cpu_limit("1").set_memory_limit("2G")
    in_namespace(task, "monitor")  # with the control plane's Secret (STEP_SECRETS)


def monitor_pipeline(environments_pvc: str = "") -> Any:
    """The ``skiff-monitor`` pipeline; with ``environments_pvc`` its step mounts that PersistentVolumeClaim
    (a Git checkout of the environments folder, e.g. the REST API's) at :data:`ENVIRONMENTS_MOUNT`, where
    ``act`` reads the retrain policy and writes a winner's canary."""
    if environments_pvc and not _K8S_NAME.fullmatch(environments_pvc):
        raise UsageError(f"environments PVC {environments_pvc!r} is not a Kubernetes name (a-z, 0-9, '-')")

    @dsl.pipeline(name=PIPELINE_NAME, description="score a served model's logged windows: drift, decay, "  # type: ignore[untyped-decorator]
                  "alerts, retrain policy")
    def monitor(model: str, act: bool = False, env: str = "dev", environments: str = "infra/environments",
                lookback_hours: int = 24, min_rows: int = 200, labels_dataset: str = "", retrain_host: str = ""
                ) -> NamedTuple("MonitorCounts", [("drifted_windows", int), ("decayed_windows", int)]):  # type: ignore[valid-type]  # noqa: UP014, E501
        task = monitor_op(model=model, act=act, env=env, environments=environments,
                          lookback_hours=lookback_hours, min_rows=min_rows, labels_dataset=labels_dataset,
                          retrain_host=retrain_host)
        _wire(task)
        if environments_pvc:
            kubernetes.mount_pvc(task, pvc_name=environments_pvc, mount_path=ENVIRONMENTS_MOUNT)
        MonitorCounts = NamedTuple("MonitorCounts", [("drifted_windows", int), ("decayed_windows", int)])  # noqa: N806, UP014
        return MonitorCounts(task.outputs["drifted_windows"], task.outputs["decayed_windows"])

    return monitor


#: the pipeline as kfp.local runs it and ``skiff monitor schedule`` compiles it without a mounted checkout
monitor = monitor_pipeline()


def compile_monitor(out: Path, environments_pvc: str = "") -> Path:
    """Write the monitoring pipeline's IR YAML (see :func:`monitor_pipeline` for ``environments_pvc``)."""
    from kfp import compiler

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(monitor_pipeline(environments_pvc), package_path=str(out))
    return out


def kfp_cron(expression: str) -> str:
    """``expression`` as KFP's six-field cron (seconds first): five fields get ``0`` seconds; anything else is a
    :class:`UsageError`."""
    fields = expression.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6 or not all(_CRON_FIELD.match(f) for f in fields):
        raise UsageError(f"cron {expression!r}: give 5 fields (minute hour day month weekday) or KFP's 6 "
                         "(seconds first), e.g. '0 * * * *' for every hour")
    return " ".join(fields)


def recurring_run_name(model: str) -> str:
    """The recurring run's display name for ``model`` (how a second ``schedule`` finds the first)."""
    return f"skiff-monitor-{model}"


@dataclass(frozen=True)
class MonitorSchedule:
    """What the recurring run of one model's monitor runs, and when."""

    model: str
    cron: str = "0 0 * * * *"  # every hour, on the hour
    act: bool = False
    env: str = "dev"
    environments: str = "infra/environments"
    lookback_hours: int = 24
    min_rows: int = 200
    labels_dataset: str = ""
    retrain_host: str = ""
    environments_pvc: str = ""
    experiment: str = DEFAULT_EXPERIMENT
    enabled: bool = True
    max_concurrency: int = 1
    start_time: dt.datetime | None = None

    def __post_init__(self) -> None:
        check_name(self.model, "model")
        check_name(self.env, "environment")
        if self.labels_dataset:
            check_name(self.labels_dataset, "dataset")
        object.__setattr__(self, "cron", kfp_cron(self.cron))
        if self.environments_pvc:
            if not _K8S_NAME.fullmatch(self.environments_pvc):
                raise UsageError(f"environments PVC {self.environments_pvc!r} is not a Kubernetes name")
            if not self.act:
                raise UsageError("monitor schedule: the environments PVC holds what act reads and writes: it needs act")
            object.__setattr__(self, "environments", ENVIRONMENTS_MOUNT)
        if self.retrain_host and not (self.act and re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+(/[!-~]*)?",
                                                                 self.retrain_host)):
            raise UsageError("monitor schedule: retrain_host is the http(s) URL of Kubeflow Pipelines the retrain "
                             "of act runs on (it needs act)")
        if self.lookback_hours < 0 or self.min_rows < 1 or not 1 <= self.max_concurrency <= 10:
            raise UsageError("monitor schedule: lookback_hours >= 0, min_rows >= 1, max_concurrency in 1..10")

    @property
    def parameters(self) -> dict[str, Any]:
        """The pipeline's arguments."""
        return {"model": self.model, "act": self.act, "env": self.env, "environments": self.environments,
                "lookback_hours": self.lookback_hours, "min_rows": self.min_rows,
                "labels_dataset": self.labels_dataset, "retrain_host": self.retrain_host}

    @property
    def name(self) -> str:
        return recurring_run_name(self.model)

    def description(self) -> str:
        return (f"skiff monitor run {self.model} (cron {self.cron}"
                + (f", retrain policy of {self.env}" if self.act else "") + ")")


def _pipeline_spec(package: Path) -> dict[str, Any]:
    """The compiled YAML as the pipeline_spec field of a run (the IR, and with kfp-kubernetes settings its
    platform spec beside it), the form ``kfp.Client`` sends."""
    from kfp.client.client import _extract_pipeline_yaml

    doc = _extract_pipeline_yaml(str(package))
    # caching is off for every task: each run scores the newest windows
    for task in doc.pipeline_spec.root.dag.tasks.values():
        task.caching_options.enable_cache = False
    spec: dict[str, Any] = doc.to_dict()
    return spec


def recurring_run_body(plan: MonitorSchedule, package: Path, experiment_id: str,
                       target: "RunTarget") -> Any:
    """The ``V2beta1RecurringRun`` that :func:`schedule` creates (kfp-server-api's model: it validates its
    fields as it is built)."""
    import kfp_server_api as api

    start = plan.start_time.isoformat() if plan.start_time else None
    return api.V2beta1RecurringRun(
        display_name=plan.name, description=plan.description(), experiment_id=experiment_id,
        pipeline_spec=_pipeline_spec(package),
        runtime_config=api.V2beta1RuntimeConfig(parameters=plan.parameters, pipeline_root=target.pipeline_root),
        trigger=api.V2beta1Trigger(cron_schedule=api.V2beta1CronSchedule(cron=plan.cron, start_time=start)),
        mode=api.RecurringRunMode.ENABLE if plan.enabled else api.RecurringRunMode.DISABLE,
        max_concurrency=_concurrency(plan), no_catchup=True,
        service_account=target.service_account)


def _concurrency(plan: MonitorSchedule) -> Any:
    """``max_concurrency`` as the API types it: an int64, which its JSON writes as a string."""
    return str(plan.max_concurrency)


def request_json(body: Any) -> dict[str, Any]:
    """A kfp-server-api model as the JSON the client sends."""
    import kfp_server_api as api

    out: dict[str, Any] = api.ApiClient().sanitize_for_serialization(body)
    return out


def _existing(client: Any, experiment_id: str, name: str) -> list[str]:
    import json

    flt = json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})
    found: list[str] = []
    token = ""
    while True:
        page = client.list_recurring_runs(page_token=token, page_size=100, experiment_id=experiment_id, filter=flt)
        found += [r.recurring_run_id for r in (page.recurring_runs or []) if r.display_name == name]
        token = page.next_page_token or ""
        if not token:
            return found


def schedule(plan: MonitorSchedule, host: str, *, target: "RunTarget | None" = None,
             client_factory: Callable[..., Any] | None = None, dry_run: bool = False) -> dict[str, Any]:
    """Create (or replace) the recurring run of ``plan`` on the Kubeflow Pipelines at ``host``; with
    ``dry_run`` nothing is sent: the result holds the request body that would be."""
    import contextlib
    import sys

    from pipelines.runner import RunTarget

    if target is None:
        from skiff.config import load_settings

        target = RunTarget.from_settings(load_settings())
    if not target.service_account:
        raise UsageError("kfp_service_account is empty: the monitor runs as the pipeline service account")
    namespace = target.namespace or None
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_monitor(Path(tmp) / "monitor.yaml", plan.environments_pvc)
        result: dict[str, Any] = {"host": host, "experiment": plan.experiment, "name": plan.name,
                                  "namespace": target.namespace, "cron": plan.cron}
        if dry_run:
            body = recurring_run_body(plan, package, "<experiment id of " + plan.experiment + ">", target)
            return {**result, "dry_run": True, "recurring_run": request_json(body)}
        import kfp

        factory = client_factory or kfp.Client
        client = factory(host=host, namespace=namespace) if namespace else factory(host=host)
        with contextlib.redirect_stdout(sys.stderr):  # kfp.Client prints links; stdout stays the caller's
            experiment = client.create_experiment(plan.experiment, namespace=namespace)
            replaced = _existing(client, experiment.experiment_id, plan.name)
            for rid in replaced:
                client.delete_recurring_run(rid)
            created = client.create_recurring_run(
                experiment_id=experiment.experiment_id, job_name=plan.name, description=plan.description(),
                start_time=plan.start_time.isoformat() if plan.start_time else None, cron_expression=plan.cron,
                max_concurrency=_concurrency(plan), no_catchup=True, params=plan.parameters,
                pipeline_package_path=str(package), enabled=plan.enabled, pipeline_root=target.pipeline_root,
                enable_caching=False, service_account=target.service_account)
    return {**result, "dry_run": False, "recurring_run_id": created.recurring_run_id,
            "experiment_id": experiment.experiment_id, "replaced": replaced}
