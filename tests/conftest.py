"""Shared fixtures: isolated skiff roots and checks for the real services on this machine."""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def require_tool(name: str) -> str:
    """A command-line tool from .tools/bin (`make tools`), the venv, or PATH; the test skips without it."""
    for candidate in (REPO / ".tools" / "bin" / name, Path(sys.executable).with_name(name)):
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if not found:
        pytest.skip(f"{name} not found in .tools/bin, the venv or on PATH (`make setup` installs it)")
    return found


def service_up(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def require_service(name: str, port: int) -> None:
    """Skip with a clear reason where the service is absent (a laptop); CI here has them all."""
    if not service_up(port):
        pytest.skip(f"{name} is not running on 127.0.0.1:{port}")


@pytest.fixture
def skiff_env(tmp_path, monkeypatch):
    """A working folder with its own skiff root, so tests never touch ./.skiff."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SKIFF_ROOT", str(tmp_path / ".skiff"))
    monkeypatch.delenv("SKIFF_CONFIG", raising=False)
    return tmp_path


def wait_until_ready(url: str, proc, timeout: float = 60.0, log_path: Path | None = None) -> None:
    """Poll ``url`` until it answers 200; fail with the server's log when the process exits or time runs out."""
    import time

    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        log = log_path.read_text()[-3000:] if log_path is not None and log_path.exists() else ""
        assert proc.poll() is None, f"the server exited with {proc.returncode} before {url} was ready\n{log}"
        assert time.monotonic() < deadline, f"{url} was not ready within {timeout:.0f} s\n{log}"
        time.sleep(0.3)


def post_oversized(port: int, head: bytes, total: int, frame: bytes, end: bytes = b"") -> tuple[bytes, int]:
    """Send ``head`` then ``frame`` until ``total`` body bytes went out (then ``end``), stopping when the
    server closes; return its answer (up to the end of a JSON body) and how many bytes were sent."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head)
        sent = 0
        try:
            while sent < total:
                s.sendall(frame)
                sent += len(frame)
            s.sendall(end)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed: it never wanted the rest
        s.settimeout(10)
        data = b""
        try:
            while not (b"\r\n\r\n" in data and data.rstrip().endswith(b"}")):
                part = s.recv(65536)
                if not part:
                    break
                data += part
        except (ConnectionResetError, TimeoutError):
            pass
        return data, sent
