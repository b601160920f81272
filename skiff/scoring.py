"""The scoring runtime of a registered scikit-learn version: its exact ONNX export and its pipeline.

The model server (:mod:`serving.runtime`) and the stream consumer (:mod:`components.stream.score`) score a
version the same way, through this module:

- :func:`open_exact_export` opens the version's exact ONNX export (``metadata.extra["onnx"]["exact"]`` and
  ``model.onnx``) as an :class:`ExactExport`, or gives None (the reason logged) when the version has none
  or it cannot be used: a broken export never stops the caller, the pipeline still scores;
- :class:`ExactExport` checks the graph against what the registry recorded (its inputs and output), tells
  which rows the export was checked on (:attr:`ExactExport.domain`, :class:`~skiff.onnx_export.OnnxDomain`)
  and runs them straight from column values (:func:`~skiff.onnx_export.onnx_feeds`, no DataFrame);
- the others run on the scikit-learn pipeline: :func:`input_frame` builds its DataFrame with the dtypes
  the spec types stand for, :func:`pipeline_scores` asks it.

Both give class probabilities ``[n, k]`` (classifiers) or values ``[n]`` (regressors) in float64, alike
to within the export's recorded difference (at most its tolerance, 1e-6). Columns are lists of Python
values in feature order, None for a missing value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from skiff.onnx_export import ONNX_FILE, OnnxDomain, known_categories, onnx_feeds, onnx_session

if TYPE_CHECKING:
    import logging

    import pandas as pd

    from skiff.onnx_export import OnnxSession
    from skiff.registry import ModelRegistry, ModelVersion

__all__ = ["ExactExport", "open_exact_export", "input_frame", "pipeline_scores", "is_classifier"]


def is_classifier(model: Any, problem_type: str | None) -> bool:
    """Whether a version scores class probabilities: its recorded problem type, else what the model can do."""
    return problem_type in ("binary", "multiclass") if problem_type else hasattr(model, "predict_proba")


def input_frame(columns: Mapping[str, Sequence[Any]], features: Sequence[str], types: Mapping[str, str],
                missing: bool = True) -> pd.DataFrame:
    """The rows as a DataFrame with the dtypes the spec types stand for (the scikit-learn path).

    ``missing`` False says no value is None (the columns are not searched for one). An integer column with
    a missing value becomes float64 with NaN, a boolean one stays object; datetimes are UTC.
    """
    import pandas as pd

    data: dict[str, Any] = {}
    for f in features:
        values = columns[f]
        t = types[f]
        has_none = missing and any(v is None for v in values)
        if t == "float" or (t == "integer" and has_none):
            data[f] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        elif t == "integer":
            data[f] = np.array(values, dtype=np.int64)
        elif t == "boolean" and not has_none:
            data[f] = np.array(values, dtype=bool)
        elif t == "datetime":
            data[f] = pd.to_datetime(pd.Series(values, dtype=object), utc=True, format="ISO8601")
        else:
            arr = np.empty(len(values), dtype=object)
            arr[:] = values
            data[f] = arr
    return pd.DataFrame(data, columns=list(features))


def pipeline_scores(model: Any, frame: pd.DataFrame, classifier: bool) -> np.ndarray:
    """The scikit-learn pipeline's class probabilities ``[n, k]`` or values ``[n]``, float64."""
    if classifier:
        return np.asarray(model.predict_proba(frame), dtype=np.float64)
    return np.asarray(model.predict(frame), dtype=np.float64).reshape(-1)


class ExactExport:
    """A version's exact ONNX export on onnxruntime, checked against what its registration recorded.

    ``info`` is the version's ``metadata.extra["onnx"]``; ``model`` its scikit-learn pipeline (its
    encoders give the fitted categories of an export from before they were recorded). A graph whose
    inputs or outputs differ from the recorded ones is a ValueError.
    """

    engine = "onnxruntime"

    def __init__(self, payload: bytes, info: Mapping[str, Any], model: Any, classifier: bool,
                 threads: int = 1) -> None:
        kinds = dict(info.get("inputs") or {})
        if "categories" not in info:  # an export from before categories were recorded: read the encoders
            info = {**info, "categories": known_categories(model, kinds)}
        #: the rows the export was checked on; the others go to the pipeline
        self.domain = OnnxDomain(kinds, info)
        self.session: OnnxSession = onnx_session(payload, threads=threads)
        names = [i.name for i in self.session.get_inputs()]
        if names != list(kinds):
            raise ValueError(f"model.onnx inputs {names} differ from the recorded ones {list(kinds)}")
        self.kinds = kinds
        self.classifier = classifier
        self.compiler = str(info.get("compiler") or "skl2onnx")
        self.missing_text: str | None = info.get("missing_text")
        outputs = [o.name for o in self.session.get_outputs()]
        recorded = info.get("output")
        if recorded is not None and recorded not in outputs:
            raise ValueError(f"model.onnx has no output {recorded!r} (it has {outputs})")
        # an export from before outputs were recorded is skl2onnx's: (label, probabilities) or (variable)
        self.output = str(recorded) if recorded else (outputs[1] if classifier else outputs[0])

    def run(self, columns: Mapping[str, Sequence[Any]]) -> np.ndarray:
        """Class probabilities ``[n, k]`` or values ``[n]`` (float64) of rows the domain admits."""
        out = self.session.run([self.output], onnx_feeds(columns, self.kinds, self.missing_text))[0]
        if self.classifier:
            return np.asarray(out, dtype=np.float64)
        return np.asarray(out, dtype=np.float64).reshape(-1)


def open_exact_export(registry: ModelRegistry, mv: ModelVersion, model: Any, classifier: bool, threads: int,
                      log: logging.Logger, doing: str = "serving") -> ExactExport | None:
    """The version's exact ONNX export, or None when it has none or it cannot be used (a warning; the
    pipeline then scores). ``log`` and ``doing`` (``serving``, ``scoring``) word the caller's log lines."""
    info = mv.metadata.extra.get("onnx") or {}
    if not info.get("exact"):
        if info:
            log.info("%s v%s: no exact ONNX export (%s); %s with scikit-learn", mv.name, mv.version,
                     info.get("reason") or "not exact", doing)
        return None
    if ONNX_FILE not in mv.metadata.files:
        log.warning("%s v%s: ONNX recorded as exact but %s is missing; %s with scikit-learn",
                    mv.name, mv.version, ONNX_FILE, doing)
        return None
    try:
        payload = registry.store.read_bytes(mv.name, str(mv.version), ONNX_FILE)
        return ExactExport(payload, info, model, classifier, threads)
    except Exception as e:  # a broken export must not stop the caller: scikit-learn still scores
        log.warning("%s v%s: cannot use %s (%s: %s); %s with scikit-learn", mv.name, mv.version,
                    ONNX_FILE, type(e).__name__, e, doing)
        return None
