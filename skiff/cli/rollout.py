"""``skiff render``, ``skiff promote`` and ``skiff rollout``: manifests, GitOps promotions, canary rollouts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from skiff.cli._common import JsonOption, console, emit, err_console, state
from skiff.errors import ConfigError, GateFailed, SkiffError, UsageError
from skiff.versions import parse_version, parse_version_number
from skiff.yamlio import load_user_yaml

if TYPE_CHECKING:
    from serving.deploy.gitops import Environments
    from serving.deploy.isvc import RuntimeImages
    from serving.rollout.store import RolloutStore
    from skiff.registry import ModelRegistry
    from skiff.rollout_policy import RolloutPolicy

EnvironmentsOption = Annotated[
    Path,
    typer.Option("--environments", envvar="SKIFF_ENVIRONMENTS",
                 help="The GitOps environments folder (env: SKIFF_ENVIRONMENTS)."),
]
DEFAULT_ENVS = Path("infra/environments")
LOCAL_ENV = "local"


def _images() -> RuntimeImages:
    from components._image import BASE_IMAGE, GPU_IMAGE
    from serving.deploy.isvc import RuntimeImages

    return RuntimeImages(predictor=BASE_IMAGE, gpu_predictor=GPU_IMAGE, transformer=BASE_IMAGE)


def _registry(ctx: typer.Context) -> ModelRegistry:
    from skiff.registry import ModelRegistry

    return ModelRegistry.from_settings(state(ctx).settings)


def _environments(ctx: typer.Context, root: Path) -> Environments:
    """The environments folder, its edits holding the locks the settings choose (as the registry's)."""
    from serving.deploy.gitops import Environments
    from skiff.locks import locks_for

    return Environments(root, locks=locks_for(state(ctx).settings))


def _kube_api() -> Any:
    """The CustomObjectsApi of the current kube context (or the in-cluster service account)."""
    try:
        from kubernetes import client, config

        config.load_config()
    except Exception as e:  # ConfigException, missing files
        raise ConfigError(f"no Kubernetes configuration (kubeconfig or in-cluster): {e}") from e
    return client.CustomObjectsApi()


def _policy(base: RolloutPolicy, policy_file: Path | None, **flags: Any) -> RolloutPolicy:
    loaded = None if policy_file is None else load_user_yaml(policy_file, "rollout policy file", error=UsageError)
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{policy_file}: expected a mapping of policy fields")
    return base.with_overrides(loaded, **flags)


def _pair(ev: dict[str, Any], key: str, fmt: str, scale: float = 1.0) -> str:
    if not ev:
        return ""
    vals = [ev.get(side, {}).get(key) for side in ("stable", "canary")]
    return "/".join("-" if v is None else format(v * scale, fmt) for v in vals)


def _decision_table(st: dict[str, Any]) -> None:
    console.print(f"[bold]{st['model']}[/] in {st['env']}: canary {st['canary_version']} vs stable "
                  f"{st['stable_version']} — [bold]{st['phase']}[/] at {st['canary_percent']}% "
                  f"({st['reason'] or 'running'})", highlight=False)
    t = Table("time", "step", "action", "→ %", "requests s/c", "5xx s/c", "p99 ms s/c", "quality s/c", "reason")
    for d in st["decisions"]:
        ev = d.get("evidence") or {}
        t.add_row(d["at"][11:23], str(d["step"]), d["action"], str(d["canary_percent"]),
                  _pair(ev, "requests", ".0f"), _pair(ev, "error_rate", ".3f"),
                  _pair(ev, "p99_seconds", ".1f", 1000.0), _pair(ev, "quality", ".3f"), d["reason"])
    console.print(t)


def add_commands(app: typer.Typer) -> None:
    _register_render(app)
    _register_promote(app)
    _register_rollout(app)


# -- render -----------------------------------------------------------------------------------------------
def _register_render(app: typer.Typer) -> None:
    render = typer.Typer(help="Render Kubernetes manifests (InferenceServices) from environment files.",
                         no_args_is_help=True)
    app.add_typer(render, name="render")

    @render.command("isvc")
    def render_isvc(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(help="Model name.")],
        env: Annotated[str, typer.Option("--env", help="Environment (infra/environments/<ENV>).")],
        version_text: Annotated[str | None, typer.Option("--version", help="Version number (default: the model "
                                                         "file's).")] = None,
        canary_text: Annotated[str | None, typer.Option("--canary-version", help="Render with this canary.")] = None,
        canary_percent: Annotated[int | None, typer.Option("--canary-percent", min=0, max=100,
                                                            help="Canary traffic percent (default 10).")] = None,
        output: Annotated[Path | None, typer.Option("-o", "--output", help="File (default stdout).")] = None,
        environments: EnvironmentsOption = DEFAULT_ENVS,
    ) -> None:
        """Print the InferenceService of one model version in an environment as YAML."""
        from serving.deploy.gitops import Environments
        from serving.deploy.isvc import build_inference_service, to_yaml

        version = None if version_text is None else parse_version_number(version_text, what="--version")
        canary_version = None if canary_text is None else parse_version_number(canary_text, what="--canary-version")
        envs = Environments(environments)
        cfg = envs.environment(env)
        dep = envs.deployment_to_render(env, name, version=version, canary_version=canary_version,
                                        canary_percent=canary_percent)
        settings = state(ctx).settings
        meta = _registry(ctx).get(name, dep.served_version).metadata
        isvc = build_inference_service(cfg, dep, meta, registry_uri=cfg.registry or settings.registry_uri,
                                       images=_images().with_overrides(cfg.images, f"{env}/environment.yaml"))
        text = to_yaml(isvc)
        if output is None:
            typer.echo(text, nl=False)
        else:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(text)
            err_console.print(f"wrote {output}", highlight=False)

    @render.command("env")
    def render_env(
        ctx: typer.Context,
        env: Annotated[str, typer.Argument(help="Environment name.")],
        output: Annotated[Path, typer.Option("-o", "--output", help="Folder for the manifests "
                                             "(e.g. infra/rendered/<ENV>).")],
        environments: EnvironmentsOption = DEFAULT_ENVS,
        json_out: JsonOption = False,
    ) -> None:
        """Turn an environment folder into InferenceService manifests plus a kustomization.yaml (the
        ServiceAccount and ServingRuntimes they name come from the platform chart)."""
        from serving.deploy.gitops import Environments
        from serving.deploy.isvc import render_environment

        files = render_environment(Environments(environments), env, _registry(ctx), output, images=_images(),
                                   registry_uri=state(ctx).settings.registry_uri)
        emit({"env": env, "output": str(output), "files": [str(f) for f in files]}, json_out,
             f"{env}: {len(files)} files in {output}")


# -- promote ----------------------------------------------------------------------------------------------
def _register_promote(app: typer.Typer) -> None:
    @app.command("promote")
    def promote(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(help="Model name.")],
        version: Annotated[str | None, typer.Option("--version", help="Version to run (number, 'latest', "
                                                    "'champion').")] = None,
        env: Annotated[str | None, typer.Option("--env", help="Environment to change.")] = None,
        source: Annotated[str | None, typer.Option("--from", help="Copy the version running in this env...")] = None,
        target: Annotated[str | None, typer.Option("--to", help="...to this env.")] = None,
        rollback: Annotated[bool, typer.Option("--rollback", help="Run the version before the current one "
                                               "(from the model file's history).")] = False,
        canary_percent: Annotated[int | None, typer.Option(
            "--canary-percent", min=0, max=100,
            help="Deploy --version as a canary with this share of traffic (0: deployed, no traffic yet; "
            "`skiff rollout start` then steps it).")] = None,
        force: Annotated[bool, typer.Option("--force", help="Deploy a version whose gate did not pass "
                                            "(needs --reason).")] = False,
        reason: Annotated[str | None, typer.Option("--reason", help="Why; recorded in the history.")] = None,
        commit: Annotated[bool, typer.Option("--commit", help="git commit the model file.")] = False,
        environments: EnvironmentsOption = DEFAULT_ENVS,
        json_out: JsonOption = False,
    ) -> None:
        """Record in Git which version of a model runs in an environment (validated against the registry)."""
        from serving.deploy.gitops import commit_message, git_commit
        from skiff.cli import _cloud_aws

        scan = None
        ref = parse_version(version, what="--version") if version is not None else None
        modes = sum([ref is not None, source is not None or target is not None, rollback])
        if modes != 1:
            raise UsageError("give exactly one of --version V --env ENV, --from ENV --to ENV, --rollback --env ENV")
        envs = _environments(ctx, environments)
        reg = _registry(ctx)
        if source is not None or target is not None:
            if not (source and target) or env is not None:
                raise UsageError("--from and --to go together (and without --env)")
            if canary_percent is not None:
                raise UsageError("--canary-percent goes with --version")
            scan = _cloud_aws.promotion_scan_gate(envs, reg, target, name, envs.deployment(source, name).version,
                                                  _images(), force=force, reason=reason)
            result = envs.copy(reg, name, source, target, force=force, reason=_cloud_aws.with_scan_note(reason, scan))
        else:
            if env is None:
                raise UsageError("--env ENV is required")
            if rollback:
                if force or canary_percent is not None:
                    raise UsageError("--rollback takes no --force or --canary-percent")
                result = envs.rollback(reg, env, name, reason=reason)
            else:
                # ECR's scan gate on the serving image (no AWS call unless the environment's images are in ECR)
                scan = _cloud_aws.promotion_scan_gate(envs, reg, env, name, ref, _images(), force=force,
                                                      reason=reason)
                result = envs.promote(reg, env, name, ref, canary_percent=canary_percent, force=force,
                                      reason=_cloud_aws.with_scan_note(reason, scan))
        if commit and result.changed:
            result = result.model_copy(update={"commit": git_commit(Path(result.path), commit_message(result))})
        if result.changed:  # Azure ML: the environment as the version's tag and stage, when the env opted in
            from skiff.cloud.azure.models import on_promote

            on_promote(reg, result.env, name, result.version, environments=environments)
        what = (f"canary {result.version} at {result.canary.percent}%" if result.canary
                else f"version {result.version}")
        human = (f"{result.env}: {name} {what} ({result.action}; was {result.previous})"
                 + (" [forced]" if result.forced else "") + f" → {result.path}"
                 + (f" (commit {result.commit[:10]})" if result.commit else ""))
        if not result.changed:
            human = f"{result.env}: {name} already runs {what}; nothing changed"
        out = result.model_dump(mode="json")
        if scan is not None:
            out["scan_gate"] = scan.to_dict()
        emit(out, json_out, human)


# -- rollout ----------------------------------------------------------------------------------------------
def _register_rollout(app: typer.Typer) -> None:
    rollout = typer.Typer(help="Canary rollouts: metric-gated promotion step by step, automatic rollback.",
                          no_args_is_help=True)
    app.add_typer(rollout, name="rollout")

    def store(ctx: typer.Context) -> RolloutStore:
        from serving.rollout.store import RolloutStore
        from skiff.storage import Store

        settings = state(ctx).settings
        return RolloutStore(Store(settings.root, settings.storage_options))

    def record_in_env(ctx: typer.Context, environments: Path, env: str | None, name: str, st: Any) -> str | None:
        """Write the outcome into the env's model file when that file names this canary."""
        if env is None or st.phase not in ("promoted", "rolled_back"):
            return None
        res = _environments(ctx, environments).record_rollout_outcome(
            env, name, canary_version=st.canary_version, promoted=st.phase == "promoted", reason=st.reason)
        return None if res is None else res.path

    @rollout.command("start")
    def start(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(help="Model name.")],
        env: Annotated[str | None, typer.Option("--env", help="Environment (required in a cluster).")] = None,
        canary_version: Annotated[str | None, typer.Option("--canary-version", help="The new version "
                                                           "(default: the model file's canary).")] = None,
        stable_version: Annotated[str | None, typer.Option("--stable-version", help="The current version "
                                                           "(default: the model file's version, else the "
                                                           "champion, else the latest).")] = None,
        local: Annotated[bool, typer.Option("--local", help="Embedded engine: local servers and router.")] = False,
        router: Annotated[str | None, typer.Option("--router", help="With --local: drive the router of a "
                                                   "running `skiff serve --canary` at this URL.")] = None,
        port: Annotated[int, typer.Option("--port", help="With --local: the router's port.")] = 8080,
        seed: Annotated[int | None, typer.Option("--seed", help="Router RNG seed (reproducible split).")] = None,
        steps: Annotated[str | None, typer.Option("--steps", help="Comma-separated percents, e.g. 10,50,100.")] = None,
        min_requests: Annotated[int | None, typer.Option("--min-requests")] = None,
        interval: Annotated[float | None, typer.Option("--interval", help="Seconds between measurements.")] = None,
        timeout: Annotated[float | None, typer.Option("--timeout", help="Seconds a step may wait.")] = None,
        policy_file: Annotated[Path | None, typer.Option("--policy", help="YAML with RolloutPolicy fields.")] = None,
        feedback: Annotated[Path | None, typer.Option("--feedback", help="JSON-lines file of delayed labels "
                                                      "(model, version, prediction, label, at).")] = None,
        prometheus: Annotated[str | None, typer.Option("--prometheus", help="Prometheus URL (cluster; default "
                                                       "the environment's prometheus_url).")] = None,
        replace: Annotated[bool, typer.Option("--replace", help="Replace a rollout recorded as running.")] = False,
        record: Annotated[bool, typer.Option("--record/--no-record", help="Write the outcome into the env's "
                                             "model file.")] = True,
        environments: EnvironmentsOption = DEFAULT_ENVS,
        json_out: JsonOption = False,
    ) -> None:
        """Run a canary rollout to its end: promoted (exit 0) or rolled back (exit 1)."""
        from serving.rollout.actuators import KServeActuator, RouterActuator
        from serving.rollout.controller import RolloutController
        from serving.rollout.measurements import FileFeedback, PrometheusMetricsSource, ScrapeMetricsSource
        from skiff.rollout_policy import RolloutPolicy

        settings = state(ctx).settings
        envs = _environments(ctx, environments)
        cfg = envs.environment(env) if env else None
        dep = envs.deployment(env, name) if env and envs.model_path(env, name).is_file() else None
        step_list = None
        if steps:
            try:
                step_list = [int(s) for s in steps.split(",") if s.strip()]
            except ValueError as e:
                raise UsageError(f"--steps {steps!r}: comma-separated integers") from e
        policy = _policy(cfg.rollout if cfg else RolloutPolicy(), policy_file, steps=step_list,
                         min_requests=min_requests, interval=interval, timeout=timeout)
        fb = FileFeedback(feedback) if feedback else None
        canary_version, stable_version = (
            None if v is None else str(parse_version(v, what=flag))
            for v, flag in ((canary_version, "--canary-version"), (stable_version, "--stable-version")))
        canary = canary_version or (str(dep.canary.version) if dep and dep.canary else None)
        stable = stable_version or (str(dep.version) if dep else None)
        state_env = env or LOCAL_ENV

        def finish(st: Any, release: Callable[[str], object] | None = None) -> None:
            recorded = record_in_env(ctx, environments, env, name, st) if record else None
            if release is not None and recorded and st.phase == "rolled_back":
                # Git now runs the stable version alone: once synced, the rollback's 0 % goes back to Git
                try:
                    release(st.stable_version)
                except SkiffError as e:
                    err_console.print(f"warning: {e.message}", highlight=False)
            out = st.model_dump(mode="json")
            out["recorded_in"] = recorded
            emit(out, json_out, lambda _: _decision_table(st.model_dump(mode="json")))
            if recorded and not json_out:
                console.print(f"recorded in {recorded}", highlight=False)
            if st.phase != "promoted":
                raise GateFailed(f"canary {st.canary_version} of {name} {st.phase.replace('_', ' ')}: {st.reason}")

        if local:
            if router:
                act = RouterActuator(router)
                ups = act.upstreams()
                if ups.get("model") != name:
                    raise UsageError(f"the router at {router} serves {ups.get('model')!r}, not {name!r}")
                stable = stable or str(ups["stable"]["version"])
                canary = canary or str(ups["canary"]["version"])
                metrics = ScrapeMetricsSource(name, (ups["stable"]["url"] + "/metrics", stable),
                                              (ups["canary"]["url"] + "/metrics", canary), feedback=fb)
                finish(RolloutController(model=name, env=state_env, stable_version=stable, canary_version=canary,
                                         policy=policy, metrics=metrics, actuator=act, store=store(ctx),
                                         replace=replace).run())
                return
            from serving.rollout.canary import local_canary, resolve_version, sigterm_exits

            if canary is None:
                raise UsageError("give --canary-version (or --env with a model file that names a canary)")
            canary = resolve_version(name, canary, settings.root)
            stable = resolve_version(name, stable, settings.root)  # None: the champion, else the latest
            # SIGTERM ends the rollout like Ctrl-C: the canary is rolled back and both servers stopped
            with sigterm_exits(), local_canary(name, stable, canary, 0, root=settings.root, port=port,
                                               seed=seed) as lc:
                err_console.print(f"canary router for {name} on {lc.url}: send traffic there "
                                  f"(stable {stable}, canary {canary})", highlight=False)
                act = RouterActuator(lc.url)
                metrics = ScrapeMetricsSource(name, (lc.stable_url + "/metrics", stable),
                                              (lc.canary_url + "/metrics", canary), feedback=fb)
                st = RolloutController(model=name, env=state_env, stable_version=stable, canary_version=canary,
                                       policy=policy, metrics=metrics, actuator=act, store=store(ctx),
                                       replace=replace).run()
            finish(st)
            return

        if cfg is None:
            raise UsageError("a cluster rollout needs --env ENV (or use --local)")
        if canary is None or stable is None:
            raise UsageError(f"{name} in {env}: the model file names no canary; record one with "
                             f"`skiff promote {name} --version V --env {env} --canary-percent 0`")
        prom = prometheus or cfg.prometheus_url
        if not prom:
            raise UsageError(f"no Prometheus URL: set prometheus_url in {env}/environment.yaml or --prometheus")
        from serving.deploy.isvc import isvc_name

        kserve_act = KServeActuator(_kube_api(), isvc_name(name), cfg.namespace)
        prometheus_metrics = PrometheusMetricsSource(prom, name, stable, canary, feedback=fb)
        finish(RolloutController(model=name, env=state_env, stable_version=stable, canary_version=canary,
                                 policy=policy, metrics=prometheus_metrics, actuator=kserve_act, store=store(ctx),
                                 replace=replace).run(), release=kserve_act.release)

    @rollout.command("release")
    def release(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(help="Model name.")],
        env: Annotated[str, typer.Option("--env", help="Environment (infra/environments/<ENV>).")],
        timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for Argo CD's sync.")] = 300.0,
        environments: EnvironmentsOption = DEFAULT_ENVS,
        json_out: JsonOption = False,
    ) -> None:
        """After a rollback: hand the canary percent back to Git once the stable version is served again."""
        from serving.deploy.isvc import isvc_name
        from serving.rollout.actuators import KServeActuator

        envs = _environments(ctx, environments)
        cfg, dep = envs.environment(env), envs.deployment(env, name)
        if dep.canary is not None:
            raise UsageError(f"{name} in {env} still records canary {dep.canary.version}: end that rollout first")
        act = KServeActuator(_kube_api(), isvc_name(name), cfg.namespace, timeout=timeout)
        traffic = act.release(str(dep.version))
        emit({"model": name, "env": env, "version": dep.version, **traffic}, json_out,
             f"{name} in {env}: version {dep.version} takes all traffic; the canary percent is Git's again")

    @rollout.command("status")
    def status(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(help="Model name.")],
        env: Annotated[str | None, typer.Option("--env", help="Environment (default: local).")] = None,
        json_out: JsonOption = False,
    ) -> None:
        """Show a rollout's phase and every decision with its evidence."""
        st = store(ctx).get(env or LOCAL_ENV, name).model_dump(mode="json")
        emit(st, json_out, _decision_table)

    def manual(ctx: typer.Context, name: str, env: str | None, action: str, reason: str, json_out: bool,
               environments: Path, record: bool) -> None:
        from serving.rollout.actuators import actuator_from_target
        from serving.rollout.controller import manual_decision

        s = store(ctx)
        current = s.get(env or LOCAL_ENV, name)
        api = _kube_api() if current.target.get("kind") == "kserve" else None
        act = actuator_from_target(current.target, kube_api=api)
        st = manual_decision(s, env or LOCAL_ENV, name, action, act, reason)  # type: ignore[arg-type]
        recorded = record_in_env(ctx, environments, env, name, st) if record else None
        out = st.model_dump(mode="json")
        out["recorded_in"] = recorded
        emit(out, json_out, f"{name}: canary {st.canary_version} {st.phase.replace('_', ' ')} by hand "
             f"({st.canary_percent}% canary)" + (f"; recorded in {recorded}" if recorded else ""))

    @rollout.command("promote")
    def promote_now(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(help="Model name.")],
        env: Annotated[str | None, typer.Option("--env", help="Environment (default: local).")] = None,
        reason: Annotated[str, typer.Option("--reason", help="Why; recorded.")] = "promoted by hand",
        record: Annotated[bool, typer.Option("--record/--no-record")] = True,
        environments: EnvironmentsOption = DEFAULT_ENVS,
        json_out: JsonOption = False,
    ) -> None:
        """Send all traffic to the canary now and end the rollout as promoted."""
        manual(ctx, name, env, "promote", reason, json_out, environments, record)

    @rollout.command("rollback")
    def rollback_now(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(help="Model name.")],
        env: Annotated[str | None, typer.Option("--env", help="Environment (default: local).")] = None,
        reason: Annotated[str, typer.Option("--reason", help="Why; recorded.")] = "rolled back by hand",
        record: Annotated[bool, typer.Option("--record/--no-record")] = True,
        environments: EnvironmentsOption = DEFAULT_ENVS,
        json_out: JsonOption = False,
    ) -> None:
        """Send all traffic back to the stable version now and end the rollout as rolled back."""
        manual(ctx, name, env, "rollback", reason, json_out, environments, record)
