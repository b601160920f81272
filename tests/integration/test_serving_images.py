"""An image classifier end to end: trained by the real ``train_image`` step on generated shapes, evaluated,
registered by the real registration, and served by KServe's ModelServer (``python -m serving predictor``)
on 127.0.0.1. Real encoded JPEG, PNG and GIF go through V1 (base64) and V2 (JSON base64, binary tensors,
tritonclient); the answers equal the Keras model's own top-k on training's decoding; bad images are 400s."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys

import httpx
import numpy as np
import pytest

pytest.importorskip("tensorflow")

from PIL import Image  # noqa: E402

from skiff.config import load_settings  # noqa: E402
from skiff.datagen_images import draw, image_set  # noqa: E402
from skiff.image_data import Preprocessing  # noqa: E402
from skiff.registry import ModelRegistry  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from tests.integration.test_serving import free_port  # noqa: E402

pytestmark = pytest.mark.integration

NAME = "shapes"
SIZE = 32


def encode(array: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def shape_image(name: str, fmt: str, seed: int, size: tuple[int, int] = (SIZE, SIZE)) -> bytes:
    """A generated shape, resized to ``size`` (width, height): non-square images exercise the padding."""
    img = Image.fromarray(draw(name, SIZE, np.random.default_rng(seed))).resize(size)
    return encode(np.asarray(img), fmt)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from components.train_image.evaluate import evaluate_image_model
    from components.train_image.logic import TrainImageConfig, train_image
    from components.train_image.register import register_image_model
    from serving.runtime.server import start_local_server, stop_local_server

    root = tmp_path_factory.mktemp("serving-images")
    image_set(root / "imgs", per_class=8, size=SIZE)
    rows = [{"path": str(p), "label": p.parent.name, "split": ""} for p in sorted((root / "imgs").rglob("*.*"))]
    model_dir, eval_dir = root / "model", root / "eval"
    config = TrainImageConfig(backbone="TinyConvNet", weights=None, image_size=SIZE, batch_size=8, head_epochs=1,
                              fine_tune_epochs=1, augment=False)
    train_image(rows, model_dir, config)
    evaluation = evaluate_image_model(model_dir, eval_dir, top_k=2)
    registry = ModelRegistry.from_settings(load_settings(root=str(root)))
    done = register_image_model(registry, NAME, model_dir, eval_dir, evaluation, dataset={"name": "shapes"})
    port, grpc_port = free_port(), free_port()
    proc = start_local_server(NAME, done["version"], port, root=root, timeout_s=180, grpc_port=grpc_port,
                              log_path=root / "server.log")
    try:
        yield {"root": root, "model_dir": model_dir, "base": f"http://127.0.0.1:{port}", "port": port, "grpc_port": grpc_port,
               "version": done["version"], "classes": evaluation.classes}
    finally:
        stop_local_server(proc)


@pytest.fixture(scope="module")
def keras_top(world):
    """The Keras model in-process on training's own decoding: the answers the server must give."""
    import keras

    from skiff.image_data import decode_pixels

    model = keras.models.load_model(world["model_dir"] / "model.keras", compile=False)
    pre = Preprocessing.model_validate_json((world["model_dir"] / "preprocessing.json").read_text())
    classes = world["classes"]

    def top(images: list[bytes], k: int) -> tuple[list[list[str]], np.ndarray]:
        batch = np.stack([decode_pixels(b, pre).numpy() for b in images])
        proba = np.asarray(model(batch, training=False))
        order = np.argsort(-proba, axis=1, kind="stable")[:, :k]
        return [[classes[j] for j in row] for row in order], np.take_along_axis(proba, order, axis=1)

    return top


IMAGES = [("circle", "JPEG", 1, (SIZE, SIZE)), ("square", "PNG", 2, (48, 20)), ("triangle", "JPEG", 3, (20, 40)),
          ("circle", "GIF", 4, (SIZE, SIZE))]


@pytest.fixture(scope="module")
def images():
    return [shape_image(*spec) for spec in IMAGES]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_serving_decodes_with_the_function_training_decodes_with(images):
    import components.train_image.data as training
    import serving.runtime.images as served
    from skiff import image_data

    # one function, in the core: training's dataset and the model server cannot drift apart
    assert training.decode_pixels is image_data.decode_pixels is served.decode_pixels
    for resize in ("pad", "stretch"):
        pre = Preprocessing(height=SIZE, width=SIZE, resize=resize)
        for data in images:
            pixels = image_data.decode_pixels(data, pre).numpy()
            assert pixels.shape == (SIZE, SIZE, 3) and pixels.dtype == np.float32
            assert pixels.min() >= 0.0 and pixels.max() <= 255.0


def test_v1_base64_jpeg_png_gif_give_the_keras_models_top_k(world, images, keras_top):
    body = {"instances": [{"image_bytes": {"b64": b64(d)}} for d in images], "parameters": {"top_k": 2}}
    r = httpx.post(f"{world['base']}/v1/models/{NAME}:predict", json=body, timeout=30)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    labels, scores = keras_top(images, 2)
    assert [[t["label"] for t in p["top_k"]] for p in preds] == labels
    assert np.allclose([[t["score"] for t in p["top_k"]] for p in preds], scores, atol=1e-5)
    assert [p["label"] for p in preds] == [row[0] for row in labels]
    assert r.json()["model_version"] == str(world["version"])
    # default top-k: every class here (3 < 5), scores summing to one
    r = httpx.post(f"{world['base']}/v1/models/{NAME}:predict", json={"instances": [{"b64": b64(images[0])}]})
    assert r.status_code == 200, r.text
    top = r.json()["predictions"][0]["top_k"]
    assert sorted(t["label"] for t in top) == world["classes"] and abs(sum(t["score"] for t in top) - 1) < 1e-4


def test_v2_json_base64_and_binary_bytes_give_the_same_answer(world, images, keras_top):
    labels, scores = keras_top(images, 3)
    body = {"inputs": [{"name": "image", "shape": [len(images)], "datatype": "BYTES",
                        "data": [b64(d) for d in images]}], "parameters": {"top_k": 3}}
    r = httpx.post(f"{world['base']}/v2/models/{NAME}/infer", json=body, timeout=30)
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}
    assert out["label"]["data"] == [row[0] for row in labels]
    assert out["top_k_labels"]["shape"] == [len(images), 3]
    assert np.reshape(out["top_k_labels"]["data"], (len(images), 3)).tolist() == labels
    assert np.allclose(np.reshape(out["top_k_scores"]["data"], (len(images), 3)), scores, atol=1e-5)
    meta = httpx.get(f"{world['base']}/v2/models/{NAME}").json()
    assert meta["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    assert meta["platform"] == "tensorflow_keras"


def test_tritonclient_sends_raw_encoded_images_as_binary_bytes(world, images, keras_top):
    http = pytest.importorskip("tritonclient.http")
    client = http.InferenceServerClient(f"127.0.0.1:{world['port']}")
    inp = http.InferInput("image", [len(images)], "BYTES")
    inp.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=True)
    outputs = [http.InferRequestedOutput(n, binary_data=False) for n in ("label", "top_k_labels", "top_k_scores")]
    result = client.infer(NAME, [inp], outputs=outputs, parameters={"top_k": 2})
    labels, scores = keras_top(images, 2)
    assert [s.decode() if isinstance(s, bytes) else s for s in result.as_numpy("label").tolist()] == \
        [row[0] for row in labels]
    got = [[s.decode() if isinstance(s, bytes) else s for s in row] for row in result.as_numpy("top_k_labels").tolist()]
    assert got == labels
    assert np.allclose(result.as_numpy("top_k_scores"), scores, atol=1e-5)


def test_grpc_v2_takes_raw_encoded_images(world, images, keras_top):
    import asyncio

    from kserve import InferenceGRPCClient, InferInput, InferRequest

    async def call():
        client = InferenceGRPCClient(url=f"127.0.0.1:{world['grpc_port']}", timeout=30)
        try:
            inp = InferInput("image", [len(images)], "BYTES")
            inp.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=True)
            return await client.infer(InferRequest(model_name=NAME, infer_inputs=[inp], request_id="g1",
                                                   parameters={"top_k": 2}))
        finally:
            await client.close()

    out = {o.name: o for o in asyncio.run(call()).outputs}
    labels, scores = keras_top(images, 2)
    got = [[s.decode() if isinstance(s, bytes) else s for s in row] for row in out["top_k_labels"].as_numpy().tolist()]
    assert got == labels
    assert np.allclose(out["top_k_scores"].as_numpy(), scores, atol=1e-5)


def bomb() -> bytes:
    """A PNG of a few KB that decodes to 48 million pixels."""
    buf = io.BytesIO()
    Image.new("L", (8000, 6000)).save(buf, format="PNG")
    return buf.getvalue()


def truncated_jpeg() -> bytes:
    good = encode(draw("circle", 64, np.random.default_rng(9)), "JPEG")
    return good[: good.index(b"\xff\xda") + 40]


V1_BAD = [
    ({"instances": [{"image_bytes": {"b64": b64(b"this is a text file, not an image\n" * 4)}}]}, "not a readable image"),
    ({"instances": [{"image_bytes": {"b64": "***not base64***"}}]}, "not valid base64"),
    ({"instances": [{"image_bytes": {"b64": b64(b"")}}]}, "empty"),
    ({"instances": [[[0, 0, 0], [255, 255, 255]]]}, "image_bytes"),  # pixels instead of an encoded image
    ({"instances": []}, "at least one image"),
]


@pytest.mark.parametrize(("body", "reason"), V1_BAD, ids=["text", "base64", "empty", "pixels", "none"])
def test_a_bad_v1_request_is_a_400_with_the_reason(world, body, reason):
    r = httpx.post(f"{world['base']}/v1/models/{NAME}:predict", json=body, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "InvalidInput" and reason in r.json()["message"]


@pytest.mark.parametrize(("data", "reason"), [(truncated_jpeg, "cannot be decoded"), (bomb, "more than the 40000000")],
                         ids=["truncated", "bomb"])
def test_corrupt_and_oversized_images_are_400s_on_both_protocols(world, data, reason):
    payload = data()
    r = httpx.post(f"{world['base']}/v1/models/{NAME}:predict",
                   json={"instances": [{"image_bytes": {"b64": b64(payload)}}]}, timeout=30)
    assert r.status_code == 400, r.text
    assert reason in r.json()["message"] and r.json()["detail"]["row"] == 0
    body = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64(payload)]}]}
    r = httpx.post(f"{world['base']}/v2/models/{NAME}/infer", json=body, timeout=30)
    assert r.status_code == 400, r.text
    assert reason in r.json()["message"]


def v2(shape, datatype="BYTES", data=None, **params):
    body = {"inputs": [{"name": "image", "shape": shape, "datatype": datatype, "data": data}]}
    return {**body, "parameters": params} if params else body


def test_wrong_shapes_datatypes_and_top_k_are_400s(world, images):
    one = b64(images[0])
    cases = [
        (v2([1, 3], data=[one, one, one]), "shape must be [n] or [n, 1]"),
        (v2([2], data=[one]), "holds 2 images but data has 1"),
        (v2([1, SIZE, SIZE, 3], "FP32", [0.0] * (SIZE * SIZE * 3)), "datatype must be BYTES"),
        (v2([1], data=[one], top_k=9), "top_k must be an integer from 1 to 3"),
        ({"inputs": [v2([1], data=[one])["inputs"][0], {**v2([1], data=[one])["inputs"][0], "name": "more"}]},
         "one BYTES input"),
    ]
    for body, reason in cases:
        r = httpx.post(f"{world['base']}/v2/models/{NAME}/infer", json=body, timeout=30)
        assert r.status_code == 400, (body, r.text)
        assert reason in r.json()["message"], r.text
    assert httpx.get(f"{world['base']}/v2/health/ready").status_code == 200  # still serving


def test_the_tabular_predictor_does_not_import_tensorflow():
    code = "import sys, serving.runtime.predictor, serving.runtime.server; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_the_registered_version_records_what_serving_applies(world):
    reg = ModelRegistry.from_settings(load_settings(root=str(world["root"])))
    meta = reg.get(NAME, world["version"]).metadata
    assert meta.flavor == "tensorflow"
    assert Preprocessing.model_validate(meta.extra["preprocessing"]) == Preprocessing(height=SIZE, width=SIZE)
    assert meta.extra["label_map"] == {"classes": world["classes"]}
    assert json.loads(json.dumps(meta.extra["model_files"]))["keras"] in meta.files
