"""The inference log end to end: ``python -m serving predictor`` (the containers' entry point, a real KServe
ModelServer process) logs at 50% sampling set in the environment; the counters on ``/metrics`` reconcile
with the requests sent, and after a SIGTERM (graceful shutdown) every accepted request is in the files."""

from __future__ import annotations

import re
import socket

import httpx
import pytest

from serving.runtime.server import start_local_server, stop_local_server
from skiff.inference_log import log_partitions, log_store, read_log
from tests.unit.test_serving_log import KEY, _frame, _v2, world  # noqa: F401 - the registered versions

pytestmark = pytest.mark.integration


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_served_model_logs_half_its_requests_and_flushes_them_on_sigterm(world, tmp_path):  # noqa: F811
    port = _port()
    proc = start_local_server("accounts", 1, port, root=world["root"], log_path=tmp_path / "server.log",
                              extra_env={"SKIFF_INFERENCE_LOG_SAMPLE_RATE": "0.5", "SKIFF_INFERENCE_LOG_KEY": KEY})
    base = f"http://127.0.0.1:{port}"
    n = 300
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            for i in range(n):
                r = client.post("/v2/models/accounts/infer", json=_v2(_frame(1, i), f"int-{i}"))
                assert r.status_code == 200, r.text
            text = client.get("/metrics").text
    finally:
        code = stop_local_server(proc)
    counters = {m.group(1): float(m.group(2)) for m in re.finditer(
        r'^skiff_inference_log_(\w+?)(?:_total)?\{model="accounts"\} ([\d.e+]+)$', text, re.M)}
    assert code == -15 or code == 0, (tmp_path / "server.log").read_text()[-2000:]
    assert counters["offered"] == n
    assert counters["offered"] == counters["unsampled"] + counters["dropped"] + counters["accepted"]
    assert 0.35 < counters["accepted"] / n < 0.65
    store = log_store(world["settings"])
    ids = {r for v, h in log_partitions(store, "accounts") for r in read_log(store, "accounts", v, h)
           .column("request_id").to_pylist() if r.startswith("int-")}
    assert len(ids) == counters["accepted"]  # every accepted request written by the shutdown's flush
    assert "inference log closed" in (tmp_path / "server.log").read_text()
