"""``skiff api``: serve the REST API (uvicorn); ``skiff api hash-token``: a token's SHA-256 digest."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from skiff.cli._common import err_console, state
from skiff.errors import ConfigError


def add_commands(app: typer.Typer) -> None:
    api = typer.Typer(
        help="Serve the REST API (models, pipelines, deployments, rollbacks, drift). Tokens: "
        "SKIFF_API_TOKENS_SHA256 (admin), SKIFF_API_READ_TOKENS_SHA256 (read-only): comma-separated SHA-256 "
        "digests, and/or --tokens-file.",
        invoke_without_command=True,
    )
    app.add_typer(api, name="api")

    @api.callback()
    def serve(
        ctx: typer.Context,
        host: Annotated[str, typer.Option("--host", help="Address to bind (loopback unless told).")] = "127.0.0.1",
        port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port.")] = 8000,
        tokens_file: Annotated[Path | None, typer.Option(
            "--tokens-file",
            help="File of token SHA-256 digests, one per line: '<digest>' (admin) or '<digest> read'.")] = None,
        environments: Annotated[Path, typer.Option(
            "--environments", envvar="SKIFF_ENVIRONMENTS",
            help="The GitOps environments folder (env: SKIFF_ENVIRONMENTS).")] = Path("infra/environments"),
        max_body_bytes: Annotated[int, typer.Option(
            "--max-body-bytes", envvar="SKIFF_API_MAX_BODY_BYTES", min=1,
            help="Largest request body accepted; larger ones get 413 (env: SKIFF_API_MAX_BODY_BYTES).")] = 1024 * 1024,
        docs: Annotated[bool, typer.Option(
            "--docs/--no-docs", envvar="SKIFF_API_DOCS",
            help="Serve Swagger UI on /docs (its assets come from this server, never a CDN).")] = True,
    ) -> None:
        """Serve the REST API. Tokens: SKIFF_API_TOKENS_SHA256 (admin), SKIFF_API_READ_TOKENS_SHA256 (read),
        comma-separated digests, and/or --tokens-file. Refuses to start without one."""
        if ctx.invoked_subcommand is not None:
            return
        import uvicorn

        from skiff.api import create_app, load_tokens
        from skiff.api.auth import ADMIN_ENV, READ_ENV

        tokens = load_tokens(tokens_file)
        if not tokens:
            raise ConfigError(
                f"no API token configured: set {ADMIN_ENV} (and optionally {READ_ENV}) to comma-separated "
                "SHA-256 digests, or give --tokens-file; `skiff api hash-token` turns a token into a digest")
        settings = state(ctx).settings
        app = create_app(settings, tokens=tokens, environments=environments, max_body_bytes=max_body_bytes,
                         docs=docs)
        err_console.print(f"skiff api on http://{host}:{port} ({'docs at /docs' if docs else 'no /docs'}; "
                          f"{len(tokens.admin)} admin, {len(tokens.read)} read token(s))", highlight=False)
        if host not in ("127.0.0.1", "localhost", "::1"):
            err_console.print(f"warning: serving plain HTTP on {host}; put TLS in front (an ingress or a "
                              "proxy) so bearer tokens never cross a network in clear", highlight=False)
        uvicorn.run(app, host=host, port=port, log_level=settings.log_level.lower())

    @api.command("hash-token")
    def hash_token_cmd() -> None:
        """Read a token from stdin and print its SHA-256 digest (what the server is given)."""
        from skiff.api.auth import hash_token

        token = sys.stdin.readline()
        typer.echo(hash_token(token))
