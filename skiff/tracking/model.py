"""The estimator an MLflow export of a version holds: the fitted pipeline with the version's decisions.

A binary version decides at its tuned threshold, not at the 0.5 a scikit-learn pipeline's ``predict``
uses, so the export wraps the pipeline: ``predict`` gives the label skiff's model server answers
(``serving.runtime.predictor``: ``classes[p1 >= threshold]`` for binary, the most probable class for
multiclass, the value for regression) and ``predict_proba`` the probabilities it answers. This module
imports numpy and scikit-learn only: an exported model unpickles it wherever scikit-learn runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

__all__ = ["VersionModel"]


class VersionModel(BaseEstimator):  # type: ignore[misc]  # scikit-learn is untyped
    """A registered version's pipeline and how it decides (scikit-learn style: fit is not offered)."""

    def __init__(self, pipeline: Any = None, problem_type: str = "binary", features: list[str] | None = None,
                 classes: list[Any] | None = None, threshold: float | None = None) -> None:
        self.pipeline = pipeline
        self.problem_type = problem_type
        self.features = features
        self.classes = classes
        self.threshold = threshold

    @property
    def classes_(self) -> np.ndarray:
        """The labels, in the order of ``predict_proba``'s columns."""
        return np.asarray(self.classes if self.classes is not None else self.pipeline.classes_, dtype=object)

    def _inputs(self, X: Any) -> Any:
        import pandas as pd

        if not isinstance(X, pd.DataFrame):
            X = pd.DataFrame(X, columns=self.features)
        return X[list(self.features)] if self.features else X

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``[n, classes]`` (classifiers only)."""
        return np.asarray(self.pipeline.predict_proba(self._inputs(X)), dtype=np.float64)

    def predict(self, X: Any) -> np.ndarray:
        """The label per row as skiff's model server decides it; the value for a regression."""
        if self.problem_type == "regression":
            return np.asarray(self.pipeline.predict(self._inputs(X)), dtype=np.float64).reshape(-1)
        proba = self.predict_proba(X)
        if self.problem_type == "binary":
            t = 0.5 if self.threshold is None else float(self.threshold)
            picks = (proba[:, 1] >= t).astype(np.int64)
        else:
            picks = proba.argmax(axis=1)
        classes = list(self.classes_)
        return np.asarray([classes[i] for i in picks.tolist()])
