"""The core scoring runtime (skiff.scoring): a registered version's exact ONNX export opened, checked and run
as its scikit-learn pipeline predicts; versions without a usable export give None with the reason logged;
the pipeline's input frame carries the dtypes the spec types stand for."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from skiff.onnx_export import COMPILERS, export_onnx
from skiff.registry import ModelRegistry
from skiff.scoring import ExactExport, input_frame, is_classifier, open_exact_export, pipeline_scores
from skiff.storage import Store

FEATURES = ["temperature", "humidity"]
INPUTS = {"temperature": "float", "humidity": "integer"}
LOG = logging.getLogger("tests.scoring")


def _frame(n: int = 300, seed: int = 1) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame({"temperature": np.round(rng.uniform(10, 50, n), 2), "humidity": rng.integers(0, 100, n)})
    return x, ((x.temperature + x.humidity * 0.02 + rng.normal(0, 1.5, n)) > 30).to_numpy()


def _register(tmp_path: Path, onnx: dict | None = None, payload: bytes | None = None,
              regression: bool = False) -> tuple[ModelRegistry, Pipeline, dict]:
    """A pipeline registered with its exact export (or the given ``onnx`` record and ``model.onnx`` bytes)."""
    reg = ModelRegistry(Store(str(tmp_path / "registry")))
    x, y = _frame()
    est = LinearRegression() if regression else LogisticRegression()
    pipe = Pipeline([("sc", StandardScaler()), ("est", est)]).fit(x, x.temperature * 2.0 if regression else y)
    info = dict(export_onnx(pipe, x[200:], tmp_path / "m.onnx", input_schema=INPUTS, features=FEATURES))
    assert info["exact"], info
    if payload is not None:
        (tmp_path / "m.onnx").write_bytes(payload)
    record = info if onnx is None else onnx
    meta = {"features": FEATURES, "input_schema": INPUTS, "problem_type": "regression" if regression else "binary",
            "extra": {"onnx": record} if record else {}}
    if not regression:
        meta["classes"] = [False, True]
    files = {"model.onnx": tmp_path / "m.onnx"} if record.get("exact") and payload != b"" else {}
    reg.register("m", pipe, meta, files=files)
    return reg, pipe, info


ROWS = {"temperature": [12.5, 29.0, 31.0, 48.0], "humidity": [10, 50, 0, 99]}


def test_the_exact_export_scores_as_the_pipeline_predicts(tmp_path):
    reg, pipe, _ = _register(tmp_path)
    mv = reg.get("m", 1)
    export = open_exact_export(reg, mv, pipe, True, 1, LOG)
    assert isinstance(export, ExactExport) and export.engine == "onnxruntime"
    # which exact compiler won depends on the export's candidates (seen to differ with the suite's order);
    # what the test holds is that an exact export runs and scores as the pipeline does
    assert export.compiler in COMPILERS
    assert export.domain.admits(ROWS)
    got = export.run(ROWS)
    want = pipe.predict_proba(pd.DataFrame(ROWS))
    assert got.shape == (4, 2) and got.dtype == np.float64
    np.testing.assert_allclose(got, want, atol=1e-9, rtol=0)
    frame = input_frame(ROWS, FEATURES, INPUTS)
    np.testing.assert_allclose(pipeline_scores(pipe, frame, True), want, atol=0, rtol=0)
    assert not export.domain.admits({"temperature": [1e39], "humidity": [5]})  # beyond the checked range


def test_a_regressor_export_gives_one_value_a_row(tmp_path):
    reg, pipe, _ = _register(tmp_path, regression=True)
    assert not is_classifier(pipe, "regression") and is_classifier(pipe, None) is False
    export = open_exact_export(reg, reg.get("m", 1), pipe, False, 1, LOG)
    assert export is not None
    got = export.run(ROWS)
    assert got.shape == (4,)
    np.testing.assert_allclose(got, pipe.predict(pd.DataFrame(ROWS)), rtol=1e-9)
    values = pipeline_scores(pipe, input_frame(ROWS, FEATURES, INPUTS), False)
    assert values.shape == (4,) and values.dtype == np.float64


def test_is_classifier_takes_the_recorded_problem_type_first():
    lr = LogisticRegression()
    assert is_classifier(lr, None) and is_classifier(lr, "binary") and is_classifier(lr, "multiclass")
    assert not is_classifier(lr, "regression")
    assert is_classifier(LinearRegression(), "binary") and not is_classifier(LinearRegression(), None)


def test_a_version_without_an_export_gives_none_and_says_why(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=LOG.name)
    reg, pipe, _ = _register(tmp_path, onnx={})
    assert open_exact_export(reg, reg.get("m", 1), pipe, True, 1, LOG, "scoring") is None
    assert not caplog.records  # nothing recorded, nothing to say

    reg, pipe, _ = _register(tmp_path / "b", onnx={"exact": False, "reason": "exceeds 1e-06"})
    assert open_exact_export(reg, reg.get("m", 1), pipe, True, 1, LOG, "scoring") is None
    assert caplog.records[-1].levelno == logging.INFO
    assert caplog.records[-1].getMessage() == "m v1: no exact ONNX export (exceeds 1e-06); scoring with scikit-learn"


def test_an_exact_record_without_its_file_is_a_warning_and_none(tmp_path, caplog):
    reg, pipe, info = _register(tmp_path, payload=b"")  # recorded exact, model.onnx not registered
    assert "model.onnx" not in reg.get("m", 1).metadata.files
    assert open_exact_export(reg, reg.get("m", 1), pipe, True, 1, LOG) is None
    assert caplog.records[-1].levelno == logging.WARNING
    assert "ONNX recorded as exact but model.onnx is missing; serving with scikit-learn" in caplog.text


def test_a_broken_export_is_a_warning_and_none_never_an_error(tmp_path, caplog):
    reg, pipe, _ = _register(tmp_path, payload=b"not an onnx graph")
    assert open_exact_export(reg, reg.get("m", 1), pipe, True, 1, LOG, "scoring") is None
    last = caplog.records[-1]
    assert last.levelno == logging.WARNING and last.getMessage().startswith("m v1: cannot use model.onnx (")
    assert last.getMessage().endswith("; scoring with scikit-learn")


def test_a_graph_unlike_its_record_is_refused(tmp_path):
    _reg, pipe, info = _register(tmp_path)
    payload = (tmp_path / "m.onnx").read_bytes()
    renamed = {**info, "inputs": {"humidity": info["inputs"]["humidity"],
                                  "temperature": info["inputs"]["temperature"]}}
    with pytest.raises(ValueError, match=r"inputs \['temperature', 'humidity'\] differ from the recorded ones"):
        ExactExport(payload, renamed, pipe, True)
    with pytest.raises(ValueError, match="model.onnx has no output 'nope'"):
        ExactExport(payload, {**info, "output": "nope"}, pipe, True)
    older = {k: v for k, v in info.items() if k != "categories"}
    export = ExactExport(payload, older, pipe, True)  # a record from before categories: the encoders are read
    np.testing.assert_allclose(export.run(ROWS), pipe.predict_proba(pd.DataFrame(ROWS)), atol=1e-9, rtol=0)


def test_the_input_frame_has_the_dtypes_the_spec_types_stand_for():
    utc = dt.UTC
    columns = {
        "f": [1.5, None], "i": [1, 2], "i_missing": [1, None], "b": [True, False], "b_missing": [True, None],
        "when": ["2024-01-02T03:04:05Z", "2024-01-02T05:04:05+02:00"],
        "stamp": [dt.datetime(2024, 1, 2, 3, tzinfo=utc), dt.datetime(2024, 1, 3, tzinfo=utc)],
        "c": ["a", None],
    }
    types = {"f": "float", "i": "integer", "i_missing": "integer", "b": "boolean", "b_missing": "boolean",
             "when": "datetime", "stamp": "datetime", "c": "category"}
    frame = input_frame(columns, list(columns), types)
    assert list(frame.columns) == list(columns)
    assert {c: str(t) for c, t in frame.dtypes.items()} == {
        "f": "float64", "i": "int64", "i_missing": "float64", "b": "bool", "b_missing": "object",
        "when": "datetime64[ns, UTC]", "stamp": "datetime64[ns, UTC]", "c": "object"}
    assert np.isnan(frame.f[1]) and np.isnan(frame.i_missing[1]) and frame.b_missing[1] is None
    assert frame.when.tolist() == [pd.Timestamp("2024-01-02T03:04:05Z")] * 2
    assert frame.c.tolist() == ["a", None]
    # missing=False: the caller says no value is None, so no column is searched for one
    assert str(input_frame({"i": [1, 2]}, ["i"], {"i": "integer"}, missing=False).i.dtype) == "int64"
