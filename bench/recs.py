"""Recommendation serving benchmark: top-10 for 10,000 items and 50,000 users at concurrency 8.

The world: a generated shop log (:func:`skiff.datagen_recs.interactions`, 50,000 users, 10,000 items),
an ALS recommender trained on it and registered as flavor ``recommender``, served by skiff's model
server (one process, numeric threads capped at 1) with its recent items in the local engine's online
store (SQLite; ``--redis`` for the Redis store). The load: V1 ``:predict`` requests for top-10 of random
known users, ``exclude_seen`` on, at concurrency 8 from an asyncio httpx client (in this process: on two
cores it competes with the server for CPU, so its numbers are a lower bound), ``--requests`` after a
warm-up. The floor, measured in the same run: the scoring call in-process (``RecModel.recommend``, and
``Recommender.recommend`` with the online store's read) on the same users. It prints p50/p99/RPS of each,
the served/floor ratio and the target (served p99 < 20 ms).

Run: ``.venv/bin/python bench/recs.py [--users 50000] [--items 10000] [--requests 3000] [--redis]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stats(latencies: list[float], seconds: float) -> dict[str, float]:
    ms = sorted(x * 1e3 for x in latencies)
    return {"p50": statistics.median(ms), "p99": ms[min(len(ms) - 1, int(0.99 * len(ms)))], "rps": len(ms) / seconds}


async def _load(url: str, users: list[str], requests: int, concurrency: int) -> dict[str, float]:
    import httpx

    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        left = requests

        async def worker() -> None:
            nonlocal left, errors
            while left > 0:
                left -= 1
                body = {"instances": [{"user_id": random.choice(users), "k": 10, "exclude_seen": True}]}
                t0 = time.perf_counter()
                r = await client.post(url, json=body)
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"{errors} requests failed")
    return _stats(latencies, elapsed)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from components.recommend.logic import GateDecision, register_recommender
    from serving.runtime.recommender import Query, load_recommender
    from serving.runtime.server import start_local_server, stop_local_server
    from skiff.config import Settings
    from skiff.datagen_recs import interactions as generate
    from skiff.recommend.events import RecsConfig, interactions
    from skiff.recommend.model import train_model
    from skiff.recommend.training import newest
    from skiff.registry import ModelRegistry
    from skiff.storage import Store

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=50_000)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--redis", action="store_true", help="Recent items in Redis (127.0.0.1:6379), not SQLite.")
    opts = ap.parse_args(argv)
    random.seed(0)
    root = Path(tempfile.mkdtemp(prefix="skiff-bench-recs-")) / "root"
    t0 = time.perf_counter()
    frame = generate(opts.users, opts.items, topics=50, sessions_per_user=3, seed=1)
    config = RecsConfig(models=["als"], als={"factors": 64, "iterations": 10})
    data = interactions(frame, config, "timestamp")
    model = train_model("als", data, config, now=newest(data))
    out = root.parent / "model"
    out.mkdir(parents=True)
    model.save(out / "recs.npz")
    from components.recommend.logic import EVALUATION_FILE, Trained

    trained = Trained(kind="als", params=model.params, k=10, metrics={"als": {}, "popularity": {}}, lift={}, split={},
                      events={"rows": len(frame)}, catalogue={"items": model.n_items, "users": int(model.users.size)},
                      ann=None, config=config.model_dump(mode="json"), duration_s=0.0)
    (out / EVALUATION_FILE).write_text(trained.model_dump_json())
    registry = ModelRegistry(Store(str(root / "models")))
    register_recommender(registry, "bench_recs", out, GateDecision(metric="ndcg@10", challenger=0.0, champion=None,
                         champion_version=None, margin=0.0, promote=True, reason="bench"), dataset={})
    print(f"world: {len(frame)} events, {model.n_items} items, {model.users.size} users, ALS 64 factors "
          f"({time.perf_counter() - t0:.0f} s to build)")
    users = [str(u) for u in random.sample(model.users.tolist(), 5000)]
    env = {"SKIFF_REDIS": "127.0.0.1:6379", "SKIFF_FEATURE_STORE_YAML": "feature_store.redis.yaml"} if opts.redis else {}
    os.environ.update(env)
    settings = Settings(root=str(root), **({"feature_store_yaml": "feature_store.redis.yaml"} if opts.redis else {}))
    served = load_recommender(registry, registry.get("bench_recs"), settings)

    # the floor: the scoring call in-process, then with the online store's read
    floor: dict[str, dict[str, float]] = {}
    for label, call in (("score only (RecModel.recommend)", lambda u: served.model.recommend(u, 10)),
                        ("score + online read (Recommender)", lambda u: served.recommend([Query(u, 10, True)]))):
        for u in users[:200]:
            call(u)
        lat = []
        t1 = time.perf_counter()
        for i in range(min(opts.requests, 3000)):
            t = time.perf_counter()
            call(users[i % len(users)])
            lat.append(time.perf_counter() - t)
        floor[label] = _stats(lat, time.perf_counter() - t1)

    port = _port()
    proc = start_local_server("bench_recs", None, port, root=root, timeout_s=180, extra_env=env)
    try:
        url = f"http://127.0.0.1:{port}/v1/models/bench_recs:predict"
        asyncio.run(_load(url, users, 300, opts.concurrency))  # warm-up
        http = asyncio.run(_load(url, users, opts.requests, opts.concurrency))
    finally:
        stop_local_server(proc)
    print(f"\n{'path':44s} {'p50 ms':>8s} {'p99 ms':>8s} {'RPS':>8s}")
    for label, s in floor.items():
        print(f"{'in-process ' + label:44s} {s['p50']:8.3f} {s['p99']:8.3f} {s['rps']:8.0f}")
    print(f"{'served, V1 :predict, concurrency ' + str(opts.concurrency):44s} {http['p50']:8.3f} {http['p99']:8.3f} "
          f"{http['rps']:8.0f}")
    base = floor["score + online read (Recommender)"]
    print(f"\nserved / in-process floor: p50 {http['p50'] / base['p50']:.1f}x, p99 {http['p99'] / base['p99']:.1f}x; "
          f"served RPS {http['rps'] / base['rps']:.2f}x of the floor's single-thread rate")
    met = http["p99"] < 20.0
    print(f"target served p99 < 20 ms: {'met' if met else 'missed'} ({http['p99']:.2f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
