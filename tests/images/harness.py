"""Builds skiff's images for the tests, on any machine with a Docker engine, with or without a registry.

- The engine: a ``docker`` CLI whose daemon answers and that builds with BuildKit (the Dockerfile mounts
  the CA secret, a uv cache and the build stage's tools). Docker >= 23 with buildx builds with BuildKit by
  default; the 20.10 CLI (Debian's docker.io) does with ``DOCKER_BUILDKIT=1``. Without one, image tests skip.
- The base: ``SKIFF_TEST_BASE_IMAGE`` when set; else ``python:3.11.11-slim-bookworm`` when present or
  pullable; else a Debian bookworm + Python 3.11 root file system made with ``mmdebstrap`` from Debian's
  archive and imported as ``localhost/skiff-base:bookworm-<recipe hash>`` (kept: built once per recipe).
- The images: tagged with the references of ``components/_image.py`` (what the compiled pipeline and the
  ServingRuntimes name) and labelled with a key over the Dockerfile, the locks, every file of the build
  context and the base image; an image whose key matches is not rebuilt, and a changed source file
  rebuilds only the layers after it (the locked dependencies stay cached).
- Extra CAs: ``SKIFF_EXTRA_CA`` (a PEM file), else the host's ``/usr/local/share/ca-certificates/*.crt``,
  reach the build as the ``extra_ca`` secret, never the build context.

``python -m tests.images.harness [skiff skiff-tfdv ...]`` builds from the command line and prints timings.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
UPSTREAM_BASE = "python:3.11.11-slim-bookworm"
#: The Debian packages of the home-made base: Debian 12's python3 is 3.11, like python:3.11-slim.
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
BASE_SUITE = "bookworm"
#: What the build context holds (.dockerignore lets these through).
CONTEXT = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "requirements", "skiff", "components",
           "pipelines", "serving", "feature_repo", "examples")
KEY_LABEL = "io.skiff.build-key"
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
#: BuildKit cache kept after a build (SKIFF_TEST_BUILD_CACHE_GB; the skiff-gpu image alone needs ~8 more).
BUILD_CACHE_GB = int(os.environ.get("SKIFF_TEST_BUILD_CACHE_GB", "10"))


class EngineMissing(RuntimeError):
    """No usable container engine; the message says why (image tests skip with it)."""


@dataclass
class Engine:
    """A docker CLI and the environment that makes it build with BuildKit."""

    cli: str
    env: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def run(self, *args: str, timeout: float = 120, check: bool = True, capture: bool = True,
            ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.cli, *args], env={**os.environ, **self.env}, timeout=timeout, text=True,
                              capture_output=capture)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{self.cli} {' '.join(args[:3])} … failed ({proc.returncode}):\n"
                               f"{(proc.stdout or '')[-3000:]}\n{(proc.stderr or '')[-6000:]}")
        return proc

    def inspect(self, ref: str) -> dict | None:
        proc = self.run("image", "inspect", ref, check=False)
        return json.loads(proc.stdout)[0] if proc.returncode == 0 else None

    def size_mb(self, ref: str) -> float:
        info = self.inspect(ref)
        return round(info["Size"] / 1e6, 1) if info else 0.0


def _cli_candidates() -> list[str]:
    found = [os.environ.get("SKIFF_DOCKER", ""), shutil.which("docker") or "", "/usr/bin/docker"]
    out: list[str] = []
    for c in found:
        if c and Path(c).exists() and c not in out:
            out.append(c)
    return out


def find_engine() -> Engine:
    """The first docker CLI that reaches its daemon and can build with BuildKit, else EngineMissing."""
    reasons = []
    candidates = _cli_candidates()
    if not candidates:
        raise EngineMissing("no docker CLI on PATH (install docker.io and start dockerd: see .ci/run)")
    for cli in candidates:
        try:
            ver = subprocess.run([cli, "version", "--format", "{{.Client.Version}} {{.Server.Version}}"],
                                 capture_output=True, text=True, timeout=15)
        except (OSError, subprocess.TimeoutExpired) as e:
            reasons.append(f"{cli}: {e}")
            continue
        if ver.returncode != 0:
            reasons.append(f"{cli}: no daemon answers ({(ver.stderr or ver.stdout).strip()[-200:]})")
            continue
        client = ver.stdout.split()[0]
        if subprocess.run([cli, "buildx", "version"], capture_output=True, timeout=15).returncode == 0:
            return Engine(cli)
        if int(client.split(".")[0]) < 23:  # the 20.10 CLI has BuildKit built in
            return Engine(cli, {"DOCKER_BUILDKIT": "1"})
        reasons.append(f"{cli}: client {client} without the buildx plugin cannot build with BuildKit")
    raise EngineMissing("no container engine that builds with BuildKit: " + "; ".join(reasons))


def _digest(parts: list[bytes]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()


def base_recipe_key() -> str:
    return _digest([BASE_SUITE.encode(), " ".join(BASE_PACKAGES).encode()])[:12]


def _mmdebstrap_base(engine: Engine, tag: str) -> None:
    mmdebstrap = shutil.which("mmdebstrap")
    if not mmdebstrap:
        raise EngineMissing(f"no base image: {UPSTREAM_BASE} cannot be pulled and mmdebstrap is not installed "
                            "(apt-get install mmdebstrap, or set SKIFF_TEST_BASE_IMAGE)")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="skiff-base-") as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        proc = subprocess.run([mmdebstrap, "--variant=minbase", "--include=" + ",".join(BASE_PACKAGES),
                               "--aptopt=Acquire::Retries 3", BASE_SUITE, str(rootfs)],
                              capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"mmdebstrap failed:\n{proc.stderr[-4000:]}")
        engine.run("import", "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                   "--change", "ENV LANG=C.UTF-8", "--change", 'CMD ["python3"]', str(rootfs), tag, timeout=300)
    engine.timings["base (mmdebstrap)"] = round(time.perf_counter() - t0, 1)


def base_image(engine: Engine) -> str:
    """A base image for ``--build-arg BASE_IMAGE``: the upstream one where it can be had, else home-made."""
    if os.environ.get("SKIFF_TEST_BASE_IMAGE"):
        return os.environ["SKIFF_TEST_BASE_IMAGE"]
    if engine.inspect(UPSTREAM_BASE):
        return UPSTREAM_BASE
    local = f"localhost/skiff-base:{BASE_SUITE}-{base_recipe_key()}"
    if engine.inspect(local):
        return local
    if engine.run("pull", UPSTREAM_BASE, check=False, timeout=300).returncode == 0:
        return UPSTREAM_BASE
    _mmdebstrap_base(engine, local)
    return local


def _context_files() -> list[Path]:
    files: list[Path] = []
    for name in CONTEXT:
        p = REPO / name
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            files += [f for f in p.rglob("*") if f.is_file() and "__pycache__" not in f.parts
                      and f.suffix != ".pyc" and not f.name.endswith(".lock") and ".egg-info" not in str(f)]
    return sorted(files)


def build_key(target: str, base_id: str) -> str:
    """Changes whenever anything the image is built from changes."""
    parts = [target.encode(), base_id.encode()]
    for f in _context_files():
        parts += [str(f.relative_to(REPO)).encode(), f.read_bytes()]
    return _digest(parts)[:16]


def extra_ca_bundle(dest: Path) -> Path | None:
    """The PEM bundle passed as the extra_ca secret (SKIFF_EXTRA_CA, else the host's extra CAs), or None."""
    if os.environ.get("SKIFF_EXTRA_CA"):
        return Path(os.environ["SKIFF_EXTRA_CA"])
    certs = sorted(HOST_CA_DIR.glob("*.crt")) if HOST_CA_DIR.is_dir() else []
    if not certs:
        return None
    dest.write_text("".join(c.read_text() for c in certs))
    return dest


def _revision() -> str:
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else "unknown"


def build(engine: Engine, target: str, ref: str, base: str, timeout: float = 1800) -> str:
    """Build one Dockerfile target as ``ref`` unless an image with the same build key is there already."""
    base_info = engine.inspect(base)
    key = build_key(target, base_info["Id"] if base_info else base)
    have = engine.inspect(ref)
    if have and (have["Config"].get("Labels") or {}).get(KEY_LABEL) == key:
        engine.timings[f"{target} (cached)"] = 0.0
        return ref
    from skiff import __version__

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="skiff-ca-") as tmp:
        args = ["build", "--network=host", "--target", target, "-t", ref, "-f", str(REPO / "Dockerfile"),
                "--build-arg", f"BASE_IMAGE={base}", "--build-arg", f"VERSION={__version__}",
                "--build-arg", f"REVISION={_revision()}", "--label", f"{KEY_LABEL}={key}"]
        ca = extra_ca_bundle(Path(tmp) / "extra-ca.pem")
        if ca:
            args += ["--secret", f"id=extra_ca,src={ca}"]
        engine.run(*args, str(REPO), timeout=timeout)
    engine.timings[target] = round(time.perf_counter() - t0, 1)
    # the image this one replaced is left untagged: drop it (its layers stay while another image uses them),
    # and cap BuildKit's cache (least recently used first): rebuilt stages and the uv download cache grow it
    # by GBs, while what a warm rebuild needs (the locked environments, ~8 GB with TFDV's) stays under the cap.
    engine.run("image", "prune", "-f", "--filter", f"label={KEY_LABEL}", check=False)
    engine.run("builder", "prune", "-f", "--keep-storage", f"{BUILD_CACHE_GB}gb", check=False, timeout=600)
    return ref


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(REPO))
    from components._image import IMAGES

    targets = argv or ["skiff", "skiff-tfdv"]
    engine = find_engine()
    base = base_image(engine)
    for t in targets:
        build(engine, t, IMAGES[t], base)
        print(f"{t}: {IMAGES[t]} {engine.size_mb(IMAGES[t])} MB", flush=True)
    print(json.dumps(engine.timings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
