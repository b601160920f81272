"""Scoring on arrival (components.stream.score): a registered scikit-learn version with an exact ONNX export
scores readings as the model server would; bad references and missing inputs are refused at start."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from components.stream.logic import StreamConsumer
from components.stream.score import StreamScorer
from skiff.errors import ConfigError, SpecError
from skiff.lake import Lake
from skiff.onnx_export import export_onnx
from skiff.registry import ModelRegistry
from skiff.spec import MqttSource, parse_spec
from skiff.storage import Store
from tests.unit.test_stream_windows import BASE, T0, WINDOWS

FEATURES = ["temperature", "humidity"]
INPUTS = {"temperature": "float", "humidity": "integer"}
MODEL = "sensor-anomaly"


def train_frame(n: int = 400, seed: int = 3) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame({"temperature": np.round(rng.uniform(10, 50, n), 2), "humidity": rng.integers(0, 100, n)})
    y = (x.temperature + x.humidity * 0.02 + rng.normal(0, 1.5, n)) > 30
    return x, y.to_numpy()


def register_anomaly_model(root: Path, registry: Path | None = None) -> tuple[ModelRegistry, Pipeline]:
    """A binary classifier on temperature and humidity, registered with its exact ONNX export."""
    root.mkdir(parents=True, exist_ok=True)
    reg = ModelRegistry(Store(str(registry or root / "registry")))
    x, y = train_frame()
    pipe = Pipeline([("sc", StandardScaler()), ("est", LogisticRegression())]).fit(x, y)
    info = export_onnx(pipe, x[300:], root / "m.onnx", input_schema=INPUTS, features=FEATURES)
    assert info["exact"], info
    reg.register(MODEL, pipe, {"features": FEATURES, "input_schema": INPUTS, "problem_type": "binary",
                               "classes": [False, True], "extra": {"onnx": info}},
                 files={"model.onnx": root / "m.onnx"})
    return reg, pipe


def scoring_spec(**scoring):
    return parse_spec({**BASE, "windows": {**WINDOWS, "scoring": {"model": MODEL, **scoring}}})


def readings(temps, hums) -> pa.Table:
    n = len(temps)
    return pa.table({
        "device_id": pa.array(["a"] * n, pa.string()),
        "ts": pa.array([T0 + i * 1_000_000 for i in range(n)], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "temperature": pa.array(temps, pa.float64()),
        "humidity": pa.array(hums, pa.int64()),
    })


def test_readings_are_scored_on_the_onnx_export_as_the_pipeline_predicts(tmp_path):
    reg, pipe = register_anomaly_model(tmp_path)
    scorer = StreamScorer(scoring_spec(version=1), scoring_spec().windows.scoring, reg)
    assert scorer.engine == "onnxruntime" and scorer.ref == f"{MODEL} v1"
    temps, hums = [12.5, 29.0, 31.0, 48.0], [10, 50, 0, 99]
    got = scorer.score(readings(temps, hums))
    want = pipe.predict_proba(pd.DataFrame({"temperature": temps, "humidity": hums}))[:, 1]
    assert got.engine == "onnxruntime"
    np.testing.assert_allclose(got.score, want, atol=1e-6)
    assert got.label == ["True" if p >= 0.5 else "False" for p in want]


def test_a_row_outside_what_the_export_checked_is_scored_by_the_pipeline(tmp_path):
    reg, pipe = register_anomaly_model(tmp_path)
    scorer = StreamScorer(scoring_spec(), scoring_spec().windows.scoring, reg)
    temps, hums = [20.0, 1e39], [5, 5]  # 1e39 is beyond the range the export was checked on (float32)
    got = scorer.score(readings(temps, hums))
    assert got.engine == "mixed"
    want = pipe.predict_proba(pd.DataFrame({"temperature": temps, "humidity": hums}))[:, 1]
    np.testing.assert_allclose(got.score, want, atol=1e-6)


def test_rows_missing_a_model_input_are_found_with_the_input_they_miss(tmp_path):
    reg, _ = register_anomaly_model(tmp_path)
    scorer = StreamScorer(scoring_spec(), scoring_spec().windows.scoring, reg)
    bad, first = scorer.missing(readings([20.0, None, float("nan"), 21.0], [1, 2, 3, None]))
    assert bad.tolist() == [False, True, True, True]
    assert first == ["temperature", "temperature", "humidity"]


def test_closed_windows_are_scored_by_a_model_on_their_features(tmp_path):
    reg = ModelRegistry(Store(str(tmp_path / "registry")))
    x = pd.DataFrame({"m1_temperature_mean": np.linspace(10, 40, 50), "m1_humidity_max": np.linspace(0, 99, 50)})
    lin = LinearRegression().fit(x, x.m1_temperature_mean * 2 - x.m1_humidity_max)
    reg.register("window-model", lin, {"features": list(x.columns), "problem_type": "regression",
                                       "input_schema": {c: "float" for c in x.columns}})
    spec = parse_spec({**BASE, "windows": {**WINDOWS, "scoring": {"model": "window-model", "score": "windows",
                                                                   "window": "m1"}}})
    scorer = StreamScorer(spec, spec.windows.scoring, reg)
    assert scorer.engine == "sklearn"  # no ONNX export registered: the pipeline scores
    rows = pa.table({"m1_temperature_mean": [20.0, 30.0], "m1_humidity_max": [10.0, 40.0]})
    np.testing.assert_allclose(scorer.score(rows).score, lin.predict(rows.to_pandas()))


@pytest.mark.parametrize(("scoring", "words"), [
    ({"model": "no-such-model"}, ["'no-such-model'", "does not resolve", "no versions"]),
    ({"model": MODEL, "version": 7}, [f"'{MODEL}'", "version 7", "no version 7"]),
    ({"model": MODEL, "version": "champion"}, ["no champion"]),
])
def test_a_bad_model_reference_is_a_config_error_at_start_naming_it(tmp_path, scoring, words):
    reg, _ = register_anomaly_model(tmp_path)
    spec = parse_spec({**BASE, "windows": {**WINDOWS, "scoring": scoring}})
    with pytest.raises(ConfigError) as e:
        StreamConsumer(spec, Lake(Store(str(tmp_path / "lake"))), MqttSource(topic="t/x"), registry=reg)
    assert all(w in e.value.message for w in words), e.value.message


def test_a_model_input_the_stream_lacks_and_a_missing_registry_are_config_errors(tmp_path):
    reg, _ = register_anomaly_model(tmp_path)
    spec = parse_spec({**BASE, "windows": {**WINDOWS, "scoring": {"model": MODEL, "score": "windows",
                                                                   "window": "m5"}}})
    with pytest.raises(ConfigError, match=r"needs 'temperature', 'humidity', not among the features of window 'm5'"):
        StreamScorer(spec, spec.windows.scoring, reg)
    with pytest.raises(ConfigError, match="needs the model registry"):
        StreamConsumer(scoring_spec(), Lake(Store(str(tmp_path / "lake"))), MqttSource(topic="t/x"))


@pytest.mark.parametrize(("scoring", "words"), [
    ({"model": MODEL, "score": "windows"}, ["needs window"]),
    ({"model": MODEL, "score": "windows", "window": "h1"}, ["window 'h1' is not defined"]),
    ({"model": MODEL, "window": "m1"}, ["takes no window"]),
    ({"model": MODEL, "version": "01"}, ["invalid version '01'"]),
    ({"model": MODEL, "topic": "scores/+"}, ["not a topic to publish to"]),
    ({"model": MODEL, "alert": {}}, ["needs above and/or below"]),
    ({"model": "bad name"}, ["model"]),
])
def test_bad_scoring_sections_are_spec_errors(scoring, words):
    with pytest.raises(SpecError) as e:
        parse_spec({**BASE, "windows": {**WINDOWS, "scoring": scoring}})
    assert all(w in str(e.value) for w in words), str(e.value)


def test_cli_stream_with_a_bad_model_reference_stops_before_connecting(tmp_path, capsys):
    import json

    from skiff.cli import main

    register_anomaly_model(tmp_path, tmp_path / "root" / "models")  # the registry under --root
    spec_file = tmp_path / "sensors.yaml"
    spec_file.write_text(json.dumps({**BASE, "windows": {**WINDOWS, "scoring": {"model": MODEL, "version": 9}}}))
    # the model is resolved before any connection is tried
    code = main(["--root", str(tmp_path / "root"), "stream", "--spec", str(spec_file), "--topic", "t/x",
                 "--max-messages", "1"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"model '{MODEL}' version 9" in err and "no version 9" in err and "unreachable" not in err
