"""The model server's limits on a real ``skiff serve`` subprocess: a chunked body (no Content-Length) over
``serve_max_body_bytes`` is a JSON 413 while it streams, without the server growing; nobody can unload
or load the served model by request (KServe's model repository extension is not served, on REST or
gRPC); routes and methods it does not serve, and the V1 explain verb, are JSON 404/405s."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import httpx
import psutil
import pytest

from tests.conftest import post_oversized
from tests.integration.test_serving import free_port
from tests.security.test_serving_online_offline import world  # noqa: F401 - fixture

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CAP = 1024 * 1024


@pytest.fixture(scope="module")
def server(world):  # noqa: F811 - the fixture imported above
    from serving.runtime.server import start_local_server, stop_local_server

    root = Path(world["settings"].root)
    port, grpc_port = free_port(), free_port()
    proc = start_local_server("meters", 1, port, root=root, grpc_port=grpc_port, log_path=root / "serve-limits.log",
                              extra_env={"SKIFF_SERVE_MAX_BODY_BYTES": str(CAP)})
    yield {"url": f"http://127.0.0.1:{port}", "port": port, "grpc_port": grpc_port, "proc": proc}
    stop_local_server(proc)


def _post_chunked(port: int, path: str, total: int, chunk: bytes) -> bytes:
    """POST ``total`` bytes with Transfer-Encoding: chunked, stop when the server closes; its answer."""
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()
    answer, sent = post_oversized(port, head, total, b"%x\r\n" % len(chunk) + chunk + b"\r\n", b"0\r\n\r\n")
    assert sent < total, "the server read the whole body over its cap"
    return answer


@pytest.mark.parametrize("path", ["/v1/models/meters:predict", "/v2/models/meters/infer",
                                  "/v2/models/meters/versions/1/infer"])
def test_a_chunked_body_over_the_cap_is_a_json_413_and_the_server_does_not_grow(server, path):
    proc = psutil.Process(server["proc"].pid)
    before = proc.memory_info().rss
    answer = _post_chunked(server["port"], path, 200 * 1024 * 1024, b"[" + b"1," * (64 * 1024))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"content-type: application/json" in head.lower()
    reason = json.loads(body)
    assert reason["error"] == "PayloadTooLarge" and reason["detail"]["max_body_bytes"] == CAP, reason
    assert "serve_max_body_bytes" in reason["message"]
    grown = proc.memory_info().rss - before
    assert grown < 30 * 1024 * 1024, f"the server grew by {grown / 2**20:.0f} MiB"
    # the next request on a new connection is served as usual
    ok = httpx.post(f"{server['url']}/v1/models/meters:predict", timeout=10, json={"instances": [
        {"kwh": "3,5", "seats": "2", "paper": "Yes", "site": "north"}]})
    assert ok.status_code == 200, ok.text


def test_a_chunked_body_under_the_cap_is_served(server):
    body = json.dumps({"instances": [{"kwh": "3,5", "seats": "2", "paper": "Yes", "site": "north"}] * 12000})
    assert CAP // 2 < len(body) < CAP

    def chunks():
        for i in range(0, len(body), 4096):
            yield body[i:i + 4096].encode()

    r = httpx.post(f"{server['url']}/v1/models/meters:predict", content=chunks(), timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == 12000


def test_nobody_unloads_or_loads_the_served_model_by_request(server):
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc

    url = server["url"]
    for verb in ("unload", "load"):
        r = httpx.post(f"{url}/v2/repository/models/meters/{verb}", timeout=10)
        assert r.status_code == 404 and r.json()["error"] == "NotFoundError", r.text
        assert "roll out a new version" in r.json()["message"]
    with grpc.insecure_channel(f"127.0.0.1:{server['grpc_port']}") as channel:
        stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
        for call, request in ((stub.RepositoryModelUnload, pb.RepositoryModelUnloadRequest(model_name="meters")),
                              (stub.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name="meters"))):
            with pytest.raises(grpc.RpcError) as e:
                call(request, timeout=10)
            assert e.value.code() is grpc.StatusCode.UNIMPLEMENTED, e.value
        assert stub.ModelReady(pb.ModelReadyRequest(name="meters"), timeout=10).ready
    assert httpx.get(f"{url}/v2/models/meters/ready", timeout=10).json()["ready"] is True
    assert httpx.get(f"{url}/v2", timeout=10).json()["extensions"] == []


def test_routes_not_served_and_explain_are_json_404s(server):
    url = server["url"]
    r = httpx.post(f"{url}/v1/models/meters:explain", json={"instances": [[1, 2, "Yes", "north"]]}, timeout=10)
    assert r.status_code == 404, r.text
    assert r.json()["error"] == "NotFoundError" and "no explainer" in r.json()["message"]
    r = httpx.post(f"{url}/v1/models/nobody:explain", json={"instances": []}, timeout=10)
    assert r.status_code == 404 and r.json()["detail"]["model"] == "nobody", r.text
    r = httpx.get(f"{url}/v3/nothing", timeout=10)
    assert r.status_code == 404 and r.json() == {"error": "NotFound", "message": "GET /v3/nothing: Not Found"}
    r = httpx.delete(f"{url}/v2/models/meters/infer", timeout=10)
    assert r.status_code == 405 and r.json()["error"] == "MethodNotAllowed" and "POST" in r.headers["allow"]
