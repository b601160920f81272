"""``skiff serve`` runs a model version on KServe's model server; ``skiff predict`` asks one."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from skiff.cli._common import state
from skiff.errors import SkiffError, SourceError, UsageError


def add_commands(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(help="Registered model name.")],
        version: Annotated[str | None, typer.Option(
            "--version", help="Version number, 'latest' or 'champion' (default: champion, else latest).")] = None,
        port: Annotated[int, typer.Option("--port", help="HTTP port.")] = 8080,
        host: Annotated[str, typer.Option(
            "--host", help="Address to bind; 0.0.0.0 exposes the server to the network.")] = "127.0.0.1",
        with_features: Annotated[bool, typer.Option(
            "--with-features", help="Serve NAME as a Feast transformer taking entity keys; the predictor is "
            "NAME-predictor in the same server (or at --predictor-host).")] = False,
        predictor_host: Annotated[str | None, typer.Option(
            "--predictor-host", help="With --with-features: call the predictor NAME at HOST:PORT over HTTP "
            "instead of in-process.")] = None,
        access_log: Annotated[bool, typer.Option(
            "--access-log", help="Log a line per request (off by default).")] = False,
        grpc_port: Annotated[int | None, typer.Option(
            "--grpc-port", help="Also serve the V2 gRPC protocol on this port (same host).")] = None,
        engine: Annotated[str, typer.Option(
            "--engine", help="auto: an exact ONNX export when the version has one, else scikit-learn; "
            "sklearn: always the scikit-learn pipeline.")] = "auto",
        feature_timeout: Annotated[float, typer.Option(
            "--feature-timeout", help="Seconds a Feast online lookup may take.")] = 2.0,
        feature_server_url: Annotated[str | None, typer.Option(
            "--feature-server-url", help="With --with-features: read features from this Feast feature server "
            "(feast serve) instead of the online store.")] = None,
        canary: Annotated[str | None, typer.Option(
            "--canary", help="Also serve this version as a canary: two model servers behind a weighted router "
            "on --port.")] = None,
        canary_percent: Annotated[int, typer.Option(
            "--canary-percent", min=0, max=100, help="Share of requests the canary gets.")] = 10,
    ) -> None:
        """Serve a registered model on KServe's V1 and V2 protocols until interrupted."""
        from serving.runtime.server import import_kserve

        settings = state(ctx).settings
        if canary is not None:
            if predictor_host or feature_server_url or grpc_port:
                raise UsageError("--canary runs two local servers behind a router: it takes no --predictor-host, "
                                 "--feature-server-url or --grpc-port")
            from serving.rollout.canary import run_canary

            run_canary(name, version, canary, canary_percent, port, settings.root, host=host,
                       with_features=with_features)
            return

        import_kserve()
        from serving.runtime.server import ServerOptions, run_server

        run_server(ServerOptions(name=name, version=version, host=host, port=port, with_features=with_features,
                                 predictor_host=predictor_host, access_log=access_log, grpc_port=grpc_port,
                                 engine=engine, feature_timeout_s=feature_timeout,
                                 feature_server_url=feature_server_url), settings=settings)

    @app.command("predict")
    def predict(
        name: Annotated[str, typer.Argument(help="Model name on the server.")],
        json_body: Annotated[str, typer.Option(
            "--json", help="The request: V1 {\"instances\": [...]} (or V2 with --v2); @FILE reads a file, "
            "- reads stdin.")],
        url: Annotated[str, typer.Option("--url", help="The model server.")] = "http://127.0.0.1:8080",
        v2: Annotated[bool, typer.Option("--v2", help="Send to the V2 infer endpoint.")] = False,
        timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for the answer.")] = 30.0,
    ) -> None:
        """Send one prediction request and print the server's JSON answer."""
        import httpx

        text = json_body
        if text == "-":
            text = sys.stdin.read()
        elif text.startswith("@"):
            path = Path(text[1:])
            if not path.is_file():
                raise UsageError(f"--json: file not found: {path}")
            text = path.read_text()
        try:
            body = json.loads(text)
        except json.JSONDecodeError as e:
            raise UsageError(f"--json is not valid JSON: {e}") from e
        endpoint = f"{url.rstrip('/')}/v2/models/{name}/infer" if v2 else f"{url.rstrip('/')}/v1/models/{name}:predict"
        try:
            r = httpx.post(endpoint, json=body, timeout=timeout)
        except httpx.HTTPError as e:
            raise SourceError(f"cannot reach {endpoint}: {type(e).__name__}: {e}") from e
        try:
            answer = r.json()
        except ValueError:
            answer = None
        if r.status_code >= 400:
            reason = (answer.get("message") or answer.get("error")) if isinstance(answer, dict) else r.text[:500]
            detail = answer.get("detail") if isinstance(answer, dict) else None
            raise SkiffError(f"{r.status_code} from {endpoint}: {reason}"
                             + (f" {json.dumps(detail)}" if detail else ""), status=r.status_code)
        sys.stdout.write(json.dumps(answer, indent=2) + "\n")
