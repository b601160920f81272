"""Micro-batching of concurrent image requests (``serving.runtime.images.MicroBatcher``) through KServe's
data plane in-process: a Keras model registered as a ``tensorflow`` version (its ``model.keras`` a file of
the version, nothing pickled), concurrent V1 and V2 requests with real encoded JPEG and PNG, answers equal
to the unbatched path, a bad image a 400 of its own request only, and the batching seen in the counters."""

from __future__ import annotations

import asyncio
import base64
import io

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from PIL import Image  # noqa: E402

from skiff.config import load_settings  # noqa: E402
from skiff.datagen_images import draw  # noqa: E402
from skiff.image_data import Preprocessing  # noqa: E402
from skiff.registry import ModelRegistry, VersionMetadata  # noqa: E402

pytestmark = pytest.mark.integration

NAME = "batched"
SIZE = 16
CLASSES = ["circle", "square", "triangle"]


def encode(name: str, fmt: str, seed: int, size: tuple[int, int] = (SIZE, SIZE)) -> bytes:
    img = Image.fromarray(draw(name, SIZE, np.random.default_rng(seed))).resize(size)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """An untrained TinyConvNet classifier (fixed random weights) registered as a tensorflow version."""
    import keras

    from components.train_image.model import build_model

    root = tmp_path_factory.mktemp("image-batching")
    keras.utils.set_random_seed(3)
    model = build_model("TinyConvNet", len(CLASSES), image_size=SIZE, weights=None, dropout=0.0)
    path = root / "model.keras"
    model.save(path)
    pre = Preprocessing(height=SIZE, width=SIZE)
    registry = ModelRegistry.from_settings(load_settings(root=str(root)))
    meta = VersionMetadata(name=NAME, flavor="tensorflow", problem_type="image_classification", classes=CLASSES,
                           extra={"preprocessing": pre.model_dump(mode="json"), "label_map": {"classes": CLASSES},
                                  "model_files": {"keras": "model.keras"}})
    mv = registry.register(NAME, None, meta, {"model.keras": path})
    return root, mv


def _predictor(root, **settings):
    from serving.runtime.predictor import SkiffPredictor

    p = SkiffPredictor(NAME, settings=load_settings(root=str(root), **settings))
    assert p.load(), p.load_error
    return p


def test_a_tensorflow_version_holds_its_keras_file_and_no_pickle(registered):
    root, mv = registered
    assert mv.metadata.flavor == "tensorflow" and mv.metadata.model_file == "model.keras"
    assert "model.joblib" not in mv.metadata.files and "model.keras" in mv.metadata.files
    assert not (root / "models" / NAME / str(mv.version) / "model.joblib").exists()
    registry = ModelRegistry.from_settings(load_settings(root=str(root)))
    from skiff.errors import UsageError

    with pytest.raises(UsageError, match="tensorflow model: its runtime loads model.keras"):
        registry.load_model(NAME, mv.version)


IMAGES = [encode(shape, fmt, seed, size) for seed, (shape, fmt, size) in enumerate(
    [("circle", "JPEG", (16, 16)), ("square", "PNG", (24, 12)), ("triangle", "JPEG", (10, 20)),
     ("circle", "PNG", (16, 16)), ("square", "JPEG", (32, 32)), ("triangle", "PNG", (16, 16)),
     ("circle", "JPEG", (20, 20)), ("square", "PNG", (16, 8))])]


def _v1(img: bytes, k: int) -> dict:
    return {"instances": [{"image_bytes": {"b64": base64.b64encode(img).decode()}}], "parameters": {"top_k": k}}


def _v2(img: bytes, k: int) -> dict:
    return {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(img).decode()]}],
            "parameters": {"top_k": k}}


async def _send_all(app, bodies):
    import httpx

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        async def send(kind, body):
            url = f"/v1/models/{NAME}:predict" if kind == "v1" else f"/v2/models/{NAME}/infer"
            return await client.post(url, json=body, timeout=60)

        return await asyncio.gather(*(send(kind, body) for kind, body in bodies))


def test_concurrent_requests_share_model_calls_and_get_their_own_answers(registered):
    from serving.runtime.server import make_app

    root, _ = registered
    batched = _predictor(root, serve_image_batch_max=32, serve_image_batch_wait_ms=100)
    plain = _predictor(root, serve_image_batch_max=1)
    assert batched.batcher is not None and plain.batcher is None
    _, app = make_app([batched])
    # 8 concurrent requests, V1 and V2, each with its own top_k, and one with a corrupt image
    bodies = [("v1" if i % 2 else "v2", (_v1 if i % 2 else _v2)(img, 1 + i % 3)) for i, img in enumerate(IMAGES)]
    bodies.insert(3, ("v1", _v1(IMAGES[0][:40], 2)))  # a truncated JPEG
    responses = asyncio.run(_send_all(app, bodies))

    bad = responses.pop(3)
    assert bad.status_code == 400, bad.text
    assert "image 0" in bad.text and ("cannot be decoded" in bad.text or "not a readable image" in bad.text)
    for i, (img, r) in enumerate(zip(IMAGES, responses, strict=True)):
        assert r.status_code == 200, r.text
        k = 1 + i % 3
        want = plain.images.top_k([img], k)  # the unbatched path: one request, one model call
        if i % 2:
            top = r.json()["predictions"][0]
            assert [t["label"] for t in top["top_k"]] == want.labels[0]
            np.testing.assert_allclose([t["score"] for t in top["top_k"]], want.scores[0], atol=1e-5)
        else:
            out = {o["name"]: o for o in r.json()["outputs"]}
            assert out["top_k_labels"]["data"] == want.labels[0] and out["top_k_labels"]["shape"] == [1, k]
            np.testing.assert_allclose(out["top_k_scores"]["data"], want.scores[0], atol=1e-5)

    stats = batched.batcher.stats
    assert stats.requests == len(IMAGES) and stats.images == len(IMAGES)  # the bad one never reached the model
    assert stats.model_calls < len(IMAGES) and stats.largest > 1, stats  # batching happened

    async def scrape():
        import httpx

        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return (await client.get("/metrics")).text

    metrics = asyncio.run(scrape())
    line = next(x for x in metrics.splitlines()
                if x.startswith("skiff_image_model_calls_total{") and f'model="{NAME}"' in x)
    assert float(line.rsplit(" ", 1)[1]) == stats.model_calls


def test_the_batcher_isolates_a_failed_model_call_and_never_splits_a_request(registered, monkeypatch):
    from serving.runtime.images import MicroBatcher

    root, _ = registered
    clf = _predictor(root, serve_image_batch_max=1).images
    batcher = MicroBatcher(clf, max_batch=2, max_wait_s=0.05, name="unit")

    async def run():
        big = batcher.top_k(IMAGES[:5], 3)  # five images: more than max_batch, answered whole
        small = batcher.top_k(IMAGES[5:6], 1)
        return await asyncio.gather(big, small)

    big, small = asyncio.run(run())
    assert len(big.labels) == 5 and big.scores.shape == (5, 3) and small.scores.shape == (1, 1)
    np.testing.assert_allclose(big.scores, clf.top_k(IMAGES[:5], 3).scores, atol=1e-5)

    def lost(pixels):  # a model call that fails (a device lost mid-call): its requests fail, nobody else's
        raise RuntimeError("device lost")

    with monkeypatch.context() as m:
        m.setattr(clf, "scores", lost)
        with pytest.raises(RuntimeError, match="device lost"):
            asyncio.run(batcher.top_k(IMAGES[:1]))
    assert asyncio.run(batcher.top_k(IMAGES[:1], 1)).labels == clf.top_k(IMAGES[:1], 1).labels  # it goes on
