"""Resource use of a served version: on a laptop from the real model server process (psutil and its
/metrics), on a cluster from Prometheus's HTTP API with the cAdvisor / kube-state-metrics queries; the
cost per 1,000 predictions follows the node price."""

from __future__ import annotations

import datetime as dt
import json
import socket

import httpx
import pytest

from skiff.config import load_settings
from skiff.errors import SourceError, UsageError
from skiff.monitoring.resources import cost_per_1000, promql, resource_use
from tests.unit.test_serving_log import _frame, _v2, world  # noqa: F401 - the registered versions


def test_cost_per_1000_predictions():
    # a quarter of a 0.40/h node serving 10 requests/s: 0.10/h for 36,000 predictions
    assert cost_per_1000(0.40, 0.25, 10.0) == pytest.approx(0.10 / 36)
    assert cost_per_1000(None, 0.25, 10.0) is None and cost_per_1000(1.0, 0.5, 0.0) is None


@pytest.mark.slow
def test_a_local_server_process_reports_cpu_memory_requests_and_cost(world, tmp_path):  # noqa: F811
    from serving.runtime.server import start_local_server, stop_local_server

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = load_settings(root=str(world["root"]), node_price_per_hour=0.5)
    assert resource_use(settings, "spend", 1)["replicas"] == 0  # nothing serves it yet
    proc = start_local_server("spend", 1, port, root=world["root"], log_path=tmp_path / "s.log")
    try:
        for i in range(40):
            httpx.post(f"http://127.0.0.1:{port}/v2/models/spend/infer", json=_v2(_frame(1, i), None)).raise_for_status()
        use = resource_use(settings, "spend", 1, dt.timedelta(minutes=5))
        other = resource_use(settings, "spend", 2)
    finally:
        stop_local_server(proc)
    assert use["source"] == "process" and use["replicas"] == 1 and use["processes"][0]["pid"] == proc.pid
    assert use["requests"] == 40 and use["requests_per_s"] > 0
    assert use["cpu_cores"] > 0 and use["memory_bytes"] > 50e6
    assert use["cost_per_1000"] == pytest.approx(cost_per_1000(0.5, use["node_share"], use["requests_per_s"]))
    assert other["replicas"] == 0  # another version is not this process


def _prometheus(answers: dict[str, float | None], seen: list[str]) -> httpx.MockTransport:
    """Prometheus's /api/v1/query answers (the wire format of its HTTP API) for the queries asked."""

    def handle(request: httpx.Request) -> httpx.Response:
        q = request.url.params["query"]
        seen.append(q)
        value = next((v for k, v in answers.items() if q.startswith(k)), None)
        result = [] if value is None else [{"metric": {}, "value": [1700000000.0, str(value)]}]
        return httpx.Response(200, content=json.dumps({"status": "success", "data": {"resultType": "vector",
                                                                                   "result": result}}))

    return httpx.MockTransport(handle)


def test_on_a_cluster_the_queries_join_cadvisor_with_the_versions_pods(tmp_path):
    q = promql("prod", "churn", "churn", 3, dt.timedelta(minutes=10))
    assert 'label_serving_kserve_io_inferenceservice="churn"' in q["cpu_cores"] and "[600s]" in q["cpu_cores"]
    assert 'label_skiff_io_version="3"' in q["memory_bytes"] and "container_memory_working_set_bytes" in q["memory_bytes"]
    assert q["requests_per_s"].startswith('sum(rate(skiff_requests_total{namespace="prod", model="churn", version="3"}')
    seen: list[str] = []
    answers = {"sum(rate(container_cpu": 1.5, "sum(container_memory": 2e9, "count(": 3, "sum(rate(skiff_requests": 50.0,
               'avg(kube_node_status_allocatable{resource="cpu"})': 4, 'avg(kube_node_status_allocatable{resource="memory"})': 16e9}
    use = resource_use(load_settings(root=str(tmp_path)), "churn", 3, 600, prometheus_url="http://prom:9090",
                       namespace="prod", node_price_per_hour=0.8, transport=_prometheus(answers, seen))
    assert (use["source"], use["replicas"], use["cpu_cores"], use["memory_bytes"]) == ("prometheus", 3, 1.5, 2e9)
    assert use["node_share"] == pytest.approx(1.5 / 4)  # CPU is the larger share of the node
    assert use["cost_per_1000"] == pytest.approx(0.8 * 0.375 / 180)
    assert len(seen) == 6
    with pytest.raises(UsageError):
        promql("prod", 'churn"}) or vector(1', "churn", 1, 60)
    with pytest.raises(SourceError, match="answered 503"):
        resource_use(load_settings(root=str(tmp_path)), "churn", 3, prometheus_url="http://prom:9090",
                     transport=httpx.MockTransport(lambda r: httpx.Response(503)))
