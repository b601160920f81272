"""With a PostgreSQL control-plane database, writers lock through it (advisory locks keyed by the record's
URI), so processes and pods that share a registry lose nothing whatever the store: here the registry is a
folder but no file lock is taken, so only the database lock keeps the writers apart."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import pytest
import yaml

from serving.deploy.gitops import Environments
from skiff.config import load_settings
from skiff.errors import StorageError
from skiff.locks import DatabaseLocks, FileLocks, lock_key, locks_for
from skiff.registry import ModelRegistry
from tests.conftest import require_service

# the plain scheme on purpose: skiff picks psycopg 3 itself (psycopg2 is not installed)
PG_URL = "postgresql://root@127.0.0.1:5432/test"
ENV_YAML = "name: prod\nnamespace: skiff\nregistry: s3://bucket/skiff/models\ningress_domain: m.example.com\n"
MODEL_YAML = ("name: churn\nversion: 1\nhistory:\n  - version: 1\n    action: promote\n    reason: first\n"
              "    at: '2026-01-01T00:00:00+00:00'\n")
ROUNDS = 10  # per worker
WORKERS = 4


@pytest.fixture
def pg():
    require_service("PostgreSQL", 5432)
    return PG_URL


def _worker(tag: str, root: str, envs: str, start, out) -> None:
    os.environ["SKIFF_ROOT"] = root
    os.environ["SKIFF_DATABASE_URL"] = PG_URL
    settings = load_settings()
    reg = ModelRegistry.from_settings(settings)
    environments = Environments(envs, locks=locks_for(settings))
    assert isinstance(reg.locks, DatabaseLocks) and isinstance(environments.locks, DatabaseLocks)
    changed, registered = [], []
    start.wait()
    for i in range(ROUNDS):
        reg.set_champion("churn", 1 + i % 3, f"{tag}-champ-{i}")
        res = environments.promote(reg, "prod", "churn", 1 + (i + len(tag)) % 3, reason=f"{tag}-promote-{i}")
        if res.changed:
            changed.append(res.reason)
        if i % 5 == 0:
            registered.append(reg.register("churn", {"w": i}, {"gate": {"promote": True}}).version)
    out.put((changed, registered))


@pytest.mark.integration
@pytest.mark.slow
def test_processes_writing_under_the_database_lock_lose_nothing(pg, tmp_path):
    root = tmp_path / "skiff"
    reg = ModelRegistry.from_settings(load_settings(root=str(root), database_url=pg))
    for _ in range(3):
        reg.register("churn", {"w": 0}, {"gate": {"promote": True}})
    envs = tmp_path / "environments"
    (envs / "prod/models").mkdir(parents=True)
    (envs / "prod/environment.yaml").write_text(ENV_YAML)
    (envs / "prod/models/churn.yaml").write_text(MODEL_YAML)

    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(f"w{k}", str(root), str(envs), start, out)) for k in range(WORKERS)]
    for p in procs:
        p.start()
    start.set()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0

    history = [h["reason"] for h in reg.champion_history("churn")]
    expected = {f"w{k}-champ-{i}" for k in range(WORKERS) for i in range(ROUNDS)}
    assert len(history) == len(expected) and set(history) == expected

    doc = yaml.safe_load((envs / "prod/models/churn.yaml").read_text())
    changed = [r for c, _ in results for r in c]
    assert sorted(h["reason"] for h in doc["history"][1:]) == sorted(changed)
    assert len(changed) > ROUNDS  # the writers really interleaved

    registered = [v for _, vs in results for v in vs]
    assert len(set(registered)) == len(registered)
    assert reg.version_numbers("churn") == list(range(1, 4 + len(registered)))
    # no file lock was taken anywhere: the database lock alone kept the writers apart
    assert not list(root.rglob("*.lock")) and not list(envs.rglob("*.lock"))


def _hold(uri: str, held, release) -> None:
    with DatabaseLocks(PG_URL).hold(uri, timeout=10):
        held.set()
        release.wait(60)


@pytest.mark.integration
def test_a_held_lock_times_out_with_a_clear_error_and_a_killed_holder_releases_it(pg, tmp_path):
    uri = f"{tmp_path.as_uri()}/churn/._champion.json.lock"
    ctx = mp.get_context("spawn")
    held, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(uri, held, release))
    holder.start()
    try:
        assert held.wait(60)
        t0 = time.monotonic()
        with pytest.raises(StorageError) as e, DatabaseLocks(pg).hold(uri, timeout=0.5):
            pass
        assert 0.4 < time.monotonic() - t0 < 5
        msg = str(e.value)
        assert uri in msg and "another writer has held this lock for over 0.5 s" in msg and "pg_locks" in msg

        os.kill(holder.pid, signal.SIGKILL)  # no cleanup runs: the server drops the dead session's lock
        holder.join(10)
        with DatabaseLocks(pg).hold(uri, timeout=10):
            pass
    finally:
        if holder.is_alive():
            holder.kill()


@pytest.mark.integration
def test_database_lock_is_reentrant_in_a_thread_and_released_on_exit(pg):
    uri = "s3://bucket/models/churn/._versions.lock"
    locks = DatabaseLocks(pg)
    with locks.hold(uri, timeout=2):
        with locks.hold(uri, timeout=2):  # the same thread again: no wait on itself
            pass
        with pytest.raises(StorageError), DatabaseLocks(pg).hold(uri, timeout=0.3):  # still held by the outer
            pass
    with DatabaseLocks(pg).hold(uri, timeout=0.5):  # released: another session takes it at once
        pass


def test_an_unreachable_lock_database_is_a_storage_error_without_the_password():
    locks = DatabaseLocks("postgresql://skiff:s3cret-pw@127.0.0.1:1/test")
    with pytest.raises(StorageError) as e, locks.hold("s3://bucket/models/churn/._versions.lock", timeout=1):
        pass
    assert "cannot reach the lock database" in str(e.value) and "database_url" in str(e.value)
    assert "s3cret-pw" not in str(e.value)


def test_settings_choose_the_lock(tmp_path):
    assert isinstance(locks_for(load_settings(root=str(tmp_path), database_url=PG_URL)), DatabaseLocks)
    assert isinstance(locks_for(load_settings(root=str(tmp_path),
                                              database_url="postgresql+psycopg://h/db")), DatabaseLocks)
    sqlite = load_settings(root=str(tmp_path), database_url=f"sqlite:///{tmp_path}/skiff.db")
    assert isinstance(locks_for(sqlite), FileLocks)
    assert isinstance(locks_for(load_settings(root=str(tmp_path))), FileLocks)
    assert isinstance(ModelRegistry.from_settings(load_settings(root=str(tmp_path), database_url=PG_URL)).locks,
                      DatabaseLocks)


def test_lock_keys_are_signed_64_bit_and_tell_records_apart():
    a, b = lock_key("s3://bucket/models/churn/._champion.json.lock"), lock_key("s3://bucket/models/churn/._versions.lock")
    assert a != b and all(-(2**63) <= k < 2**63 for k in (a, b))
    assert lock_key(Path("/x").as_uri()) == lock_key("file:///x")
