"""The compiled engine: a version's exact ONNX graph on onnxruntime, scikit-learn for what it was not checked on.

A version registered with an exact export (``metadata.extra["onnx"]["exact"]`` and ``model.onnx``) is
served by :class:`CompiledRuntime`. Its inputs are built straight from the request's columns (no DataFrame
per request): float64 numbers — or float32 for a ``skl2onnx`` export — and text; a missing value is NaN or
the frame preparer's missing marker where the export checked missing values in that column
(``info["missing"]``). Requests outside what the export checked (:class:`~skiff.onnx_export.OnnxDomain`:
missing values elsewhere, categories the pipeline refuses, numbers beyond the checked range) run on the
scikit-learn pipeline, so both engines answer every request alike — to within the export's recorded
difference, at most its tolerance (1e-6).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from serving.runtime.inputs import RequestRows
from serving.runtime.predictor import Runtime, Scores, SklearnRuntime

__all__ = ["CompiledRuntime"]


class CompiledRuntime(Runtime):
    """An exact ONNX export on onnxruntime; requests it was not checked on go to the scikit-learn pipeline."""

    engine = "onnxruntime"

    def __init__(self, payload: bytes, info: dict[str, Any], fallback: SklearnRuntime, threads: int) -> None:
        from skiff.onnx_export import OnnxDomain, known_categories, onnx_session

        kinds = dict(info.get("inputs") or {})
        if "categories" not in info:  # an export from before categories were recorded: read the encoders
            info = {**info, "categories": known_categories(fallback.model, kinds)}
        self.domain = OnnxDomain(kinds, info)
        self.session = onnx_session(payload, threads=threads)
        names = [i.name for i in self.session.get_inputs()]
        if names != list(kinds):
            raise ValueError(f"model.onnx inputs {names} differ from the recorded ones {list(kinds)}")
        self.kinds = kinds
        self.fallback = fallback
        self.compiler = str(info.get("compiler") or "skl2onnx")
        self.missing_text: str | None = info.get("missing_text")
        outputs = [o.name for o in self.session.get_outputs()]
        recorded = info.get("output")
        if recorded is not None and recorded not in outputs:
            raise ValueError(f"model.onnx has no output {recorded!r} (it has {outputs})")
        # an export from before outputs were recorded is skl2onnx's: (label, probabilities) or (variable)
        self.output = str(recorded) if recorded else (outputs[1] if fallback.classifier else outputs[0])

    def score(self, batch: RequestRows) -> Scores:
        from skiff.onnx_export import onnx_feeds

        domain = self.domain
        if (batch.missing and not domain.takes_missing) or not domain.admits(batch.columns):
            return self.fallback.score(batch)
        out = self.session.run([self.output], onnx_feeds(batch.columns, self.kinds, self.missing_text))[0]
        if self.fallback.classifier:
            return Scores(proba=np.asarray(out, dtype=np.float64))
        return Scores(values=np.asarray(out, dtype=np.float64).reshape(-1))
