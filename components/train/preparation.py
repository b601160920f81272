"""The first step of every skiff model: turn a frame typed by the dataset spec into plain columns.

It makes the fitted pipeline accept what ingestion, Feast and the model server hand it alike: pandas
nullable dtypes (``Int64``, ``boolean``, ``string``), object columns, or numbers arriving as text.
Everything after this step is stock scikit-learn (imputation, one-hot, scaling, PCA, the estimator),
so ``pipeline[1:]`` is what exporters such as skl2onnx see.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from skiff.errors import InputError

__all__ = ["FramePreparer", "DATETIME_PARTS", "MISSING"]

#: What a datetime feature becomes: numeric calendar parts (named ``<column>__<part>``).
DATETIME_PARTS = ("year", "month", "dayofweek")


#: What a missing categorical value becomes: a string, never NaN, so categorical columns stay pure text
#: (imputed by the pipeline's categorical imputer, which treats this marker as missing).
MISSING = "__skiff_missing__"


class FramePreparer(TransformerMixin, BaseEstimator):  # type: ignore[misc]  # scikit-learn is untyped
    """Select the feature columns and give each the dtype the next steps expect.

    numeric → float64 (NaN for missing or unparsable), categorical (category, string and boolean
    columns) → object holding ``str`` values (:data:`MISSING` for missing — a string, so the whole
    column stays text and exports to ONNX; ``True`` becomes ``"True"``), datetime →
    ``<column>__year``, ``__month``, ``__dayofweek`` as float64. A missing feature column is an
    :class:`~skiff.errors.InputError` naming it.
    """

    def __init__(
        self,
        numeric: Sequence[str] = (),
        categorical: Sequence[str] = (),
        datetime: Sequence[str] = (),
    ) -> None:
        self.numeric = numeric
        self.categorical = categorical
        self.datetime = datetime

    @property
    def numeric_out(self) -> list[str]:
        """Numeric output columns: the numeric features, then the datetime parts."""
        return [*self.numeric, *(f"{c}__{p}" for c in self.datetime for p in DATETIME_PARTS)]

    def fit(self, X: pd.DataFrame, y: object = None) -> FramePreparer:
        self._check(X)
        self.n_features_in_ = len(X.columns)
        self.feature_names_in_ = np.asarray(list(X.columns), dtype=object)
        return self

    def _check(self, X: object) -> None:
        if not isinstance(X, pd.DataFrame):
            raise InputError(
                f"a skiff model takes a pandas DataFrame of named columns, got {type(X).__name__}"
            )
        wanted = [*self.numeric, *self.categorical, *self.datetime]
        missing = [c for c in wanted if c not in X.columns]
        if missing:
            raise InputError(
                f"feature column(s) missing from the data: {', '.join(missing)}", columns=missing
            )

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        self._check(X)
        out: dict[str, np.ndarray] = {}
        for c in self.numeric:
            out[c] = pd.to_numeric(X[c], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        for c in self.datetime:
            ts = pd.to_datetime(X[c], errors="coerce", utc=True)
            for part in DATETIME_PARTS:
                out[f"{c}__{part}"] = getattr(ts.dt, part).to_numpy(dtype="float64", na_value=np.nan)
        for c in self.categorical:
            s = X[c]
            missing = s.isna().to_numpy()
            values = np.array([str(v) for v in s.astype(object)], dtype=object)
            values[missing] = MISSING
            out[c] = values
        return pd.DataFrame(out, index=X.index, columns=[*self.numeric_out, *self.categorical])

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        return np.asarray([*self.numeric_out, *self.categorical], dtype=object)
