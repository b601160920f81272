"""The ``tensorflow`` flavor of skiff's predictor: a registered image classifier behind V1 and V2.

A version registered by the ``train_image`` step (flavor ``tensorflow``, problem ``image_classification``)
records ``model_files`` (``model.keras`` among them), ``extra.preprocessing``
(:class:`skiff.image_data.Preprocessing`) and ``extra.label_map``. :func:`load_image_classifier` reads the
Keras model from the registry once; every request is decoded and resized by the core's
:func:`skiff.image_data.decode_pixels`, the function training's input runs too, and answered with the
top-k labels and their scores.

Requests:

- V1: ``{"instances": [{"image_bytes": {"b64": "..."}}, ...]}`` (TensorFlow Serving's way; an instance may
  also be ``{"b64": "..."}``), optional ``"parameters": {"top_k": k}``;
- V2: one ``BYTES`` input of shape ``[n]`` or ``[n, 1]``: raw encoded images as binary tensor data
  (``tritonclient`` with ``binary_data=True``), or base64 text in a JSON body; optional request
  parameter ``top_k``.

Answers: V1 ``{"label", "score", "top_k": [{"label", "score"}, ...]}`` per image; V2 outputs ``label``
(BYTES ``[n]``), ``top_k_labels`` (BYTES ``[n, k]``) and ``top_k_scores`` (FP32 ``[n, k]``).

A request that is not an image, is truncated, or would decode to more than :data:`MAX_PIXELS` pixels (a
decompression bomb: the header is read before anything is decoded) is a :class:`BadRequest` (HTTP 400)
naming the image and the reason. TensorFlow is imported only here, and only when an image version loads.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from serving.runtime.inputs import BadRequest
from skiff.config import Settings
from skiff.image_data import LabelMap, Preprocessing, decode_pixels
from skiff.registry import ModelRegistry, ModelVersion

__all__ = ["IMAGE_PROBLEM", "MAX_PIXELS", "MAX_IMAGES", "ImageClassifier", "load_image_classifier",
           "images_v1", "images_v2", "binary_v2_request", "MicroBatcher", "BatchStats", "batch_metrics"]

log = logging.getLogger(__name__)

IMAGE_PROBLEM = "image_classification"
#: The most pixels one image may decode to (width x height; 40 MP, a large camera photo). Pillow reads the
#: size from the header, so a bomb is refused before a byte of it is decoded.
MAX_PIXELS = 40_000_000
#: The most images one request may carry.
MAX_IMAGES = 256
#: The labels returned per image unless the request asks for another ``top_k``.
DEFAULT_TOP_K = 5


def _b64(text: Any, where: str) -> bytes:
    if not isinstance(text, str):
        raise BadRequest(f"{where}: expected base64 text, got {type(text).__name__}", where)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise BadRequest(f"{where}: not valid base64 ({e})", where) from e


def images_v1(body: Any) -> tuple[list[bytes], Any]:
    """The encoded images of a V1 body and its ``parameters.top_k`` (None when not given)."""
    if not isinstance(body, dict) or not isinstance(body.get("instances"), list):
        raise BadRequest('the request body must be {"instances": [{"image_bytes": {"b64": "..."}}, ...]}', "instances")
    instances = body["instances"]
    if not instances:
        raise BadRequest('"instances" is empty: send at least one image', "instances")
    if len(instances) > MAX_IMAGES:
        raise BadRequest(f"{len(instances)} images in one request; at most {MAX_IMAGES}", "instances")
    out = []
    for i, row in enumerate(instances):
        where = f"instances[{i}]"
        item = row.get("image_bytes", row) if isinstance(row, dict) else row
        if not isinstance(item, dict) or set(item) != {"b64"}:
            raise BadRequest(f'{where}: expected {{"image_bytes": {{"b64": "<base64 of the encoded image>"}}}}',
                             where, row=i)
        out.append(_b64(item["b64"], f"{where}.image_bytes.b64"))
    params = body.get("parameters")
    return out, params.get("top_k") if isinstance(params, dict) else None


def _elements(inp: Any) -> list[Any]:
    raw = getattr(inp, "_raw_data", None)
    if raw is not None:  # a binary tensor: each element is its 4-byte length and its bytes
        from kserve.protocol.infer_type import deserialize_bytes_tensor

        try:
            return list(deserialize_bytes_tensor(raw))
        except Exception as e:  # struct.error on a length that runs past the data
            raise BadRequest(f"input {inp.name!r}: malformed BYTES tensor data ({e})", inp.name) from e
    data = inp.data
    if hasattr(data, "tolist"):
        data = data.tolist()
    if not isinstance(data, list):
        raise BadRequest(f"input {inp.name!r}: data must be a list", inp.name)
    return [d[0] if isinstance(d, list) and len(d) == 1 else d for d in data]


def binary_v2_request(body: bytes, json_length: Any, model_name: str) -> Any:
    """A V2 request with binary tensor data (``Inference-Header-Content-Length``), BYTES inputs kept as bytes.

    KServe's own decoder turns binary BYTES elements into UTF-8 text, which an encoded image is not (and
    answers a 500 with the image in the message); here each input keeps its raw tensor data.
    """
    import orjson
    from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput

    try:
        length = int(json_length)
        if not 0 < length <= len(body):
            raise ValueError(f"{length} is not within the body's {len(body)} bytes")
        head = orjson.loads(body[:length])
        start = length
        inputs = []
        for spec in head["inputs"]:
            params = spec.get("parameters") or {}
            inp = InferInput(name=spec["name"], shape=spec["shape"], datatype=spec["datatype"], parameters=params)
            if spec.get("data") is not None:
                inp.data = spec["data"]
            elif "binary_data_size" in params:
                end = start + int(params["binary_data_size"])
                if end > len(body):
                    raise ValueError(f"input {spec['name']!r} claims more binary data than the body holds")
                inp._raw_data = body[start:end]
                start = end
            else:
                raise ValueError(f"input {spec['name']!r} has neither data nor binary_data_size")
            inputs.append(inp)
        outputs = [RequestedOutput(name=o["name"], parameters=o.get("parameters"))
                   for o in head.get("outputs") or []] or None
        return InferRequest(model_name=model_name, request_id=head.get("id"), parameters=head.get("parameters"),
                            infer_inputs=inputs, request_outputs=outputs)
    except BadRequest:
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise BadRequest(f"malformed binary inference request: {type(e).__name__}: {e}", "body") from e


def images_v2(request: Any) -> tuple[list[bytes], Any]:
    """The encoded images of a V2 request (one BYTES input) and its ``top_k`` parameter."""
    inputs = list(request.inputs or [])
    if len(inputs) != 1:
        raise BadRequest(f"an image model takes one BYTES input of encoded images; the request has {len(inputs)}",
                         "inputs")
    inp = inputs[0]
    if inp.datatype != "BYTES":
        raise BadRequest(f"input {inp.name!r}: datatype must be BYTES (encoded images), got {inp.datatype}",
                         inp.name, datatype=inp.datatype)
    shape = list(inp.shape)
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or shape[0] < 1:
        raise BadRequest(f"input {inp.name!r}: shape must be [n] or [n, 1] with n >= 1 images, got {shape}",
                         inp.name, shape=shape)
    if shape[0] > MAX_IMAGES:
        raise BadRequest(f"{shape[0]} images in one request; at most {MAX_IMAGES}", inp.name, shape=shape)
    elements = _elements(inp)
    if len(elements) != shape[0]:
        raise BadRequest(f"input {inp.name!r}: shape {shape} holds {shape[0]} images but data has {len(elements)}",
                         inp.name, shape=shape)
    out = [e if isinstance(e, bytes) else _b64(e, f"input {inp.name!r} [{i}]") for i, e in enumerate(elements)]
    params = request.parameters or {}
    return out, _parameter(params.get("top_k"))


def _parameter(value: Any) -> Any:
    """A request parameter's value: gRPC sends an ``InferParameter`` message, REST a JSON value."""
    if value is not None and hasattr(value, "WhichOneof"):
        choice = value.WhichOneof("parameter_choice")
        value = getattr(value, choice) if choice else None
    if isinstance(value, str) and value.isdigit():  # text parameters (KServe's gRPC encoding of some clients)
        return int(value)
    return value


def _check_header(data: bytes, i: int, max_pixels: int) -> None:
    """Refuse what is not an image, or one that decodes to too many pixels, from its header alone."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            fmt = im.format
    except Image.DecompressionBombError as e:  # Pillow's own limit (far above ours) refused the header
        raise BadRequest(f"image {i} has too many pixels to decode safely: {e}", "image", row=i,
                         max_pixels=max_pixels) from e
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise BadRequest(f"image {i} is not a readable image ({len(data)} bytes): {e}", "image", row=i) from e
    if width * height > max_pixels:
        raise BadRequest(f"image {i} is {width}x{height} pixels ({fmt}): more than the {max_pixels} pixels "
                         "an image may have", "image", row=i, width=width, height=height, max_pixels=max_pixels)
    if fmt not in ("JPEG", "PNG", "GIF", "BMP", "WEBP"):
        raise BadRequest(f"image {i} is {fmt}: send JPEG, PNG, GIF, BMP or WebP", "image", row=i, format=fmt)


@dataclass
class TopK:
    """The k best labels of every image, best first, and their scores (the model's softmax outputs)."""

    labels: list[list[str]]
    scores: np.ndarray  # float32 [n, k]


class ImageClassifier:
    """A Keras image classifier with its recorded preprocessing and label map."""

    engine = "tensorflow"

    def __init__(self, model: Any, preprocessing: Preprocessing, label_map: LabelMap, *,
                 max_pixels: int = MAX_PIXELS) -> None:
        self.model = model
        self.preprocessing = preprocessing
        self.classes = list(label_map.classes)
        self.max_pixels = max_pixels

    def pixels(self, images: list[bytes]) -> np.ndarray:
        """The batch the model takes, ``[n, height, width, 3]`` float32; a bad image is a BadRequest."""
        import tensorflow as tf

        decoded = []
        for i, data in enumerate(images):
            if not data:
                raise BadRequest(f"image {i} is empty", "image", row=i)
            _check_header(data, i, self.max_pixels)
            try:
                decoded.append(decode_pixels(data, self.preprocessing).numpy())
            except (tf.errors.InvalidArgumentError, ValueError) as e:  # truncated or corrupt past the header
                reason = getattr(e, "message", None) or str(e)
                raise BadRequest(f"image {i} cannot be decoded: {reason.splitlines()[0][:200]}", "image",
                                 row=i) from e
        return np.stack(decoded).astype(np.float32, copy=False)

    def probabilities(self, images: list[bytes]) -> np.ndarray:
        return self.scores(self.pixels(images))

    def scores(self, pixels: np.ndarray) -> np.ndarray:
        """The model's softmax outputs ``[n, classes]`` for a decoded batch (one model call)."""
        proba = np.asarray(self.model(pixels, training=False), dtype=np.float32)
        if proba.ndim != 2 or proba.shape[1] != len(self.classes):
            raise ValueError(f"the model gave outputs of shape {proba.shape} for {len(self.classes)} classes")
        return proba

    def check_k(self, k: Any) -> int:
        """The request's ``top_k`` (the default when None); anything but 1..classes is a BadRequest."""
        n_classes = len(self.classes)
        if k is None:
            k = min(DEFAULT_TOP_K, n_classes)
        if type(k) is not int or not 1 <= k <= n_classes:
            raise BadRequest(f"top_k must be an integer from 1 to {n_classes} (the model's classes), got {k!r}",
                             "top_k")
        return k

    def rank(self, proba: np.ndarray, k: int) -> TopK:
        """The k best labels and scores of every row of ``proba``, best first."""
        order = np.argsort(-proba, axis=1, kind="stable")[:, :k]
        return TopK([[self.classes[j] for j in row] for row in order.tolist()],
                    np.take_along_axis(proba, order, axis=1))

    def top_k(self, images: list[bytes], k: Any = None) -> TopK:
        k = self.check_k(k)
        return self.rank(self.probabilities(images), k)


@dataclass
class _Pending:
    """One request waiting in the micro-batcher: its decoded images, its ``top_k`` and its answer."""

    pixels: np.ndarray
    k: int
    future: asyncio.Future[TopK]


@dataclass
class BatchStats:
    """What a :class:`MicroBatcher` has done: model calls, the requests and images they answered."""

    model_calls: int = 0
    requests: int = 0
    images: int = 0
    #: the most requests one model call answered
    largest: int = 0


_batch_metrics: tuple[Any, Any] | None = None


def batch_metrics() -> tuple[Any, Any]:
    """``skiff_image_model_calls_total{model}`` and ``skiff_image_batch_requests`` (requests per model call)."""
    global _batch_metrics
    if _batch_metrics is None:
        from prometheus_client import Counter, Histogram

        _batch_metrics = (
            Counter("skiff_image_model_calls_total", "Model calls of an image classifier (one per micro-batch).",
                    ["model"]),
            Histogram("skiff_image_batch_requests", "Requests answered by one model call of an image classifier.",
                      ["model"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)),
        )
    return _batch_metrics


class MicroBatcher:
    """Concurrent requests to one image model answered by one model call.

    Each request decodes its own images first (in a worker thread), so a bad image is that request's
    :class:`BadRequest` and nobody else's; the decoded batch then waits in a queue. One task per model
    takes the first waiting request, gathers those that arrive within ``max_wait_s`` until
    ``max_batch`` images are waiting, runs the model once on all of them (in a worker thread, so the
    event loop keeps reading requests meanwhile) and hands every request its own rows, ranked with
    its own ``top_k``. A request is never split: one larger than ``max_batch`` is a batch by itself.
    A failure of the model call itself fails the requests of that call only.
    """

    def __init__(self, classifier: ImageClassifier, *, max_batch: int = 32, max_wait_s: float = 0.005,
                 name: str = "") -> None:
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError(f"max_batch must be >= 1 and max_wait_s >= 0, got {max_batch}, {max_wait_s}")
        self.classifier = classifier
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.name = name
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def top_k(self, images: list[bytes], k: Any = None) -> TopK:
        """This request's top-k, computed in a model call shared with the requests in flight."""
        kk = self.classifier.check_k(k)
        pixels = await asyncio.to_thread(self.classifier.pixels, images)
        queue = self._start()
        future: asyncio.Future[TopK] = asyncio.get_running_loop().create_future()
        await queue.put(_Pending(pixels, kk, future))
        return await future

    def _start(self) -> asyncio.Queue[_Pending]:
        loop = asyncio.get_running_loop()
        if self._queue is None or self._loop is not loop or self._worker is None or self._worker.done():
            self._loop, self._queue = loop, asyncio.Queue()
            self._worker = loop.create_task(self._run(self._queue), name=f"image-batcher-{self.name}")
        return self._queue

    async def _run(self, queue: asyncio.Queue[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            n = len(batch[0].pixels)
            deadline = loop.time() + self.max_wait_s
            while n < self.max_batch:
                if not queue.empty():
                    item = queue.get_nowait()
                else:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(queue.get(), left)
                    except TimeoutError:
                        break
                batch.append(item)
                n += len(item.pixels)
            await self._call(batch)

    async def _call(self, batch: list[_Pending]) -> None:
        batch = [p for p in batch if not p.future.done()]  # a client that went away is not scored
        if not batch:
            return
        pixels = batch[0].pixels if len(batch) == 1 else np.concatenate([p.pixels for p in batch])
        try:
            proba = await asyncio.to_thread(self.classifier.scores, pixels)
        except Exception as e:  # the model call itself failed: its requests fail, the batcher goes on
            log.error("%s: a batched model call of %d images failed: %s", self.name, len(pixels), e)
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(e)
            return
        self.stats.model_calls += 1
        self.stats.requests += len(batch)
        self.stats.images += len(pixels)
        self.stats.largest = max(self.stats.largest, len(batch))
        calls, sizes = batch_metrics()
        calls.labels(model=self.name).inc()
        sizes.labels(model=self.name).observe(len(batch))
        start = 0
        for p in batch:
            rows = proba[start:start + len(p.pixels)]
            start += len(p.pixels)
            if not p.future.done():
                p.future.set_result(self.classifier.rank(rows, p.k))


def _limit_threads(threads: int) -> None:
    import tensorflow as tf

    try:  # only before TensorFlow's first op: a second model in one process keeps the first's settings
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
    except RuntimeError:
        pass


def load_image_classifier(registry: ModelRegistry, mv: ModelVersion, settings: Settings) -> ImageClassifier:
    """The version's Keras model (``model_files.keras``) with its recorded preprocessing and label map."""
    extra = mv.metadata.extra
    for key in ("preprocessing", "label_map", "model_files"):
        if not extra.get(key):
            raise ValueError(f"{mv.name} v{mv.version}: a tensorflow (image) version must record extra.{key} "
                             "(the train_image step's registration records it)")
    pre = Preprocessing.model_validate(extra["preprocessing"])
    label_map = LabelMap.model_validate(extra["label_map"])
    model_file = mv.metadata.model_file  # the flavor's model file: extra.model_files.keras
    if model_file not in mv.metadata.files or not model_file.endswith(".keras"):
        raise ValueError(f"{mv.name} v{mv.version}: the model file {model_file!r} is not a .keras file among the "
                         f"version's files {sorted(mv.metadata.files)}")
    _limit_threads(settings.max_threads)
    import keras

    payload = registry.read_model_file(mv)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / model_file  # Keras reads a .keras archive from a path
        path.write_bytes(payload)
        model = keras.models.load_model(path, compile=False)
    if tuple(model.input_shape[1:]) != (pre.height, pre.width, pre.channels):
        raise ValueError(f"the model takes {model.input_shape[1:]} but the recorded preprocessing makes "
                         f"{(pre.height, pre.width, pre.channels)}")
    log.info("%s v%s: Keras model %s, input %dx%d (%s), %d classes", mv.name, mv.version, model.name,
             pre.height, pre.width, pre.resize, len(label_map.classes))
    return ImageClassifier(model, pre, label_map)


def v1_predictions(top: TopK) -> list[dict[str, Any]]:
    """V1 predictions: per image the best label and score and the top-k list, best first."""
    out = []
    for labels, scores in zip(top.labels, top.scores.tolist(), strict=True):
        out.append({"label": labels[0], "score": scores[0],
                    "top_k": [{"label": lab, "score": s} for lab, s in zip(labels, scores, strict=True)]})
    return out


def v2_outputs(top: TopK) -> list[Any]:
    """V2 outputs ``label`` [n], ``top_k_labels`` [n, k] and ``top_k_scores`` [n, k] (best first)."""
    from kserve.protocol.infer_type import InferOutput

    n, k = top.scores.shape
    return [InferOutput("label", [n], "BYTES", data=[row[0] for row in top.labels]),
            InferOutput("top_k_labels", [n, k], "BYTES", data=[lab for row in top.labels for lab in row]),
            InferOutput("top_k_scores", [n, k], "FP32", data=top.scores.reshape(-1).tolist())]


#: V2 model metadata of an image version
INPUT_TYPES = [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
OUTPUT_TYPES = [{"name": "label", "datatype": "BYTES", "shape": [-1]},
                {"name": "top_k_labels", "datatype": "BYTES", "shape": [-1, -1]},
                {"name": "top_k_scores", "datatype": "FP32", "shape": [-1, -1]}]
