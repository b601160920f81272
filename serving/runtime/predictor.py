"""skiff's KServe predictor: a registered model version behind the V1 and V2 inference protocols.

:class:`SkiffPredictor` is a ``kserve.Model``. ``load()`` reads the settings once, fetches the version
from the registry (``<root>/models/<name>/<version>/``) and builds its runtime through the loader of the
version's ``flavor`` (:data:`FLAVORS`; ``sklearn``; other row-based flavors plug in with :func:`register_flavor`).
A ``tensorflow`` version is an image classifier: it takes encoded images, not rows, and is served by
:mod:`serving.runtime.images` (imported, with TensorFlow, only when such a version loads). A model that fails to load leaves ``ready`` False and ``load_error`` set; the
reason goes to the log and to the server's readiness answer.

Scikit-learn versions run on the compiled engine (:class:`serving.runtime.compiled.CompiledRuntime`,
onnxruntime) when the registry recorded an exact ONNX export (``metadata.extra["onnx"]["exact"]`` and
``model.onnx``; ``compiler`` says which compiler made it): inputs are built straight from the request's
arrays, no DataFrame per request. Requests outside what the export was checked on
(:class:`~skiff.onnx_export.OnnxDomain`), and versions without an exact export, run on the scikit-learn
pipeline. Both paths give the same labels and probabilities to within the export's recorded difference
(at most its tolerance, 1e-6). Opening the export, routing by its domain and both engines are the core's
scoring runtime (:mod:`skiff.scoring`), which the stream consumer scores with too.

Responses:

- binary classification: the label at the version's tuned threshold and the positive class's probability
  (V1 ``{"label", "probability"}``; V2 outputs ``label`` and ``probability``);
- multiclass: the label and each class's probability (V1 ``{"label", "probabilities": {class: p}}``; V2
  ``label`` and ``probabilities`` of shape ``[n, classes]``, class order in its ``classes`` parameter);
- regression: the value (V1 a number per row; V2 output ``value``).
"""

from __future__ import annotations

import abc
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
from kserve import Model
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from serving.runtime.inputs import V2_DATATYPE, BadRequest, InputSchema, RequestRows, parse_v1, parse_v2
from serving.runtime.request_log import RequestLogged, remember
from skiff.config import Settings, load_settings
from skiff.errors import SkiffError, UsageError
from skiff.registry import ModelRegistry, ModelVersion, VersionMetadata
from skiff.scoring import input_frame, is_classifier, open_exact_export, pipeline_scores

if TYPE_CHECKING:
    from serving.runtime.images import ImageClassifier, MicroBatcher
    from serving.runtime.recommender import Recommender

__all__ = ["SkiffPredictor", "V1Response", "Scores", "Runtime", "FLAVORS", "register_flavor", "ENGINES"]

log = logging.getLogger(__name__)

#: ``auto`` uses an exact ONNX export when the version has one; ``sklearn`` always runs the pipeline.
ENGINES = ("auto", "sklearn")


@dataclass
class Scores:
    """What a runtime computed for a batch: class probabilities ``[n, k]`` or regression values ``[n]``."""

    proba: np.ndarray | None = None
    values: np.ndarray | None = None

    def probabilities(self) -> np.ndarray:
        """The class probabilities ``[n, k]`` (a classifier's runtime always computes them)."""
        if self.proba is None:
            raise SkiffError("the model's runtime gave no class probabilities for a classifier")
        return self.proba

    def regression_values(self) -> np.ndarray:
        """The regression values ``[n]`` (a regressor's runtime always computes them)."""
        if self.values is None:
            raise SkiffError("the model's runtime gave no values for a regression model")
        return self.values


class V1Response(TypedDict):
    """A V1 ``:predict`` answer: one prediction per instance, and the version that made them."""

    predictions: list[Any]
    model_name: str
    model_version: str


class Runtime(abc.ABC):
    """A loaded model that scores checked batches. ``engine`` names what runs it (for metadata)."""

    engine = "none"

    @abc.abstractmethod
    def score(self, batch: RequestRows) -> Scores:
        """Probabilities or values for every row of a checked batch."""


class SklearnRuntime(Runtime):
    """The fitted scikit-learn pipeline, fed a DataFrame per batch."""

    engine = "sklearn"

    def __init__(self, model: Any, schema: InputSchema, classifier: bool) -> None:
        self.model = model
        self.schema = schema
        self.classifier = classifier

    def score(self, batch: RequestRows) -> Scores:
        frame = input_frame(batch.columns, self.schema.features, self.schema.types, batch.missing)
        try:
            out = pipeline_scores(self.model, frame, self.classifier)
        except (ValueError, TypeError) as e:  # e.g. missing values in a model without imputation
            nulls = [f for f in self.schema.features if any(v is None for v in batch.columns[f])]
            if nulls:
                raise BadRequest(f"the model cannot score rows with missing {', '.join(map(repr, nulls))}: {e}",
                                 nulls[0], missing=nulls) from e
            raise BadRequest(f"the model cannot score these rows: {e}") from e
        return Scores(proba=out) if self.classifier else Scores(values=out)


Loader = Callable[[ModelRegistry, ModelVersion, InputSchema, Settings, str], Runtime]


def _load_sklearn(registry: ModelRegistry, mv: ModelVersion, schema: InputSchema, settings: Settings,
                  engine: str) -> Runtime:
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=settings.max_threads)  # process-wide: BLAS and OpenMP pools
    model = registry.load_model(mv.name, mv.version)
    problem = mv.metadata.problem_type
    classifier = is_classifier(model, problem)
    if classifier and not hasattr(model, "predict_proba"):
        raise ValueError(f"a {problem} model must have predict_proba; {type(model).__name__} has not")
    sk = SklearnRuntime(model, schema, classifier)
    if engine == "sklearn":
        return sk
    export = open_exact_export(registry, mv, model, classifier, settings.max_threads, log, "serving")
    if export is None:
        return sk
    from serving.runtime.compiled import CompiledRuntime

    log.info("%s v%s: compiled engine (%s, %s)", mv.name, mv.version, export.compiler,
             (mv.metadata.extra.get("onnx") or {}).get("reason", ""))
    return CompiledRuntime.over(export, sk)


def _no_loader(flavor: str) -> Loader:
    def load(*_: Any) -> Runtime:
        raise UsageError(f"flavor {flavor!r} has no loader in this server yet (known: {sorted(FLAVORS)})")

    return load


#: flavor -> loader(registry, version, schema, settings, engine) -> Runtime
FLAVORS: dict[str, Loader] = {"sklearn": _load_sklearn}


def register_flavor(flavor: str, loader: Loader) -> None:
    """Plug in the loader of another model flavor (e.g. ``tensorflow``)."""
    FLAVORS[flavor] = loader


def _python(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _label_datatype(classes: list[Any]) -> str:
    if all(type(c) is bool for c in classes):
        return "BOOL"
    if all(type(c) is int for c in classes):
        return "INT64"
    if all(type(c) is float for c in classes):
        return "FP64"
    return "BYTES"


class SkiffPredictor(RequestLogged, Model):  # type: ignore[misc]  # kserve ships no types: Model is Any here
    """A registered model version served by KServe's ModelServer (V1, V2 REST and gRPC)."""

    def __init__(
        self,
        name: str,
        *,
        model_name: str | None = None,
        version: int | str | None = None,
        settings: Settings | None = None,
        engine: str = "auto",
    ) -> None:
        super().__init__(name)
        if engine not in ENGINES:
            raise UsageError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
        self.model_name = model_name or name
        self.requested_version = version
        self.engine_choice = engine
        self._settings = settings
        self.version: int | None = None
        self.metadata: VersionMetadata | None = None
        self.schema: InputSchema | None = None
        self.runtime: Runtime | None = None
        self.load_error: str | None = None
        #: the ``tensorflow`` flavor's image classifier (serving.runtime.images); None for tabular versions
        self.images: ImageClassifier | None = None
        #: the ``recommender`` flavor's top-k scorer (serving.runtime.recommender); None for other versions
        self.recs: Recommender | None = None
        #: its micro-batcher (None when ``serve_image_batch_max`` is 1, and for tabular versions)
        self.batcher: MicroBatcher | None = None

    # -- loading -------------------------------------------------------------------------------------
    def load(self) -> bool:
        try:
            self._load()
        except Exception as e:  # any failure leaves the model not ready, with the reason logged
            self.ready = False
            self.load_error = f"{type(e).__name__}: {getattr(e, 'message', None) or e}"
            log.error("model %s (version %s) failed to load: %s", self.model_name,
                      self.requested_version or "default", self.load_error)
        return self.ready

    def _load(self) -> None:
        settings = self._settings or load_settings()
        registry = ModelRegistry.from_settings(settings)
        mv = registry.get(self.model_name, self.requested_version)
        meta = mv.metadata
        if meta.flavor == "tensorflow":  # images, not rows: no input schema; TensorFlow is imported only here
            self._load_images(registry, mv, settings)
            return
        if meta.flavor == "recommender":  # users, not rows: serving.runtime.recommender scores them
            self._load_recommender(registry, mv, settings)
            return
        self.schema = InputSchema.build(meta.features, meta.input_schema, meta.input_rules)
        loader = FLAVORS.get(meta.flavor) or _no_loader(meta.flavor)
        self.runtime = loader(registry, mv, self.schema, settings, self.engine_choice)
        self.version, self.metadata = mv.version, meta
        self.problem = meta.problem_type or ("binary" if self._n_classes() == 2 else
                                             "multiclass" if self._n_classes() else "regression")
        self.classes = [_python(c) for c in (meta.classes or self._model_classes())]
        if self.problem in ("binary", "multiclass") and len(self.classes) < 2:
            raise ValueError(f"a {self.problem} model needs its classes (metadata.classes)")
        if self.problem == "binary" and len(self.classes) != 2:
            raise ValueError(f"a binary model needs 2 classes, metadata has {self.classes}")
        self.threshold = float(meta.threshold) if meta.threshold is not None else 0.5
        self.label_datatype = _label_datatype(self.classes) if self.classes else None
        self._classes_param = json.dumps(self.classes, default=str)
        self._threshold_param = repr(self.threshold)  # text: KServe's gRPC encoding takes no float parameters
        self.load_error = None
        self.ready = True
        log.info("model %s version %s loaded (%s, %s, engine %s)", self.model_name, mv.version, meta.flavor,
                 self.problem, self.runtime.engine)

    def _load_images(self, registry: ModelRegistry, mv: ModelVersion, settings: Settings) -> None:
        from serving.runtime.images import IMAGE_PROBLEM, MicroBatcher, load_image_classifier

        self.images = load_image_classifier(registry, mv, settings)
        if settings.serve_image_batch_max > 1:
            # KServe awaits predict when it is a coroutine function: an image version answers through the
            # micro-batcher, so concurrent requests share one model call
            self.batcher = MicroBatcher(self.images, max_batch=settings.serve_image_batch_max,
                                        max_wait_s=settings.serve_image_batch_wait_ms / 1000, name=self.name)
            self.predict = self.predict_batched  # type: ignore[method-assign]
        self.runtime = None
        self.version, self.metadata = mv.version, mv.metadata
        self.problem = mv.metadata.problem_type or IMAGE_PROBLEM
        self.classes = list(self.images.classes)
        self.label_datatype = "BYTES"
        self.load_error = None
        self.ready = True
        log.info("model %s version %s loaded (tensorflow, %s, %d classes)", self.model_name, mv.version,
                 self.problem, len(self.classes))

    def _load_recommender(self, registry: ModelRegistry, mv: ModelVersion, settings: Settings) -> None:
        from serving.runtime.recommender import load_recommender

        self.recs = load_recommender(registry, mv, settings)
        self.runtime = None
        self.version, self.metadata = mv.version, mv.metadata
        self.problem = "recommendation"
        self.load_error = None
        self.ready = True

    def _predict_images(self, images: ImageClassifier, payload: Any) -> V1Response | InferResponse:
        from serving.runtime.images import images_v1, images_v2, v1_predictions, v2_outputs

        if isinstance(payload, InferRequest):
            encoded, k = images_v2(payload)
            return InferResponse(response_id=payload.id or uuid.uuid4().hex, model_name=self.name,
                                 model_version=self.version_label, infer_outputs=v2_outputs(images.top_k(encoded, k)),
                                 use_binary_outputs=payload.use_binary_outputs,
                                 requested_outputs=payload.request_outputs)
        encoded, k = images_v1(payload)
        return {"predictions": v1_predictions(images.top_k(encoded, k)), "model_name": self.name,
                "model_version": self.version_label}

    async def predict_batched(self, payload: Any, headers: dict[str, str] | None = None,
                              response_headers: dict[str, str] | None = None) -> V1Response | InferResponse:
        """An image request answered through the micro-batcher (:class:`serving.runtime.images.MicroBatcher`)."""
        from serving.runtime.images import images_v1, images_v2, v1_predictions, v2_outputs

        assert self.batcher is not None
        if isinstance(payload, InferRequest):
            encoded, k = images_v2(payload)
            top = await self.batcher.top_k(encoded, k)
            return InferResponse(response_id=payload.id or uuid.uuid4().hex, model_name=self.name,
                                 model_version=self.version_label, infer_outputs=v2_outputs(top),
                                 use_binary_outputs=payload.use_binary_outputs,
                                 requested_outputs=payload.request_outputs)
        encoded, k = images_v1(payload)
        top = await self.batcher.top_k(encoded, k)
        return {"predictions": v1_predictions(top), "model_name": self.name, "model_version": self.version_label}

    def _model_classes(self) -> list[Any]:
        model = getattr(self.runtime, "model", None) or getattr(getattr(self.runtime, "fallback", None), "model", None)
        classes = getattr(model, "classes_", None)
        return list(classes) if classes is not None else []

    def _n_classes(self) -> int:
        return len(self._model_classes())

    # -- serving -------------------------------------------------------------------------------------
    @property
    def version_label(self) -> str:
        return "" if self.version is None else str(self.version)

    def validate(self, payload: Any) -> Any:
        return payload  # predict() checks the request against the version's schema

    def score(self, batch: RequestRows) -> Scores:
        """Score a checked batch (used in-process by the transformer as well)."""
        if not self.ready or self.runtime is None:
            raise SkiffError(f"model {self.model_name} is not loaded", model=self.model_name)
        return self.runtime.score(batch)

    def predict(self, payload: Any, headers: dict[str, str] | None = None,
                response_headers: dict[str, str] | None = None) -> V1Response | InferResponse:
        if self.images is not None:
            return self._predict_images(self.images, payload)
        if self.recs is not None:
            return self.recs.predict(payload, self.name, self.version_label)
        assert self.schema is not None
        if isinstance(payload, InferRequest):
            batch = parse_v2(payload, self.schema)
            scores = self.score(batch)
            if self.request_log is not None:
                remember(batch, scores, self)  # for the inference log (serving.runtime.request_log)
            return self.v2_response(payload, batch, scores)
        batch = parse_v1(payload, self.schema)
        scores = self.score(batch)
        if self.request_log is not None:
            remember(batch, scores, self)
        return self.v1_response(batch, scores)

    def _labels(self, scores: Scores) -> list[Any]:
        proba = scores.probabilities()
        if self.problem == "binary":
            picks = (proba[:, 1] >= self.threshold).astype(np.int64)
        else:
            picks = proba.argmax(axis=1)
        classes = self.classes
        return [classes[i] for i in picks.tolist()]

    def v1_response(self, batch: RequestRows, scores: Scores) -> V1Response:
        if self.problem == "regression":
            predictions: list[Any] = scores.regression_values().tolist()
        elif self.problem == "binary":
            predictions = [{"label": lab, "probability": p}
                           for lab, p in zip(self._labels(scores), scores.probabilities()[:, 1].tolist(), strict=True)]
        else:
            keys = [str(c) for c in self.classes]
            predictions = [{"label": lab, "probabilities": dict(zip(keys, row, strict=True))}
                           for lab, row in zip(self._labels(scores), scores.probabilities().tolist(), strict=True)]
        return {"predictions": predictions, "model_name": self.name, "model_version": self.version_label}

    def v2_outputs(self, n: int, scores: Scores) -> list[InferOutput]:
        if self.problem == "regression":
            return [InferOutput("value", [n], "FP64", data=scores.regression_values().tolist())]
        labels = self._labels(scores)
        if self.label_datatype == "BYTES":
            labels = [lab if type(lab) is str else str(lab) for lab in labels]
        out = [InferOutput("label", [n], self.label_datatype, data=labels)]
        if self.problem == "binary":
            out.append(InferOutput("probability", [n], "FP64", data=scores.probabilities()[:, 1].tolist(),
                                   parameters={"positive_class": str(self.classes[1]),
                                               "threshold": self._threshold_param}))
        else:
            k = len(self.classes)
            out.append(InferOutput("probabilities", [n, k], "FP64", data=scores.probabilities().reshape(-1).tolist(),
                                   parameters={"classes": self._classes_param}))
        return out

    def v2_response(self, request: InferRequest, batch: RequestRows, scores: Scores) -> InferResponse:
        outputs = self.v2_outputs(batch.n, scores)
        requested = request.request_outputs
        if requested:
            known = {o.name for o in outputs}
            unknown = [r.name for r in requested if r.name not in known]
            if unknown:
                raise BadRequest(f"unknown output(s) {unknown}; this model returns {sorted(known)}", "outputs",
                                 unknown=unknown)
        return InferResponse(
            response_id=request.id or uuid.uuid4().hex,
            model_name=self.name,
            model_version=self.version_label,
            infer_outputs=outputs,
            use_binary_outputs=request.use_binary_outputs,
            requested_outputs=requested,
        )

    # -- metadata ------------------------------------------------------------------------------------
    @property
    def platform(self) -> str:
        if self.images is not None:
            return "tensorflow_keras"
        if self.recs is not None:
            return "skiff_recommender"
        if self.runtime is None:
            return ""
        return "onnxruntime_onnx" if self.runtime.engine == "onnxruntime" else "sklearn"

    def get_input_types(self) -> list[dict[str, Any]]:
        if self.images is not None:
            from serving.runtime.images import INPUT_TYPES

            return [dict(t) for t in INPUT_TYPES]
        if self.recs is not None:
            from serving.runtime.recommender import INPUT_TYPES as RECS_INPUTS

            return [dict(t) for t in RECS_INPUTS]
        if self.schema is None:
            return []
        return [{"name": f, "datatype": V2_DATATYPE[self.schema.types[f]], "shape": [-1]}
                for f in self.schema.features]

    def get_output_types(self) -> list[dict[str, Any]]:
        if not self.ready:
            return []
        if self.images is not None:
            from serving.runtime.images import OUTPUT_TYPES

            return [dict(t) for t in OUTPUT_TYPES]
        if self.recs is not None:
            from serving.runtime.recommender import OUTPUT_TYPES as RECS_OUTPUTS

            return [dict(t) for t in RECS_OUTPUTS]
        if self.problem == "regression":
            return [{"name": "value", "datatype": "FP64", "shape": [-1]}]
        second = ({"name": "probability", "datatype": "FP64", "shape": [-1]} if self.problem == "binary"
                  else {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(self.classes)]})
        return [{"name": "label", "datatype": self.label_datatype, "shape": [-1]}, second]
