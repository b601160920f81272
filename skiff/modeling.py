"""A trained model's folder and its labels: what train writes and evaluate and register read.

A model folder (a KFP ``Model`` artifact, or any local folder) holds::

    model.joblib   the fitted pipeline (also the file name of a registered version's pipeline)
    train.json     what training records about it (estimator, params, threshold, classes, scoring ...)
    cv.csv         the per-fold cross-validation table
    search.csv     the candidates tried, after a search or auto selection

The label helpers say how a spec's target becomes the array the metrics take and which class is the
positive one, so training, evaluation and the champion's re-scoring read labels the same way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from skiff.errors import InputError
from skiff.spec import DatasetSpec

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "MODEL_FILE",
    "TRAIN_INFO_FILE",
    "CV_FILE",
    "SEARCH_FILE",
    "save_model",
    "load_model",
    "target_array",
    "positive_label",
]

#: Files of a model folder (:func:`save_model`); MODEL_FILE also names a registered version's pipeline.
MODEL_FILE = "model.joblib"
TRAIN_INFO_FILE = "train.json"
CV_FILE = "cv.csv"
SEARCH_FILE = "search.csv"


def save_model(folder: str | Path, pipeline: Any, info: Mapping[str, Any], cv: pd.DataFrame,
               search: pd.DataFrame | None = None) -> dict[str, Path]:
    """Write a model folder: ``model.joblib`` (the fitted pipeline), ``train.json`` (``info``), ``cv.csv``
    and, when given, ``search.csv``. Returns the files written by role (model, info, cv, search)."""
    import joblib

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    files = {"model": out / MODEL_FILE, "info": out / TRAIN_INFO_FILE, "cv": out / CV_FILE}
    joblib.dump(pipeline, files["model"])
    files["info"].write_text(json.dumps(dict(info), indent=2, default=str))
    cv.to_csv(files["cv"], index=False)
    if search is not None:
        files["search"] = out / SEARCH_FILE
        search.to_csv(files["search"], index=False)
    return files


def load_model(folder: str | Path) -> tuple[Any, dict[str, Any], pd.DataFrame | None]:
    """Read a folder written by :func:`save_model`: ``(pipeline, train info, cv table or None)``."""
    import joblib
    import pandas as pd  # not at module level: the registry imports MODEL_FILE and stays light

    src = Path(folder)
    if not (src / MODEL_FILE).is_file():
        raise InputError(f"no {MODEL_FILE} in model folder {src}", path=str(src))
    pipeline = joblib.load(src / MODEL_FILE)
    info_path = src / TRAIN_INFO_FILE
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    cv = pd.read_csv(src / CV_FILE, dtype={"fold": str}) if (src / CV_FILE).is_file() else None
    return pipeline, info, cv


def target_array(y: pd.Series, spec: DatasetSpec) -> np.ndarray:
    """The target as a plain numpy array: float for regression, labels (bool/int/str) otherwise.

    Missing values must have been removed. A regression target that is not numeric is an InputError
    quoting some offending values.
    """
    import pandas as pd

    name = spec.target
    if spec.problem_type == "regression":
        values = pd.to_numeric(y, errors="coerce")
        bad = y[values.isna() & y.notna()]
        if len(bad) or not pd.api.types.is_numeric_dtype(values):
            raise InputError(
                f"regression target {name!r} is not numeric: e.g. {', '.join(map(repr, bad.unique()[:3]))}",
                column=name,
            )
        return values.to_numpy(dtype="float64", na_value=np.nan)
    if isinstance(y.dtype, pd.BooleanDtype) or y.dtype == bool:
        return y.astype(bool).to_numpy()
    if pd.api.types.is_integer_dtype(y.dtype):
        return y.astype("int64").to_numpy()
    if pd.api.types.is_float_dtype(y.dtype) and np.all(np.mod(y.to_numpy(), 1) == 0):
        return y.astype("int64").to_numpy()
    return np.array([str(v) for v in y], dtype=object)


def positive_label(classes: list[Any], spec: DatasetSpec) -> Any:
    """The positive class of a binary target: the spec's ``positive_class``, else ``True``/``1``/the
    last label in sorted order (scikit-learn's convention)."""
    if spec.positive_class is not None:
        for c in classes:
            if c == spec.positive_class or str(c) == str(spec.positive_class):
                return c
        raise InputError(
            f"positive_class {spec.positive_class!r} is not a value of target {spec.target!r}; "
            f"values: {', '.join(map(repr, classes))}",
            column=spec.target,
        )
    return classes[-1]
