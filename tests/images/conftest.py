"""Fixtures of the image tests: the engine, the base image and the built images (tests/images/harness.py).

Every test here skips with the engine's reason where no container engine builds (a laptop without Docker);
CI here installs and starts one (.ci/run). The images are built once per session and, through their build
key, once per change across sessions; the sizes and build times are printed at the end of the run.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator

import pytest

from components._image import IMAGES
from tests.images import harness

_REPORT: dict[str, str] = {}
_ENGINES: list[harness.Engine] = []


@pytest.fixture(scope="session")
def engine() -> harness.Engine:
    try:
        eng = harness.find_engine()
    except harness.EngineMissing as e:
        pytest.skip(str(e))
    _ENGINES.append(eng)
    return eng


@pytest.fixture(scope="session")
def base(engine: harness.Engine) -> str:
    try:
        return harness.base_image(engine)
    except harness.EngineMissing as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def image(engine: harness.Engine, base: str) -> Callable[[str], str]:
    """``image(name)``: the reference of a built image of components/_image.py (built on first use)."""
    built: dict[str, str] = {}

    def get(name: str) -> str:
        if name not in built:
            built[name] = harness.build(engine, name, IMAGES[name], base)
            _REPORT[name] = f"{engine.size_mb(built[name]):.0f} MB"
        return built[name]

    return get


@pytest.fixture
def container(engine: harness.Engine) -> Iterator[Callable[..., str]]:
    """``container(image, *command, args=[...])``: a detached container (removed after the test); its name."""
    names: list[str] = []

    def start(ref: str, *command: str, args: tuple[str, ...] = ()) -> str:
        name = f"skiff-test-{uuid.uuid4().hex[:8]}"
        engine.run("run", "-d", "--name", name, *args, ref, *command)
        names.append(name)
        return name

    yield start
    for name in names:
        engine.run("rm", "-f", name, check=False)


def logs(engine: harness.Engine, name: str) -> str:
    proc = engine.run("logs", name, check=False)
    return (proc.stdout or "") + (proc.stderr or "")


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001 - pytest's hook signature
    if not _REPORT:
        return
    terminalreporter.section("skiff images")
    for name, size in _REPORT.items():
        terminalreporter.write_line(f"{name}: {IMAGES[name]} {size}")
    for eng in _ENGINES:
        terminalreporter.write_line(f"build seconds (0.0: the image's build key matched, nothing built): "
                                    f"{eng.timings}")


def run_in(engine: harness.Engine, ref: str, *command: str, args: tuple[str, ...] = (), timeout: float = 180,
           ) -> subprocess.CompletedProcess[str]:
    """``docker run --rm`` of a command; the finished process (never raises on a non-zero exit)."""
    return engine.run("run", "--rm", *args, ref, *command, timeout=timeout, check=False)


#: How the tests run a container the way a cluster does: non-root (the image's uid), a read-only root
#: file system (writes go to /tmp, a declared volume), no network unless a test needs the host's services.
READ_ONLY = ("--read-only", "--user", "10001:10001")
HOST_NET = ("--network=host",)
ENV_PASSTHROUGH = {k: v for k, v in os.environ.items() if k == "OMP_NUM_THREADS"}
