"""The serving containers' entry point: ``python -m serving predictor|transformer ...``.

One entry point for both roles of an InferenceService and for the local servers skiff starts side by
side (canaries, benchmarks, tests); it calls :func:`~serving.runtime.server.run_server` in-process, never
skiff's CLI.

- ``python -m serving predictor NAME [--version V] [--host H] [--port P]``: a registered version behind
  V1 and V2. A KServe ServingRuntime runs ``python -m serving predictor --host 0.0.0.0 --port 8080`` and
  the InferenceService appends ``NAME --version V``.
- ``python -m serving transformer --model NAME [--version V] [--predictor_host HOST:PORT]``: the Feast
  transformer named ``--model_name`` (default NAME): it takes entity keys and looks up the version's
  features, or, for a recommender version, takes the recommender's request and adds each user's recent
  items from the online store (:mod:`serving.runtime.transformer`). KServe appends ``--model_name``,
  ``--predictor_host`` and ``--http_port`` to the container's own arguments; flags KServe may add beyond
  those are ignored. Without ``--predictor_host`` the predictor runs in the same process (as
  ``NAME-predictor``). It binds all interfaces by default: in a pod it sits behind KServe's ingress.

- ``python -m serving log-sink [--host H] [--port P]``: the inference-log sink KServe's logger sends its
  CloudEvents to (:mod:`serving.runtime.log_sink`).

Settings come from ``SKIFF_*`` variables and ``skiff.yaml`` (``--root`` overrides the root). A skiff
error ends the process with its exit code and one line on stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys

from serving.runtime.server import ServerOptions, run_server
from skiff.config import load_settings
from skiff.errors import SkiffError

__all__ = ["main"]

log = logging.getLogger(__name__)


def _common(p: argparse.ArgumentParser, *, host: str) -> None:
    p.add_argument("--version", default=None, help="Version number, 'latest' or 'champion' (default: "
                   "champion, else latest).")
    p.add_argument("--host", default=host, help=f"Address to bind (default {host}).")
    p.add_argument("--port", "--http_port", dest="port", type=int, default=8080, help="HTTP port.")
    p.add_argument("--grpc-port", dest="grpc_port", type=int, default=None,
                   help="Also serve the V2 gRPC protocol on this port.")
    p.add_argument("--engine", default="auto", help="auto: an exact ONNX export when the version has one; "
                   "sklearn: always the scikit-learn pipeline.")
    p.add_argument("--access-log", dest="access_log", action="store_true", help="Log a line per request.")
    p.add_argument("--root", default=None, help="Root URI of lake, artifacts and registry (default: settings).")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m serving", description="skiff's model server (KServe V1/V2).")
    roles = ap.add_subparsers(dest="role", required=True, metavar="predictor|transformer")
    pred = roles.add_parser("predictor", help="Serve a registered model version.")
    pred.add_argument("model", help="Registered model name.")
    _common(pred, host="127.0.0.1")
    tr = roles.add_parser("transformer", help="Serve the Feast transformer of a registered model version.")
    tr.add_argument("--model", required=True, help="Registered model name.")
    tr.add_argument("--model_name", default=None, help="Name requests address (KServe: the service name).")
    tr.add_argument("--predictor_host", default=None, help="host:port of the predictor (default: in-process).")
    tr.add_argument("--feature_service", default=None, help="Expected feature service (checked).")
    tr.add_argument("--feature_server_url", default=None, help="Feast feature server; default: the store.")
    tr.add_argument("--feature_timeout", type=float, default=2.0, help="Seconds a feature lookup may take.")
    _common(tr, host="0.0.0.0")  # noqa: S104 - inside a pod, behind KServe's ingress
    return ap


def options_from_args(argv: list[str] | None = None) -> tuple[ServerOptions, str | None, list[str]]:
    """The server options, settings root and ignored arguments (a transformer's only) of a command line;
    usage errors exit 2, argparse's way."""
    ap = _parser()
    args, unknown = ap.parse_known_args(argv)
    if unknown and args.role != "transformer":
        ap.error(f"unrecognized arguments: {' '.join(unknown)}")
    common = dict(version=args.version, host=args.host, port=args.port, grpc_port=args.grpc_port,
                  engine=args.engine, access_log=args.access_log)
    if args.role == "predictor":
        return ServerOptions(name=args.model, **common), args.root, unknown
    return ServerOptions(name=args.model, with_features=True, served_name=args.model_name,
                         predictor_host=args.predictor_host, feature_service=args.feature_service,
                         feature_server_url=args.feature_server_url, feature_timeout_s=args.feature_timeout,
                         **common), args.root, unknown


def main(argv: list[str] | None = None) -> int:
    """Run the server a command line asks for until SIGINT/SIGTERM; return the exit code."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["log-sink"]:  # KServe's logger sends its CloudEvents here (serving.runtime.log_sink)
        from serving.runtime.log_sink import main as sink_main

        return sink_main(args[1:])
    try:
        options, root, ignored = options_from_args(argv)
        settings = load_settings(root=root)
        logging.basicConfig(level=getattr(logging, settings.log_level.upper(), logging.INFO),
                            format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
        for noisy in ("httpx", "httpcore"):  # one line per HTTP call is library chatter
            logging.getLogger(noisy).setLevel(logging.WARNING)
        if ignored:
            log.info("ignoring arguments %s", ignored)
        run_server(options, settings=settings)
    except SkiffError as e:
        print(f"serving: error: {e.message}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    return 0
