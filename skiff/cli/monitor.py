"""``skiff monitor run``: serving drift of a model's logged windows against its training data and its
performance on labeled traffic, stored in the control plane (:mod:`skiff.monitoring`); ``--act`` applies
the model's retrain policy (:mod:`skiff.monitoring.retrain`) with kfp.local and the GitOps promote code;
``skiff monitor schedule`` creates or replaces the KFP recurring run that runs the monitor on a cluster
(:mod:`pipelines.monitor`)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from skiff.cli._common import JsonOption, console, emit, state
from skiff.errors import GateFailed, UsageError

if TYPE_CHECKING:
    from skiff.config import Settings
    from skiff.monitoring.retrain import ChallengerRun, RetrainPolicy

__all__ = ["add_commands"]


def _since(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--since {value!r} is not an ISO date/time (e.g. 2026-05-01T10:00)") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _table(result: dict[str, Any]) -> None:
    table = Table(title=f"serving drift of {result['model']}", show_lines=False)
    for col in ("version", "window (UTC)", "rows", "drifted", "largest PSI"):
        table.add_column(col)
    for w in result["windows"]:
        psi = [r for r in w["results"] if r["metric"] == "psi"]
        top = max(psi, key=lambda r: r["value"], default=None)
        largest = f"{top['feature'] or 'prediction'} {top['value']:.4f} (> {top['threshold']:g})" if top and \
            top["drifted"] else (f"{top['feature'] or 'prediction'} {top['value']:.4f}" if top else "")
        table.add_row(str(w["version"]), w["window_start"][:16].replace("T", " "), str(w["rows"]),
                      w["skipped"] and f"skipped: {w['skipped']}" or (", ".join(w["drifted"]) or "none"), largest)
    console.print(table)
    console.print(f"{result['drifted_windows']} of {len(result['windows'])} window(s) drifted; scores stored in "
                  "the control plane", highlight=False)
    for p in result.get("performance", []):
        if p["skipped"]:
            continue
        line = ", ".join(f"{r['metric']} {r['value']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
                         + (" BELOW FLOOR" if r["decayed"] else "") for r in p["results"])
        console.print(f"v{p['version']} {p['window_start'][:16].replace('T', ' ')}: {p['labeled']} labeled: {line}",
                      highlight=False)
    for step in result.get("retrain", []):
        console.print(f"retrain {step['action']}: {step['reason']}", highlight=False)
    if result.get("report"):
        console.print(f"report: {result['report']}", highlight=False)


class _LocalRetrain:
    """The effects of a retrain on this machine: the model's pipeline with kfp.local on the newest data (its
    spec's sources), and a winner's canary through the GitOps promote code in ``env``."""

    def __init__(self, ctx: typer.Context, settings: Settings, environments: Path, env: str) -> None:
        self.ctx, self.settings, self.environments, self.env = ctx, settings, environments, env

    def _dataset(self, model: str, policy: RetrainPolicy) -> str:
        from skiff.registry import ModelRegistry

        if policy.dataset:
            return policy.dataset
        meta = ModelRegistry.from_settings(self.settings).get(model, "latest").metadata
        name = meta.dataset.get("name")
        if not name:
            raise UsageError(f"retrain policy of {model}: set dataset (its latest version names no dataset)")
        return str(name)

    def start_pipeline(self, model: str, policy: RetrainPolicy, reason: str) -> ChallengerRun:
        from pipelines import runner
        from pipelines.definitions import get_pipeline
        from skiff.cli._common import dataset_spec
        from skiff.monitoring.retrain import ChallengerRun
        from skiff.registry import ModelRegistry

        definition = get_pipeline(policy.pipeline)
        spec = dataset_spec(self.ctx, self._dataset(model, policy), None)
        params = {**policy.params, "model_name": model} if policy.pipeline == "tabular" else dict(policy.params)
        args = definition.arguments(spec, params, self.settings, local=True)
        local_run = runner.run_local(policy.pipeline, args, runner.local_pipeline_root(self.settings))
        summary = definition.summarize(local_run, self.settings)
        registered = summary.get("registered") or {}
        version = registered.get("version")
        gate: dict[str, Any] = {}
        if version is not None:
            gate = ModelRegistry.from_settings(self.settings).get(model, int(version)).metadata.gate
        return ChallengerRun(run_id=str(summary.get("run_id") or args.get("run_id")), status=str(summary["status"]),
                             version=int(version) if version is not None else None,
                             promoted_by_gate=gate.get("promote") is True, gate_reason=str(gate.get("reason") or ""),
                             error=summary.get("error"), details={"log_file": summary.get("log_file")})

    def promote_canary(self, model: str, version: int, percent: int, reason: str) -> dict[str, Any]:
        from serving.deploy.gitops import Environments
        from skiff.locks import locks_for
        from skiff.registry import ModelRegistry

        result = Environments(self.environments, locks=locks_for(self.settings)).promote(
            ModelRegistry.from_settings(self.settings), self.env, model, version, canary_percent=percent,
            reason=reason)
        return dict(result.model_dump(mode="json"))


class _KfpRetrain(_LocalRetrain):
    """The retrain on the Kubeflow Pipelines at ``host``: the model's pipeline submitted as ``skiff run --host``
    submits it (the settings' namespace, service account and pipeline root) and waited for; the challenger is
    the version its register step recorded with the run's id. A winner's canary goes through the GitOps
    promote code in the environments folder, as locally."""

    poll_s = 10

    def __init__(self, ctx: typer.Context, settings: Settings, environments: Path, env: str, host: str,
                 timeout_s: float) -> None:
        super().__init__(ctx, settings, environments, env)
        self.host, self.timeout_s = host, timeout_s

    def _client(self, namespace: str | None) -> Any:
        import kfp

        return kfp.Client(host=self.host, namespace=namespace) if namespace else kfp.Client(host=self.host)

    def start_pipeline(self, model: str, policy: RetrainPolicy, reason: str) -> ChallengerRun:
        import contextlib
        import sys
        import time

        from pipelines import runner
        from pipelines.definitions import get_pipeline
        from skiff.cli._common import dataset_spec
        from skiff.monitoring.retrain import ChallengerRun
        from skiff.registry import ModelRegistry

        definition = get_pipeline(policy.pipeline)
        spec = dataset_spec(self.ctx, self._dataset(model, policy), None)
        params = {**policy.params, "model_name": model} if policy.pipeline == "tabular" else dict(policy.params)
        args = definition.arguments(spec, params, self.settings, local=False)
        target = runner.RunTarget.from_settings(self.settings)
        submitted = runner.submit(policy.pipeline, args, self.host, "skiff-retrain",
                                  f"retrain-{model}-{time.strftime('%Y%m%d-%H%M%S')}",
                                  client_factory=lambda **kw: self._client(kw.get("namespace")), target=target)
        kfp_run = str(submitted["run_id"])
        details: dict[str, Any] = {"host": self.host, "kfp_run_id": kfp_run, "run_id": args.get("run_id")}
        try:
            with contextlib.redirect_stdout(sys.stderr):
                run = self._client(target.namespace or None).wait_for_run_completion(
                    kfp_run, timeout=self.timeout_s, sleep_duration=self.poll_s)
        except TimeoutError:
            return ChallengerRun(run_id=kfp_run, status="TIMEOUT", details=details,
                                 error=f"run {kfp_run} on {self.host} did not finish within {self.timeout_s:g} s")
        state = str(run.state or "UNKNOWN").upper()
        error = None if state == "SUCCEEDED" else (getattr(run.error, "message", None) or f"the run ended {state}")
        registry = ModelRegistry.from_settings(self.settings)
        mine = [mv for mv in registry.versions(model) if mv.metadata.pipeline_run_id == args.get("run_id")] \
            if args.get("run_id") else []
        if not mine or state != "SUCCEEDED":
            return ChallengerRun(run_id=kfp_run, status=state, error=error, details=details)
        gate = mine[-1].metadata.gate
        return ChallengerRun(run_id=kfp_run, status=state, version=mine[-1].version,
                             promoted_by_gate=gate.get("promote") is True, gate_reason=str(gate.get("reason") or ""),
                             details=details)


def add_commands(app: typer.Typer) -> None:
    monitor = typer.Typer(name="monitor", help="Monitor served models: drift, accuracy on late labels, alerts and the retrain policy; "
                          "on a schedule in Kubeflow Pipelines.",
                          no_args_is_help=True)
    app.add_typer(monitor)

    @monitor.command("run")
    def run(
        ctx: typer.Context,
        model: Annotated[str, typer.Argument(help="Registered model whose inference log to score.")],
        version: Annotated[int | None, typer.Option("--version", "-v", min=1,
                                                    help="Only this version's windows (default: every logged one).")] = None,
        since: Annotated[str | None, typer.Option("--since", help="Only windows from this UTC time on (ISO).")] = None,
        min_rows: Annotated[int, typer.Option("--min-rows", min=1, help="Windows with fewer rows are skipped.")] = 200,
        metrics_file: Annotated[Path | None, typer.Option(
            "--metrics-file", dir_okay=False,
            help="Also write the latest window's scores per version as Prometheus text (skiff_drift_*), e.g. "
            "for node-exporter's textfile collector. On a cluster the REST API serves them on /api/v1/metrics.",
        )] = None,
        labels_dataset: Annotated[str | None, typer.Option(
            "--labels-dataset", help="An ingested labels dataset to join (default: the retrain policy's, if any); "
            "labels posted through the REST API are always used.")] = None,
        act: Annotated[bool, typer.Option(
            "--act", help="Apply the model's retrain policy (environment file, retrain:): on drift, decay or its "
            "schedule run the pipeline with kfp.local (or on --host); a winner becomes a canary in --env.")] = False,
        env: Annotated[str, typer.Option("--env", help="The environment whose retrain policy applies and where "
                                         "a winner lands as a canary (the lowest one).")] = "dev",
        environments: Annotated[Path, typer.Option("--environments", help="The GitOps environments folder.")] = Path(
            "infra/environments"),
        report: Annotated[Path | None, typer.Option(
            "--report", file_okay=False, help="Write a self-contained HTML report per scored window here.")] = None,
        host: Annotated[str | None, typer.Option(
            "--host", help="With --act: run the retrain on this Kubeflow Pipelines endpoint (waited for) instead "
            "of kfp.local.")] = None,
        retrain_timeout: Annotated[float, typer.Option(
            "--retrain-timeout", min=1, help="With --host: minutes to wait for the retrain run.")] = 180,
        json_out: JsonOption = False,
    ) -> None:
        """Score each hour window of a model's inference log against its training data (PSI, L-infinity,
        Jensen-Shannon; the predictions against validation time) and, where labels arrived, its accuracy /
        ROC-AUC / RMSE against the version's test metrics; store the scores and raise alerts. Exit 1 when a
        window drifted or decayed."""
        from skiff.control_plane import ControlPlane
        from skiff.monitoring.decay import monitor_performance
        from skiff.monitoring.runner import evidence, monitor_model, record_alerts

        settings = state(ctx).settings
        store = ControlPlane.from_settings(settings)
        policy = None
        if host and not act:
            raise UsageError("--host runs the retrain of --act on Kubeflow Pipelines: give --act too")
        if act:
            from serving.deploy.gitops import Environments

            policy = Environments(environments).environment(env).retrain.get(model)
            if policy is None:
                raise UsageError(f"--act: {environments}/{env}/environment.yaml has no retrain policy for {model} "
                                 "(add retrain: {model}: {...})")
        when = _since(since)
        reports = monitor_model(settings, model, version=version, since=when, min_rows=min_rows, store=store)
        perf = monitor_performance(settings, model, version=version, since=when, store=store,
                                   labels_dataset=labels_dataset or (policy.labels_dataset if policy else None))
        alerts = record_alerts(store, model, reports, perf)
        if metrics_file is not None:
            from skiff.monitoring.metrics import write_metrics_file

            write_metrics_file(metrics_file, [r for rep in reports for r in rep.results],
                               [r for p in perf for r in p.results])
        windows = [r.to_dict() for r in reports]
        drifted = sum(1 for r in reports if r.drifted)
        decayed = sum(1 for p in perf if p.decayed)
        result: dict[str, Any] = {"model": model, "windows": windows, "drifted_windows": drifted,
                                  "performance": [p.to_dict() for p in perf], "decayed_windows": decayed,
                                  "alerts": [a.model_dump() for a in alerts]}
        if report is not None:
            from skiff.monitoring.report import write_reports

            result["report"] = str(write_reports(settings, model, report, store=store, version=version))
        if policy is not None:
            from skiff.control_plane.store import utc_now
            from skiff.monitoring.retrain import carry_out, decide

            decision = decide(policy, model, evidence(store, model), store.retrain_decisions(model), now=utc_now(),
                              version=version)
            actions = _KfpRetrain(ctx, settings, environments, env, host, retrain_timeout * 60) if host else \
                _LocalRetrain(ctx, settings, environments, env)
            steps = carry_out(store, decision, policy, actions)
            result["retrain"] = [s.model_dump() for s in steps]
        emit(result, json_out, _table)
        if drifted or decayed:
            which = "; ".join([f"{r.window_start[:16].replace('T', ' ')} v{r.version}: {', '.join(r.drifted)}"
                               for r in reports if r.drifted] +
                              [f"{p.window_start[:16].replace('T', ' ')} v{p.version}: {', '.join(p.decayed)} below "
                               "the floor" for p in perf if p.decayed])
            raise GateFailed(f"{drifted} window(s) of {model} drifted, {decayed} decayed ({which})")

    @monitor.command("schedule")
    def schedule_cmd(
        ctx: typer.Context,
        model: Annotated[str, typer.Argument(help="Registered model whose monitor to schedule.")],
        cron: Annotated[str, typer.Option(
            "--cron", help="When: 5 cron fields (minute hour day month weekday, UTC) or KFP's 6 (seconds first).")
        ] = "0 * * * *",
        lookback_hours: Annotated[int, typer.Option(
            "--lookback-hours", min=0, help="Each run scores the windows of the last N hours (0: every window).")
        ] = 24,
        min_rows: Annotated[int, typer.Option("--min-rows", min=1, help="Windows with fewer rows are skipped.")] = 200,
        labels_dataset: Annotated[str | None, typer.Option(
            "--labels-dataset", help="An ingested labels dataset each run joins.")] = None,
        act: Annotated[bool, typer.Option(
            "--act", help="Each run applies the model's retrain policy in --env (skiff monitor run --act).")] = False,
        env: Annotated[str, typer.Option("--env", help="The environment whose retrain policy applies.")] = "dev",
        environments: Annotated[str, typer.Option(
            "--environments", help="The GitOps environments folder as the monitor's pod sees it (with --act).")
        ] = "infra/environments",
        environments_pvc: Annotated[str | None, typer.Option(
            "--environments-pvc", help="With --act: a PersistentVolumeClaim holding the GitOps checkout, mounted "
            "into the monitor's pod as its environments folder.")] = None,
        retrain_host: Annotated[str | None, typer.Option(
            "--retrain-host", help="With --act: the Kubeflow Pipelines endpoint, as the pod reaches it, the retrain "
            "runs on (default: the kfp_host setting).")] = None,
        host: Annotated[str | None, typer.Option(
            "--host", help="Kubeflow Pipelines endpoint (default: the kfp_host setting).")] = None,
        experiment: Annotated[str, typer.Option("--experiment", help="KFP experiment of the recurring run.")] = (
            "skiff-monitoring"),
        paused: Annotated[bool, typer.Option("--paused", help="Create it disabled (enable it in the KFP UI).")
                          ] = False,
        dry_run: Annotated[bool, typer.Option(
            "--dry-run", help="Print the recurring run that would be created (KFP's request body); send nothing.")
        ] = False,
        json_out: JsonOption = False,
    ) -> None:
        """Create or replace the KFP recurring run that monitors a model on a cluster: the skiff-monitor
        pipeline (one step running skiff monitor run in the skiff image, as the pipeline service account,
        with the cluster's settings and control plane) on a cron schedule."""
        from pipelines.monitor import MonitorSchedule, schedule
        from pipelines.runner import RunTarget

        settings = state(ctx).settings
        host = host or settings.kfp_host
        if not host and not dry_run:
            raise UsageError("give --host (or set kfp_host) to schedule on Kubeflow Pipelines, or --dry-run")
        plan = MonitorSchedule(model=model, cron=cron, act=act, env=env, environments=environments,
                               lookback_hours=lookback_hours, min_rows=min_rows, labels_dataset=labels_dataset or "",
                               retrain_host=(retrain_host or settings.kfp_host or "") if act else (retrain_host or ""),
                               environments_pvc=environments_pvc or "",
                               experiment=experiment, enabled=not paused)
        result = schedule(plan, host or "", target=RunTarget.from_settings(settings), dry_run=dry_run)
        if dry_run:
            emit(result, json_out, lambda r: console.print_json(data=r["recurring_run"]))
            return
        emit(result, json_out, f"recurring run {result['recurring_run_id']} ({plan.name}, cron {plan.cron}) in "
             f"experiment {experiment} on {host}" + (f"; replaced {len(result['replaced'])}" if result["replaced"]
                                                     else ""))
