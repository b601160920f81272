"""The REST API as an attacker meets it: the token is checked before the body is read, bodies are
capped while they stream, runs cannot make the server read its own files, and /docs loads nothing
from a CDN."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import httpx
import psutil
import pytest
from fastapi.testclient import TestClient

from skiff.api import create_app
from skiff.api.auth import ADMIN_ENV, READ_ENV, TokenSet, hash_token
from skiff.config import load_settings
from tests.conftest import REPO, post_oversized, wait_until_ready

ADMIN, READER = "admin-token-for-security-tests", "read-token-for-security-tests"
A = {"Authorization": f"Bearer {ADMIN}"}
SECRET = "s3cr3t-value-in-a-file"


def _app(**kw):
    settings = load_settings()
    return create_app(settings, tokens=TokenSet.of(admin=[hash_token(ADMIN)], read=[hash_token(READER)]),
                      environments="infra/environments", **kw)


@pytest.fixture
def client(skiff_env):
    with TestClient(_app(max_body_bytes=4096), raise_server_exceptions=False) as c:
        yield c


# -- authentication before the body ----------------------------------------------------------------------
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {ADMIN}"},
                                     {"Authorization": "Bearer"}, {"Authorization": f"Bearer {hash_token(ADMIN)}"}])
def test_malformed_json_without_a_valid_token_is_401_not_422(client, headers):
    resp = client.post("/api/v1/models/churn/champion", content=b"{not json",
                       headers={**headers, "Content-Type": "application/json"})
    assert resp.status_code == 401, resp.text
    assert resp.json()["error"] == "Unauthorized" and resp.headers["WWW-Authenticate"] == "Bearer"
    # with a token the same body is a validation error naming the body
    resp = client.post("/api/v1/models/churn/champion", content=b"{not json",
                       headers={**A, "Content-Type": "application/json"})
    assert resp.status_code == 422 and resp.json()["error"] == "RequestValidationError"


def test_unknown_routes_under_the_prefix_need_a_token_too(client):
    assert client.get("/api/v1/nothing-here").status_code == 401
    assert client.get("/api/v1/nothing-here", headers=A).status_code == 404
    assert client.get("/healthz").status_code == 200


# -- body caps ----------------------------------------------------------------------------------------------
def test_a_body_over_the_cap_is_413_with_the_json_error_body(client):
    big = b'{"version": 1, "reason": "' + b"x" * 5000 + b'"}'
    resp = client.post("/api/v1/models/churn/champion", content=big, headers={**A, "Content-Type": "application/json"})
    assert resp.status_code == 413, resp.text
    body = resp.json()
    assert body["error"] == "PayloadTooLarge" and body["detail"] == {"max_body_bytes": 4096}
    assert "--max-body-bytes" in body["message"]

    def chunks():  # chunked: no Content-Length, counted while it streams
        for _ in range(10):
            yield b"x" * 1000

    resp = client.post("/api/v1/models/churn/champion", content=chunks(), headers={**A,
                       "Content-Type": "application/json"})
    assert resp.status_code == 413 and resp.json()["error"] == "PayloadTooLarge"
    # under the cap the body reaches the handler whole
    resp = client.post("/api/v1/models/churn/champion", json={"version": 1, "reason": "y" * 400}, headers=A)
    assert resp.status_code == 404 and "churn" in resp.json()["message"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post_raw(port: int, head: bytes, total: int, frame: bytes) -> bytes:
    return post_oversized(port, head, total, frame)[0]


@pytest.mark.slow
def test_a_real_server_does_not_grow_on_a_150_mb_unauthenticated_post(skiff_env):
    port = _free_port()
    env = {**os.environ, ADMIN_ENV: hash_token(ADMIN), READ_ENV: "", "SKIFF_ROOT": str(skiff_env / ".skiff"),
           "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "skiff", "api", "--port", str(port)], env=env, cwd=skiff_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/healthz", proc, timeout=60)
        server = psutil.Process(proc.pid)
        before = server.memory_info().rss
        size = 150 * 1024 * 1024
        chunk = b"{" * (1024 * 1024)
        path = b"POST /api/v1/models/churn/champion HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        answer = _post_raw(port, path + f"Content-Length: {size}\r\n\r\n".encode(), size, chunk)
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
        answer = _post_raw(port, path + b"Transfer-Encoding: chunked\r\n\r\n", size,
                           b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
        # authenticated but over the 1 MiB default: 413 while it streams, chunked or declared
        auth = f"Authorization: Bearer {ADMIN}\r\n".encode()
        answer = _post_raw(port, path + auth + f"Content-Length: {size}\r\n\r\n".encode(), size, chunk)
        assert answer.startswith(b"HTTP/1.1 413") and b'"PayloadTooLarge"' in answer, answer[:300]
        answer = _post_raw(port, path + auth + b"Transfer-Encoding: chunked\r\n\r\n", size,
                           b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        assert answer.startswith(b"HTTP/1.1 413") and b'"PayloadTooLarge"' in answer, answer[:300]
        grown = server.memory_info().rss - before
        assert grown < 30 * 1024 * 1024, f"the server grew by {grown / 2**20:.0f} MiB"
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert ADMIN not in out


# -- pipeline runs never read server files ------------------------------------------------------------------
@pytest.fixture
def datasets(skiff_env):
    folder = skiff_env / "datasets"
    folder.mkdir()
    (folder / "churn.yaml").write_text((REPO / "examples" / "churn.yaml").read_text())
    (folder / "broken.yaml").write_text(f"name: broken\npassword: '{SECRET}'\n  columns: [\n")
    (folder / "listy.yaml").write_text(f"- {SECRET}\n")
    (folder / "bomb.yaml").write_text("a: &a [x, x]\nb: [*a, *a]\n")
    (skiff_env / "outside.yaml").write_text(f"name: outside\nsecret: {SECRET}\n")
    return folder


def _run(client, params, **extra):
    return client.post("/api/v1/pipelines/tabular/runs", json={"params": params, **extra}, headers=A)


@pytest.mark.parametrize("spec", ["/etc/passwd", "../outside", "outside.yaml", "datasets/churn.yaml",
                                  "/tmp", "churn\n", "~root", "file:///etc/passwd", "C:\\x"])
def test_a_server_path_is_never_a_spec(client, datasets, spec):
    resp = _run(client, {"spec": spec})
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["error"] == "RequestValidationError" and "server paths are not accepted" in body["message"]
    assert "root:" not in resp.text and SECRET not in resp.text


def test_an_inline_spec_mapping_is_refused(client, datasets):
    spec = {"name": "x", "sources": [{"type": "file", "path": "/etc/passwd"}], "columns": {"a": {"type": "string"}}}
    resp = _run(client, {"spec": spec})
    assert resp.status_code == 422 and "body.params.spec" in resp.json()["message"]


def test_dataset_specs_by_name_answer_without_echoing_content(client, datasets):
    resp = _run(client, {"spec": "nope"})
    assert resp.status_code == 404 and resp.json()["error"] == "NotFoundError"
    for name, phrase in (("broken", "not valid YAML"), ("listy", "a dataset spec is a mapping"),
                         ("bomb", "uses an anchor")):
        resp = _run(client, {"spec": name})
        assert resp.status_code == 422, resp.text
        body = resp.json()
        assert body["error"] == "SpecError" and phrase in body["message"], body
        assert f"{name}.yaml" in body["message"] and "\n" not in body["message"]
        assert SECRET not in resp.text
    # the same shape for every problem: {"error", "message", "detail"?}
    assert set(_run(client, {"spec": "nope"}).json()) <= {"error", "message", "detail"}
    assert set(_run(client, {"spec": "listy"}).json()) <= {"error", "message", "detail"}


@pytest.mark.parametrize("source", [
    {"type": "file", "path": "/etc/passwd"},
    {"type": "file", "path": "file:///etc/passwd"},
    {"type": "file", "path": "../../etc/passwd"},
    {"type": "file", "path": "s3://"},
    {"type": "sql", "url": "sqlite:////etc/passwd", "table": "t"},
    {"type": "rest", "url": "http://169.254.169.254/latest/meta-data"},
    {"type": "file", "path": "local://etc/passwd"},
])
def test_source_overrides_take_object_store_uris_only(client, datasets, source):
    resp = _run(client, {"spec": "churn", "sources": [source]})
    assert resp.status_code == 422, resp.text
    assert "body.params.sources" in resp.json()["message"]


def test_an_object_store_source_override_passes_preflight(client, datasets):
    calls = []

    class Client:
        def __init__(self, host, namespace=None):
            pass

        def create_run_from_pipeline_func(self, func, arguments, **kw):
            calls.append(arguments)
            return type("Run", (), {"run_id": "r1"})()

    client.app.state.skiff.kfp_client_factory = Client
    resp = _run(client, {"spec": "churn", "sources": [{"path": "s3://bucket/churn/2026-11-01.csv"}]},
                host="http://kfp:8888")
    assert resp.status_code == 202, resp.text
    assert calls[0]["sources"] == [{"type": "file", "path": "s3://bucket/churn/2026-11-01.csv", "format": "auto",
                                    "encoding": "utf-8"}]


# -- /docs without a CDN ------------------------------------------------------------------------------------
def test_docs_reference_only_local_assets_that_answer(client):
    page = client.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", page.text)
    assert any(u.endswith(".js") for u in urls) and any(u.endswith(".css") for u in urls), urls
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), f"/docs loads {url} from elsewhere"
        assert client.get(url).status_code == 200, url
    assert "cdn" not in page.text.lower() and "https://" not in page.text


def test_docs_can_be_turned_off(skiff_env):
    with TestClient(_app(docs=False)) as c:
        assert c.get("/docs").status_code == 404
        assert c.get("/openapi.json").status_code == 200
