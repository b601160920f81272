"""A local canary: two model servers (stable and canary version) behind the weighted router.

``skiff serve NAME --canary V2 --canary-percent 10`` runs :func:`run_canary`; ``skiff rollout start NAME
--canary-version V2 --local`` uses :func:`local_canary` and drives the split with the rollout controller.
Both servers are real KServe ModelServers started by :func:`serving.runtime.server.start_local_server` on free
loopback ports; only the router listens on the port the user names.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from serving.rollout.router import CanaryRouter, RouterThread, Upstream, free_port, serve_router
from skiff.errors import UsageError

__all__ = ["LocalCanary", "local_canary", "run_canary", "resolve_version", "sigterm_exits"]

log = logging.getLogger(__name__)

Launch = Callable[[str, str, int], Any]
Stop = Callable[[Any], None]


@dataclass
class LocalCanary:
    """A running local canary."""

    router: CanaryRouter
    thread: RouterThread | None
    stable_url: str
    canary_url: str
    handles: list[Any] = field(default_factory=list)

    @property
    def url(self) -> str:
        assert self.thread is not None
        return self.thread.url


@contextlib.contextmanager
def sigterm_exits() -> Iterator[None]:
    """Turn SIGTERM into ``SystemExit`` inside the block, so ``finally`` clauses stop the model servers
    (they run in their own sessions and would outlive a process killed outright)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _exit(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def resolve_version(name: str, version: int | str | None, root: str) -> str:
    """A version number as the servers label their metrics ('latest', 'champion' and None resolved)."""
    if version is not None and str(version).isdigit():
        return str(int(version))
    from skiff.config import load_settings
    from skiff.registry import ModelRegistry

    return str(ModelRegistry.from_settings(load_settings(root=root)).get(name, version).version)


def _default_launchers(root: str, with_features: bool) -> tuple[Launch, Stop]:
    from serving.runtime.server import start_local_server, stop_local_server

    def launch(name: str, version: str, port: int) -> Any:
        return start_local_server(name, version, port, root=root, with_features=with_features)

    return launch, stop_local_server


@contextlib.contextmanager
def _servers(name: str, stable_version: str, canary_version: str, *, launch: Launch, stop: Stop,
             host: str) -> Iterator[tuple[str, str, list[Any]]]:
    """Start both servers side by side (each takes seconds to load); stop both on exit or failure."""
    ports = [free_port(host), free_port(host)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(launch, name, v, p) for v, p in zip((stable_version, canary_version), ports,
                                                                      strict=True)]
    handles, errors = [], []
    for f in futures:
        try:
            handles.append(f.result())
        except Exception as e:  # noqa: BLE001 - stop the one that started, then report the failure
            errors.append(e)
    try:
        if errors:
            raise errors[0]
        urls = [f"http://{host}:{p}" for p in ports]
        for version, url in zip((stable_version, canary_version), urls, strict=True):
            log.info("%s version %s serves on %s", name, version, url)
        yield urls[0], urls[1], handles
    finally:
        for h in reversed(handles):
            with contextlib.suppress(Exception):
                stop(h)


@contextlib.contextmanager
def local_canary(
    name: str,
    stable_version: int | str,
    canary_version: int | str,
    percent: int,
    *,
    root: str,
    port: int = 0,
    host: str = "127.0.0.1",
    seed: int | None = None,
    with_features: bool = False,
    launch: Launch | None = None,
    stop: Stop | None = None,
) -> Iterator[LocalCanary]:
    """Start both servers and the router (on a background thread); stop them all on exit.

    ``launch(name, version, port)`` / ``stop(handle)`` start and stop one model server; by default
    :func:`serving.runtime.server.start_local_server` and :func:`serving.runtime.server.stop_local_server`.
    """
    if launch is None or stop is None:
        launch, stop = _default_launchers(root, with_features)
        stable_version, canary_version = (resolve_version(name, stable_version, root),
                                          resolve_version(name, canary_version, root))
    with _servers(name, str(stable_version), str(canary_version), launch=launch, stop=stop, host=host) as (
        stable_url, canary_url, handles,
    ):
        router = _router(name, (stable_url, stable_version), (canary_url, canary_version), percent, seed)
        thread = RouterThread(router, host, port).start()
        try:
            yield LocalCanary(router=router, thread=thread, stable_url=stable_url, canary_url=canary_url,
                              handles=handles)
        finally:
            thread.stop()


def _router(name: str, stable: tuple[str, int | str], canary: tuple[str, int | str], percent: int,
            seed: int | None) -> CanaryRouter:
    """The weighted router in front of the stable and canary servers (each given as ``(url, version)``)."""
    return CanaryRouter(name, Upstream(role="stable", url=stable[0], version=str(stable[1])),
                        Upstream(role="canary", url=canary[0], version=str(canary[1])), percent, seed=seed)


def run_canary(
    name: str,
    stable_version: int | str | None,
    canary_version: int | str,
    percent: int,
    port: int,
    root: str,
    *,
    host: str = "127.0.0.1",
    seed: int | None = None,
    with_features: bool = False,
) -> None:
    """Serve ``name`` with ``percent`` % of requests on the canary version until interrupted.

    Versions are numbers, 'latest' or 'champion' (None: the champion, else the latest).

    The router listens on ``host:port``; its admin API (loopback only) changes the split, which is what
    ``skiff rollout start NAME --local --router http://127.0.0.1:PORT`` drives.
    """
    launch, stop = _default_launchers(root, with_features)
    stable_version = resolve_version(name, stable_version, root)
    canary_version = resolve_version(name, canary_version, root)
    if stable_version == canary_version:
        raise UsageError(f"the canary version {canary_version} is the stable version of {name}")
    with sigterm_exits(), _servers(name, str(stable_version), str(canary_version), launch=launch, stop=stop,
                                   host=host) as (stable_url, canary_url, _handles):
        router = _router(name, (stable_url, stable_version), (canary_url, canary_version), percent, seed)
        log.info("canary router for %s on http://%s:%s: %s%% to version %s, the rest to version %s",
                 name, host, port, percent, canary_version, stable_version)
        # uvicorn shuts down gracefully on SIGINT/SIGTERM and then raises the signal again: as
        # KeyboardInterrupt / SystemExit here, so both servers are stopped on the way out
        with contextlib.suppress(KeyboardInterrupt, SystemExit):
            serve_router(router, host, port)
