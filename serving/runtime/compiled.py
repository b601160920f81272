"""The compiled engine: a version's exact ONNX graph on onnxruntime, scikit-learn for what it was not checked on.

A version registered with an exact export (``metadata.extra["onnx"]["exact"]`` and ``model.onnx``) is
served by :class:`CompiledRuntime` over the core's :class:`~skiff.scoring.ExactExport`, the runtime the
stream consumer scores with too. Its inputs are built straight from the request's columns (no DataFrame
per request): float64 numbers — or float32 for a ``skl2onnx`` export — and text; a missing value is NaN or
the frame preparer's missing marker where the export checked missing values in that column
(``info["missing"]``). Requests outside what the export checked (:class:`~skiff.onnx_export.OnnxDomain`:
missing values elsewhere, categories the pipeline refuses, numbers beyond the checked range) run on the
scikit-learn pipeline, so both engines answer every request alike — to within the export's recorded
difference, at most its tolerance (1e-6).
"""

from __future__ import annotations

from typing import Any

from serving.runtime.inputs import RequestRows
from serving.runtime.predictor import Runtime, Scores, SklearnRuntime
from skiff.scoring import ExactExport

__all__ = ["CompiledRuntime"]


class CompiledRuntime(Runtime):
    """An exact ONNX export on onnxruntime; requests it was not checked on go to the scikit-learn pipeline."""

    engine = "onnxruntime"

    def __init__(self, payload: bytes, info: dict[str, Any], fallback: SklearnRuntime, threads: int) -> None:
        self._serve(ExactExport(payload, info, fallback.model, fallback.classifier, threads), fallback)

    @classmethod
    def over(cls, export: ExactExport, fallback: SklearnRuntime) -> CompiledRuntime:
        """The compiled engine of an opened export (:func:`skiff.scoring.open_exact_export`)."""
        runtime = cls.__new__(cls)
        runtime._serve(export, fallback)
        return runtime

    def _serve(self, export: ExactExport, fallback: SklearnRuntime) -> None:
        self.export = export
        self.domain = export.domain
        self.compiler = export.compiler
        self.fallback = fallback

    def score(self, batch: RequestRows) -> Scores:
        domain = self.domain
        if (batch.missing and not domain.takes_missing) or not domain.admits(batch.columns):
            return self.fallback.score(batch)
        out = self.export.run(batch.columns)
        return Scores(proba=out) if self.export.classifier else Scores(values=out)
