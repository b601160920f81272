"""Bring your own data, end to end, as a newcomer would: a keyless, semicolon-separated export with
decimal commas, trailing delimiters and a numeric sentinel goes through ``skiff init-dataset``,
``skiff ingest``, ``skiff run tabular --local`` and ``skiff serve``; the export's own rows, sent to the
served model exactly as the file spells them, get the answers the registered model gives on the lake's
typed rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import numpy as np
import pytest
import yaml

from skiff.cli import main
from skiff.config import load_settings
from skiff.registry import ModelRegistry
from tests.conftest import wait_until_ready

pytestmark = [pytest.mark.integration, pytest.mark.tfdv, pytest.mark.slow]

HEADER = ["kwh", "seats", "paper", "site", "faulty"]


def _export(n: int = 400, seed: int = 11) -> tuple[str, list[dict[str, str]]]:
    """The file's text and its rows as the file spells them (values only, no key: there is none)."""
    rng = np.random.default_rng(seed)
    lines, rows = [";".join(HEADER) + ";;"], []  # two trailing delimiters: empty-named, empty columns
    for i in range(n):
        kwh = rng.gamma(2.0, 3.0)
        seats = int(rng.integers(1, 9))
        site = ["north", "south", "east"][int(rng.integers(0, 3))]
        faulty = "Yes" if kwh + (site == "east") * 2 + rng.normal(0, 1.5) > 7 else "No"
        kwh_text = "-200" if i % 7 == 3 else f"{kwh:.2f}".replace(".", ",")  # sentinel in ~14% of rows
        paper = ["Yes", "No"][i % 2]
        row = {"kwh": kwh_text, "seats": str(seats), "paper": paper, "site": site, "faulty": faulty}
        rows.append(row)
        lines.append(";".join(row[h] for h in HEADER) + ";;")
    return "\n".join(lines) + "\n", rows


def _cli(capsys, *argv: str) -> tuple[int, dict]:
    code = main([*argv, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_keyless_dirty_export_to_a_served_model(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SKIFF_ROOT", str(tmp_path / ".skiff"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("SKIFF_CONFIG", raising=False)
    text, rows = _export()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "meters.csv").write_text(text)

    # 1. init-dataset: no id column, so a generated key; -200 proposed as a sentinel, with a note
    code, _ = _cli(capsys, "init-dataset", "data/meters.csv", "--name", "meters", "--target", "faulty")
    assert code == 0
    spec_text = (tmp_path / "datasets" / "meters.yaml").read_text()
    spec = yaml.safe_load(spec_text)
    assert isinstance(spec["entity_key"], dict) and spec["entity_key"]["generated"] == "row", spec
    assert -200 in spec["columns"]["kwh"].get("sentinels", []), spec["columns"]["kwh"]
    lines = spec_text.splitlines()
    note = lines[next(i for i, line in enumerate(lines) if line.strip() == "kwh:") - 1]
    assert note.strip().startswith("#") and "-200" in note, note  # the spec says what it saw
    assert not any(c.startswith("column_") or c == "" for c in spec["columns"]), spec["columns"]

    # 2. ingest: every row accepted, the empty trailing columns dropped with a note
    code, ingested = _cli(capsys, "ingest", "--dataset", "meters")
    assert code == 0, ingested
    assert ingested["counts"]["read"] == len(rows)
    assert ingested["counts"]["quarantined"] == 0, ingested

    # 3. the whole pipeline on kfp.local
    code, run = _cli(capsys, "run", "tabular", "--local", "--param", "spec=datasets/meters.yaml",
                     "--param", 'train_config={"estimator": "logistic_regression", "cv_folds": 3}')
    assert code == 0, run
    registry = ModelRegistry.from_settings(load_settings())
    version = registry.get("meters")
    features = version.metadata.features
    assert "row_id" not in features and set(features) == {"kwh", "seats", "paper", "site"}, features

    # the registered model on the lake's typed rows, in the file's order (the generated id ends in the offset)
    from skiff.lake import Lake

    lake = Lake.from_settings(load_settings()).read("meters").to_pandas()
    lake["offset"] = lake["row_id"].str.rsplit("-", n=1).str[1].astype(int)
    lake = lake.sort_values("offset").reset_index(drop=True)
    assert lake["offset"].tolist() == list(range(len(rows)))
    assert lake.loc[3, "kwh"] != -200  # the sentinel is missing (imputed), never a reading of -200 kWh
    model = registry.load_model("meters", version.version)
    offline = model.predict_proba(lake[features])[:, 1]

    # 4. skiff serve, and the export's rows sent raw on V1 and V2
    port = _free_port()
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "skiff", "serve", "meters", "--port", str(port)],
                            env={**os.environ}, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(f"{url}/v2/models/meters/ready", proc, timeout=90, log_path=tmp_path / "serve.log")
        raw = [{f: r[f] for f in features} for r in rows]
        v1 = httpx.post(f"{url}/v1/models/meters:predict", json={"instances": raw}, timeout=30)
        assert v1.status_code == 200, v1.text
        v2 = httpx.post(f"{url}/v2/models/meters/infer", timeout=30, json={"inputs": [
            {"name": f, "datatype": "BYTES", "shape": [len(raw)], "data": [r[f] for r in raw]} for f in features]})
        assert v2.status_code == 200, v2.text
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    online_v1 = np.array([p["probability"] for p in v1.json()["predictions"]])
    online_v2 = np.array(next(o for o in v2.json()["outputs"] if o["name"] == "probability")["data"])
    tolerance = 1e-5 if version.metadata.extra.get("onnx", {}).get("exact") else 1e-9  # ONNX runs in float32
    np.testing.assert_allclose(online_v1, offline, rtol=0, atol=tolerance)
    np.testing.assert_allclose(online_v2, offline, rtol=0, atol=tolerance)
