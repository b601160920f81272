"""Recent items in a real Redis Cluster online store (``redis_type: redis_cluster``, as a cluster's
feature store runs it): three redis-server nodes in cluster mode, started here. Many users' events,
spread over the nodes' hash slots, are merged and read back; several processes writing one user lose
nothing under the per-user lock taken on Feast's cluster client."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from skiff.config import Settings
from skiff.recommend.events import InteractionEvent, RecsConfig
from skiff.recommend.online import RecentItems
from tests.integration import test_recommend_online_concurrency as concurrency

pytestmark = pytest.mark.integration

CLUSTER_YAML = Path(__file__).with_name("redis_cluster") / "feature_store.yaml"
NODES = 3
USERS = 60


def _free_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 >= 65536:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def _cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["redis-cli", *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory):
    """The ports of a three-master Redis Cluster (no replicas, no persistence), torn down after the module."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server / redis-cli are not installed (a Redis Cluster test needs them)")
    base = tmp_path_factory.mktemp("redis-cluster")
    ports: list[int] = []
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(NODES):
            port = _free_port()
            node_dir = base / str(port)
            node_dir.mkdir()
            log = open(node_dir / "redis.log", "wb")  # noqa: SIM115 - open for the server's life
            procs.append(subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", str(node_dir / "nodes.conf"), "--dir", str(node_dir),
                 "--appendonly", "no", "--save", "", "--protected-mode", "no"],
                stdout=log, stderr=subprocess.STDOUT))
            ports.append(port)
        deadline = time.monotonic() + 20
        while not all(_cli("-p", str(p), "ping").stdout.strip() == "PONG" for p in ports):
            assert all(p.poll() is None for p in procs), "a redis-server node exited at start"
            assert time.monotonic() < deadline, "the Redis Cluster nodes did not answer PING within 20 s"
            time.sleep(0.1)
        created = _cli("--cluster", "create", *[f"127.0.0.1:{p}" for p in ports], "--cluster-replicas", "0",
                       "--cluster-yes", timeout=60)
        assert created.returncode == 0, f"redis-cli --cluster create failed:\n{created.stdout}\n{created.stderr}"
        deadline = time.monotonic() + 30
        while not all("cluster_state:ok" in _cli("-p", str(p), "cluster", "info").stdout for p in ports):
            assert time.monotonic() < deadline, "the Redis Cluster did not reach cluster_state:ok within 30 s"
            time.sleep(0.2)
        yield ports
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture
def cluster_env(redis_cluster, monkeypatch):
    monkeypatch.setenv("SKIFF_REDIS", f"127.0.0.1:{redis_cluster[0]}")  # forked writers inherit it
    return redis_cluster


def _cluster_settings(root: str, redis: bool = True) -> Settings:
    return Settings(root=root, feature_store_yaml=str(CLUSTER_YAML))


def _keys_per_node(ports: list[int]) -> list[int]:
    return [int(_cli("-p", str(p), "dbsize").stdout.strip()) for p in ports]


def test_many_users_are_merged_and_read_back_across_the_cluster(cluster_env, tmp_path):
    from redis.cluster import RedisCluster

    config = RecsConfig(recent_n=5)
    model = f"recs_{uuid.uuid4().hex[:8]}"
    recent = RecentItems.open(_cluster_settings(str(tmp_path / "root")), model, config)
    assert recent.lock_kind == "redis"
    assert isinstance(recent._locks.client, RedisCluster)  # noqa: SLF001 - the lock is on Feast's cluster client
    before = _keys_per_node(cluster_env)

    users = [f"u{i:03d}-{uuid.uuid4().hex[:4]}" for i in range(USERS)]
    t0 = float(int(time.time()) - 100)  # whole seconds: event times go through datetime
    first = [InteractionEvent(user_id=u, item_id=f"a-{u}", event_type="view",
                              timestamp=_at(t0)) for u in users]
    accepted = recent.add(first)
    assert accepted == dict.fromkeys(users, 1)
    # a second batch: the same item again (weights add up), a new one, interleaved users
    second = []
    for i, u in enumerate(users):
        second.append(InteractionEvent(user_id=u, item_id=f"a-{u}", event_type="click", timestamp=_at(t0 + 10)))
        second.append(InteractionEvent(user_id=u, item_id=f"b{i}", event_type="view", timestamp=_at(t0 + 20)))
    assert recent.add(list(reversed(second))) == dict.fromkeys(users, 2)

    got = recent.get_many(users)
    for i, (u, items) in enumerate(zip(users, got, strict=True)):
        assert [(r.item, r.weight, r.ts) for r in items] == [(f"a-{u}", 1.0 + 3.0, t0 + 10), (f"b{i}", 1.0, t0 + 20)]
    # the users' rows live on every node (their keys hash to slots all over the cluster); no lock is left
    grown = [a - b for a, b in zip(_keys_per_node(cluster_env), before, strict=True)]
    assert all(g > 0 for g in grown), f"new keys per node: {grown}"
    assert sum(grown) == USERS
    # a fresh store (another process's view of the cluster) reads the same
    again = RecentItems.open(_cluster_settings(str(tmp_path / "root")), model, config)
    assert again.get_many(users[:5]) == got[:5]
    assert again.get("nobody") == []


def _at(ts: float):
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.UTC)


def test_concurrent_writers_of_one_user_lose_nothing_on_a_redis_cluster(cluster_env, tmp_path, monkeypatch):
    monkeypatch.setattr(concurrency, "_settings", _cluster_settings)  # forked writers inherit the patch
    recent, user, kinds = concurrency._race(tmp_path, redis=True)  # noqa: SLF001 - the shared race
    assert kinds == {"redis"}
    concurrency._assert_nothing_lost(recent, user)  # noqa: SLF001


def test_a_plain_redis_config_on_a_cluster_fails_naming_redis_cluster(cluster_env, tmp_path):
    from skiff.errors import SourceError

    # feature_store.redis.yaml: redis_type redis (a single server's client) pointed at a cluster node
    settings = Settings(root=str(tmp_path / "root"), feature_store_yaml="feature_store.redis.yaml")
    model = f"recs_{uuid.uuid4().hex[:8]}"
    recent = RecentItems.open(settings, model, RecsConfig())
    users = [f"u{i}" for i in range(20)]  # some hash to a slot another node owns
    with pytest.raises(SourceError, match="redis_type: redis_cluster") as info:
        recent.add([InteractionEvent(user_id=u, item_id="x", event_type="view") for u in users])
    assert "MovedError" in str(info.value)
    # nothing was written: the cluster client (same root, same registry) finds no row for them
    cluster = RecentItems.open(_cluster_settings(str(tmp_path / "root")), model, RecsConfig())
    assert cluster.get_many(users) == [[]] * len(users)
