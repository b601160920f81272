"""The ``skiff`` command-line tool.

Exit codes: 0 success; 1 a gate said no (validation anomalies, a challenger that lost); 2 usage or
input errors (bad spec, unreadable source, unknown parameter); 3 an unexpected failure (a bug: run
again with ``--debug`` for the traceback). Errors are one line on stderr. Commands that report results
take ``--json`` and then print one JSON document on stdout.

Commands live in the modules of this package; each defines ``add_commands(app)`` (the commands it adds to the app).
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from skiff import __version__
from skiff.cli._common import State, err_console
from skiff.config import load_settings
from skiff.errors import SkiffError
from skiff.redact import redact_log_output, redact_text

__all__ = ["app", "main"]

app = typer.Typer(
    name="skiff",
    help="skiff: ML pipelines, features, models and serving — on a laptop or a Kubernetes cluster.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"skiff {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option("--config", help="Settings file (default: ./skiff.yaml).", show_default=False)
    ] = None,
    root: Annotated[
        str | None, typer.Option("--root", help="Root URI of lake, artifacts and registry (default .skiff).")
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    import os

    if config is not None:
        if not config.is_file():
            raise SkiffError(f"settings file not found: {config}")
        os.environ["SKIFF_CONFIG"] = str(config)
    settings = load_settings(root=root)
    logging.basicConfig(
        level=logging.DEBUG if debug else getattr(logging, settings.log_level.upper(), logging.INFO),
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    redact_log_output()  # no credential in a URL reaches stderr, whoever logs it
    if not debug:  # one line per HTTP call is library chatter, not something a user asked for
        for noisy in ("httpx", "httpcore"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    ctx.obj = State(settings=settings, debug=debug)


def _add_commands() -> None:
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            module = importlib.import_module(f"{__name__}.{mod.name}")
            module.add_commands(app)


_add_commands()


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app and map skiff errors to exit codes and one line on stderr."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        app(args=argv, standalone_mode=False)
    except SkiffError as e:
        if debug:
            err_console.print_exception()
        err_console.print(f"[bold red]skiff: error:[/] {e.message}", highlight=False, soft_wrap=True)
        return e.exit_code
    except typer.Exit as e:
        return e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("skiff: aborted")
        return 130
    except Exception as e:  # click's own usage errors come here too (typer may vendor click)
        show, exit_code = getattr(e, "show", None), getattr(e, "exit_code", None)
        if callable(show) and isinstance(exit_code, int):
            show()
            return exit_code
        if debug:
            err_console.print_exception()
        err_console.print(
            f"[bold red]skiff: unexpected error:[/] {type(e).__name__}: {redact_text(str(e))} "
            "(run with --debug for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        return 3
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
