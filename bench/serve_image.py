"""Benchmark: requests/s of an image classifier served with the micro-batcher against one model call per request.

Registers a Keras classifier (TinyConvNet at ``--size`` pixels, fixed random weights: the model's cost, not
its accuracy, is measured) as a ``tensorflow`` version in a temporary registry and serves it through
skiff's KServe app in-process (``serving.runtime.server.make_app``, requests over httpx's ASGI transport:
the same routes, decoding and answers as the server). ``--concurrency`` clients (default 8) each send
``--requests`` V1 requests of one real JPEG or PNG, one after another; the two ways alternate for
``--rounds`` rounds:

- batched: ``serve_image_batch_max=32``, ``serve_image_batch_wait_ms`` (default 5): concurrent requests
  share a model call (:class:`serving.runtime.images.MicroBatcher`);
- unbatched: ``serve_image_batch_max=1``: every request its own model call (the baseline).

It prints requests/s of both, their ratio, and the batcher's average requests per model call.

    python bench/serve_image.py                     # 8 clients, 64 px
    python bench/serve_image.py --concurrency 16 --size 96 --out results/serve_image.json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
NAME = "bench_images"
CLASSES = ["circle", "cross", "square", "triangle"]


def _register(root: Path, size: int) -> None:
    import keras

    from components.train_image.model import build_model
    from skiff.config import load_settings
    from skiff.image_data import Preprocessing
    from skiff.registry import ModelRegistry, VersionMetadata

    keras.utils.set_random_seed(0)
    model = build_model("TinyConvNet", len(CLASSES), image_size=size, weights=None, dropout=0.0)
    model.save(root / "model.keras")
    pre = Preprocessing(height=size, width=size)
    meta = VersionMetadata(name=NAME, flavor="tensorflow", problem_type="image_classification", classes=CLASSES,
                           extra={"preprocessing": pre.model_dump(mode="json"), "label_map": {"classes": CLASSES},
                                  "model_files": {"keras": "model.keras"}})
    ModelRegistry.from_settings(load_settings(root=str(root))).register(NAME, None, meta,
                                                                       {"model.keras": root / "model.keras"})


def _bodies(size: int, n: int) -> list[dict[str, Any]]:
    import numpy as np
    from PIL import Image

    from skiff.datagen_images import draw

    out = []
    for i in range(n):
        img = Image.fromarray(draw(CLASSES[i % len(CLASSES)], size, np.random.default_rng(i)))
        buf = io.BytesIO()
        img.save(buf, format="JPEG" if i % 2 else "PNG")
        out.append({"instances": [{"image_bytes": {"b64": base64.b64encode(buf.getvalue()).decode()}}]})
    return out


async def _drive(app: Any, bodies: list[dict[str, Any]], concurrency: int, requests: int) -> float:
    import httpx

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
        async def client_loop(c: int) -> None:
            for r in range(requests):
                resp = await client.post(f"/v1/models/{NAME}:predict", json=bodies[(c + r) % len(bodies)],
                                         timeout=120)
                if resp.status_code != 200:
                    raise RuntimeError(f"HTTP {resp.status_code}: {resp.text[:200]}")

        await client_loop(0)  # warm-up: the model's first call traces
        t = time.perf_counter()
        await asyncio.gather(*(client_loop(c) for c in range(concurrency)))
        return concurrency * requests / (time.perf_counter() - t)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=25, help="requests per client per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--wait-ms", type=float, default=5.0)
    parser.add_argument("--out", type=Path)
    opts = parser.parse_args()

    import numpy as np

    from serving.runtime.predictor import SkiffPredictor
    from serving.runtime.server import make_app
    from skiff.config import load_settings

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _register(root, opts.size)
        bodies = _bodies(opts.size, 16)
        batched_p = SkiffPredictor(NAME, settings=load_settings(root=str(root), serve_image_batch_max=32,
                                                                serve_image_batch_wait_ms=opts.wait_ms))
        plain_p = SkiffPredictor(NAME, settings=load_settings(root=str(root), serve_image_batch_max=1))
        for p in (batched_p, plain_p):
            if not p.load():
                raise RuntimeError(p.load_error)
        batched_app, plain_app = make_app([batched_p])[1], make_app([plain_p])[1]
        batched, plain = [], []
        for _ in range(opts.rounds):
            batched.append(asyncio.run(_drive(batched_app, bodies, opts.concurrency, opts.requests)))
            plain.append(asyncio.run(_drive(plain_app, bodies, opts.concurrency, opts.requests)))
        assert batched_p.batcher is not None
        stats = batched_p.batcher.stats
    result: dict[str, Any] = {
        "size": opts.size, "concurrency": opts.concurrency, "requests_per_client": opts.requests,
        "wait_ms": opts.wait_ms, "cpus": os.cpu_count(),
        "batched_requests_per_s": round(float(np.median(batched)), 1),
        "unbatched_requests_per_s": round(float(np.median(plain)), 1),
        "requests_per_model_call": round(stats.requests / max(stats.model_calls, 1), 2),
    }
    result["ratio"] = round(result["batched_requests_per_s"] / result["unbatched_requests_per_s"], 3)
    print(f"image serving at concurrency {opts.concurrency}: micro-batched {result['batched_requests_per_s']} "
          f"requests/s, one model call per request {result['unbatched_requests_per_s']} requests/s; ratio "
          f"{result['ratio']} ({result['requests_per_model_call']} requests per model call)")
    print(json.dumps(result))
    if opts.out:
        opts.out.parent.mkdir(parents=True, exist_ok=True)
        opts.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
