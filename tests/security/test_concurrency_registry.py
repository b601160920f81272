"""Writers in several processes at once — `skiff` CLI processes, worker processes and API requests —
lose no champion-history entry, no GitOps history entry, and never share a version number."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from serving.deploy.gitops import Environments
from skiff.api import create_app
from skiff.api.auth import TokenSet, hash_token
from skiff.config import load_settings
from skiff.registry import ModelRegistry

ADMIN = "admin-token-for-concurrency-test"
ENV_YAML = "name: prod\nnamespace: skiff\nregistry: s3://bucket/skiff/models\ningress_domain: m.example.com\n"
MODEL_YAML = ("name: churn\nversion: 1\nhistory:\n  - version: 1\n    action: promote\n    reason: first\n"
              "    at: '2026-01-01T00:00:00+00:00'\n")
ROUNDS = 12  # per writer


def _worker(tag: str, root: str, envs: str, start, out) -> None:
    """One process: set the champion, promote in GitOps and register a version, ROUNDS times each."""
    os.environ["SKIFF_ROOT"] = root
    reg = ModelRegistry.from_settings(load_settings())
    environments = Environments(envs)
    changed, registered = [], []
    start.wait()
    for i in range(ROUNDS):
        reg.set_champion("churn", 1 + (i % 4), f"{tag}-champ-{i}")
        res = environments.promote(reg, "prod", "churn", 1 + (i + len(tag)) % 4, reason=f"{tag}-promote-{i}")
        if res.changed:
            changed.append(res.reason)
        if i % 4 == 0:
            registered.append(reg.register("churn", {"w": i}, {"gate": {"promote": True}}).version)
    out.put((tag, changed, registered))


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "skiff", *args, "--json"], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_cli_workers_and_api_promoting_at_once_lose_nothing(skiff_env):
    settings = load_settings()
    reg = ModelRegistry.from_settings(settings)
    for _ in range(4):
        reg.register("churn", {"w": 0}, {"gate": {"promote": True}})
    envs_root = skiff_env / "infra/environments"
    (envs_root / "prod/models").mkdir(parents=True)
    (envs_root / "prod/environment.yaml").write_text(ENV_YAML)
    (envs_root / "prod/models/churn.yaml").write_text(MODEL_YAML)

    ctx = mp.get_context("spawn")  # fresh interpreters: no lock state inherited from this one
    start, out = ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(f"w{k}", settings.root, str(envs_root), start, out))
               for k in range(3)]
    for p in workers:
        p.start()

    env = {**os.environ, "SKIFF_ROOT": settings.root}
    cli_jobs = [(["models", "set-champion", "churn", str(1 + k % 4), "--reason", f"cli-champ-{k}"], None)
                for k in range(3)]
    cli_jobs += [(["promote", "churn", "--version", str(1 + k % 4), "--env", "prod", "--reason", f"cli-promote-{k}",
                   "--environments", str(envs_root)], f"cli-promote-{k}") for k in range(3)]

    app = create_app(settings, tokens=TokenSet.of(admin=[hash_token(ADMIN)]), environments=envs_root)
    api_changed: list[str] = []
    api_errors: list[str] = []
    headers = {"Authorization": f"Bearer {ADMIN}"}

    def api_writer(client: TestClient, k: int) -> None:
        start.wait()
        for i in range(ROUNDS):
            r = client.post("/api/v1/models/churn/champion", json={"version": 1 + i % 4, "reason": f"api{k}-champ-{i}"},
                            headers=headers)
            if r.status_code != 200:
                api_errors.append(r.text)
            r = client.post("/api/v1/environments/prod/deployments/churn/promote",
                            json={"version": 1 + (i + k) % 4, "reason": f"api{k}-promote-{i}"}, headers=headers)
            if r.status_code != 200:
                api_errors.append(r.text)
            elif r.json()["changed"]:
                api_changed.append(f"api{k}-promote-{i}")

    with TestClient(app, raise_server_exceptions=False) as client:
        threads = [threading.Thread(target=api_writer, args=(client, k)) for k in range(2)]
        for t in threads:
            t.start()
        procs = [(_cli(args, env, skiff_env), tag) for args, tag in cli_jobs]
        start.set()
        results = [out.get(timeout=120) for _ in workers]
        for t in threads:
            t.join(timeout=120)
        cli_changed = []
        for proc, tag in procs:
            stdout, stderr = proc.communicate(timeout=120)
            assert proc.returncode == 0, stderr
            if tag and json.loads(stdout)["changed"]:
                cli_changed.append(tag)
    for p in workers:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert api_errors == []

    # every champion change is in the history, exactly once
    history = [h["reason"] for h in reg.champion_history("churn")]
    expected = ({f"w{k}-champ-{i}" for k in range(3) for i in range(ROUNDS)}
                | {f"api{k}-champ-{i}" for k in range(2) for i in range(ROUNDS)}
                | {f"cli-champ-{k}" for k in range(3)})
    assert len(history) == len(expected) and set(history) == expected

    # every GitOps edit that changed the file left its history entry, exactly once
    doc = yaml.safe_load((envs_root / "prod/models/churn.yaml").read_text())
    file_reasons = [h["reason"] for h in doc["history"][1:]]
    changed = [r for _, c, _ in results for r in c] + api_changed + cli_changed
    assert sorted(file_reasons) == sorted(changed)
    assert len(changed) > ROUNDS  # the writers really interleaved

    # version numbers: unique, contiguous, each registration got its own
    registered = [v for _, _, vs in results for v in vs]
    assert len(set(registered)) == len(registered)
    assert reg.version_numbers("churn") == list(range(1, 5 + len(registered)))


def test_lock_is_reentrant_in_a_thread_and_a_held_lock_times_out_with_a_clear_error(tmp_path):
    from skiff.errors import StorageError
    from skiff.locks import exclusive_path

    path = tmp_path / ".x.lock"
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with exclusive_path(path), exclusive_path(path):  # re-entrant in its own thread
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(10)
    with pytest.raises(StorageError, match="another writer has held this lock"), exclusive_path(path, timeout=0.2):
        pass
    release.set()
    t.join()
    with exclusive_path(path, timeout=1):  # free again once the holder left
        pass
