"""Ingestion from the real PostgreSQL on this machine and from a real HTTP server the test runs on 127.0.0.1."""

import json
import logging
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from components.ingest.logic import ingest
from skiff.errors import SourceError
from skiff.lake import Lake
from skiff.spec import parse_spec
from skiff.storage import Store
from tests.conftest import require_service

pytestmark = pytest.mark.integration

PG_URL = "postgresql+psycopg://root@127.0.0.1:5432/test"
SECRET = "s3cr3t-" + uuid.uuid4().hex

COLUMNS = {
    "meter_id": {"type": "integer", "required": True},
    "read_at": {"type": "datetime", "required": True},
    "kwh": {"type": "float", "min": 0},
    "faulty": {"type": "boolean"},
}


def spec(sources, **extra):
    return parse_spec({"name": "meters", "entity_key": "meter_id", "event_timestamp": "read_at",
                       "columns": COLUMNS, "sources": sources, **extra})


@pytest.fixture
def lake(tmp_path):
    return Lake(Store(str(tmp_path / "lake")))


# --- PostgreSQL -----------------------------------------------------------------------------------------


@pytest.fixture
def pg_table():
    require_service("PostgreSQL", 5432)
    import sqlalchemy as sa

    engine = sa.create_engine(PG_URL)
    name = f"skiff_ingest_{uuid.uuid4().hex[:10]}"
    with engine.begin() as conn:
        conn.execute(sa.text(f"create table {name} (meter_id integer, read_at timestamptz, kwh numeric(10,3), "
                             "faulty boolean, updated_at timestamptz)"))
    try:
        yield engine, name
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"drop table if exists {name}"))
        engine.dispose()


def insert(engine, table, rows):
    import sqlalchemy as sa

    with engine.begin() as conn:
        conn.execute(sa.text(f"insert into {table} values (:m, :r, :k, :f, :u)"), rows)


def test_postgres_incremental_rerun_takes_only_new_rows(pg_table, lake, monkeypatch):
    engine, table = pg_table
    monkeypatch.setenv("SKIFF_TEST_PG_URL", PG_URL)
    insert(engine, table, [{"m": i, "r": f"2024-03-01 10:00:0{i}+00", "k": i * 1.5, "f": i % 2 == 0,
                            "u": f"2024-03-01 12:00:0{i}+00"} for i in range(1, 6)]
           + [{"m": 9, "r": "2024-03-01 10:00:00+00", "k": -1, "f": False, "u": "2024-03-01 12:00:09+00"}])
    s = spec([{"type": "sql", "url_env": "SKIFF_TEST_PG_URL", "table": table, "watermark": "updated_at",
               "chunk_rows": 2}])
    first = ingest(s, lake)
    assert first.counts == {"read": 6, "accepted": 5, "quarantined": 1, "duplicates": 0}
    assert first.manifest.quarantine_reasons == {"below_min": 1}
    src = first.manifest.sources[0]
    assert src["url"] == "postgresql+psycopg://root@127.0.0.1:5432/test" and src["url_env"] == "SKIFF_TEST_PG_URL"
    assert src["watermark"]["to"]["kind"] == "datetime"
    assert first.manifest.columns["kwh"] == "double"  # numeric(10,3) arrives as Decimal, lands as float64

    insert(engine, table, [{"m": i, "r": "2024-03-02 10:00:00+00", "k": 1.0, "f": True,
                            "u": f"2024-03-02 12:00:0{i}+00"} for i in range(6, 9)])
    second = ingest(s, lake)
    assert second.status == "ingested"
    assert second.counts == {"read": 3, "accepted": 3, "quarantined": 0, "duplicates": 0}
    assert sorted(lake.read("meters").column("meter_id").to_pylist()) == [1, 2, 3, 4, 5, 6, 7, 8]

    third = ingest(s, lake)
    assert third.status == "unchanged" and third.reason == "the sources returned no new rows"
    assert len(lake.all_runs("meters")) == 2


def test_postgres_query_source(pg_table, lake):
    engine, table = pg_table
    insert(engine, table, [{"m": 1, "r": "2024-03-01 10:00:00+00", "k": 2.5, "f": True, "u": "2024-03-01"}])
    s = spec([{"type": "sql", "url": PG_URL, "query": f"select meter_id, read_at, kwh, faulty from {table}"}])
    res = ingest(s, lake)
    assert res.counts["accepted"] == 1
    assert lake.read("meters").column("kwh").to_pylist() == [2.5]


def test_unreachable_database_is_a_source_error_and_nothing_is_written(lake):
    s = spec([{"type": "sql", "url": "postgresql+psycopg://root@127.0.0.1:1/test", "table": "t"}])
    with pytest.raises(SourceError, match=r"127\.0\.0\.1:1/test \(table t\): database unreachable"):
        ingest(s, lake)
    assert lake.all_runs("meters") == []


def test_missing_table_names_it(lake):
    require_service("PostgreSQL", 5432)
    s = spec([{"type": "sql", "url": PG_URL, "table": "skiff_no_such_table"}])
    with pytest.raises(Exception, match="table 'skiff_no_such_table' does not exist"):
        ingest(s, lake)


# --- REST ------------------------------------------------------------------------------------------------

RECORDS = [{"meter_id": i, "read_at": f"2024-03-01T10:00:{i:02d}Z", "kwh": f"{i},5", "faulty": "no"} for i in range(1, 8)]


class Api(BaseHTTPRequestHandler):
    counts: dict[str, int] = {}
    auth_seen: list[str | None] = []

    def log_message(self, *args):  # keep the server quiet
        pass

    def reply(self, status, body, headers=None):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 - the http.server API
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        Api.counts[url.path] = Api.counts.get(url.path, 0) + 1
        Api.auth_seen.append(self.headers.get("Authorization"))
        if url.path == "/page":  # ?page=N&size=3
            page, size = int(q["page"]), int(q["size"])
            self.reply(200, {"items": RECORDS[(page - 1) * size: page * size]})
        elif url.path == "/cursor":
            start = int(q.get("cursor", 0))
            nxt = start + 3 if start + 3 < len(RECORDS) else None
            self.reply(200, {"data": RECORDS[start:start + 3], "meta": {"next": nxt}})
        elif url.path == "/link":
            p = int(q.get("p", 1))
            headers = {"Link": f'</link?p={p + 1}>; rel="next"'} if p * 3 < len(RECORDS) else {}
            self.reply(200, RECORDS[(p - 1) * 3: p * 3], headers)
        elif url.path == "/flaky":
            if Api.counts[url.path] == 1:
                self.reply(429, {"error": "slow down"}, {"Retry-After": "1"})
            else:
                self.reply(200, RECORDS[:2])
        elif url.path == "/broken":
            self.reply(500, {"error": "boom"})
        elif url.path == "/secure":
            if self.headers.get("Authorization") != f"Bearer {SECRET}":
                self.reply(401, {"error": "unauthorized"})
            else:
                self.reply(200, RECORDS[:3])
        elif url.path == "/garbage":
            self.reply(200, b"<html>not json</html>")
        else:
            self.reply(404, {"error": "no such path"})


@pytest.fixture(scope="module")
def api():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def _reset_api():
    Api.counts.clear()
    Api.auth_seen.clear()


@pytest.mark.parametrize(
    ("path", "pagination", "records_path", "requests"),
    [
        ("/page", {"type": "page", "size_param": "size", "size": 3}, "items", 3),  # 3 + 3 + 1 (short page ends)
        ("/cursor", {"type": "cursor", "cursor_path": "meta.next"}, "data", 3),
        ("/link", {"type": "link"}, None, 3),
    ],
)
def test_rest_pagination(api, lake, path, pagination, records_path, requests):
    s = spec([{"type": "rest", "url": api + path, "pagination": pagination, "records_path": records_path}])
    res = ingest(s, lake)
    assert res.counts == {"read": 7, "accepted": 7, "quarantined": 0, "duplicates": 0}
    assert Api.counts[path] == requests
    assert res.manifest.sources[0]["pages"] == requests
    assert lake.read("meters").column("kwh").to_pylist() == [i + 0.5 for i in range(1, 8)]
    again = ingest(s, lake)  # same pages: same hash
    assert again.status == "unchanged"


def test_rest_429_is_retried_after_retry_after(api, lake):
    s = spec([{"type": "rest", "url": api + "/flaky", "backoff": 0.01}])
    t0 = time.monotonic()
    res = ingest(s, lake)
    assert time.monotonic() - t0 >= 1.0  # Retry-After: 1 was honoured, not the 0.01 s backoff
    assert res.counts["accepted"] == 2 and Api.counts["/flaky"] == 2


def test_rest_500_exhausts_retries_and_writes_nothing(api, lake):
    s = spec([{"type": "rest", "url": api + "/broken", "max_retries": 2, "backoff": 0.01}])
    with pytest.raises(SourceError, match=r"/broken \(page 1\): HTTP 500, gave up after 3 attempts"):
        ingest(s, lake)
    assert Api.counts["/broken"] == 3
    assert lake.all_runs("meters") == []
    assert not list(lake.store.local_path().rglob("*.parquet"))


def test_rest_malformed_page_is_a_source_error(api, lake):
    with pytest.raises(SourceError, match=r"/garbage \(page 1\): not JSON"):
        ingest(spec([{"type": "rest", "url": api + "/garbage"}]), lake)
    with pytest.raises(SourceError, match="records_path 'items' not found"):
        ingest(spec([{"type": "rest", "url": api + "/cursor", "records_path": "items"}]), lake)


def test_rest_unreachable_api(lake):
    s = spec([{"type": "rest", "url": "http://127.0.0.1:1/x", "max_retries": 1, "backoff": 0.01, "timeout": 2}])
    with pytest.raises(SourceError, match=r"127\.0\.0\.1:1/x \(page 1\): unreachable"):
        ingest(s, lake)


def test_rest_auth_header_comes_from_env_and_is_never_logged(api, lake, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="httpx")  # the CLI quiets httpx when a test ran it in-process
    s = spec([{"type": "rest", "url": api + "/secure", "auth": {"env": "SKIFF_TEST_TOKEN"}}])
    with pytest.raises(SourceError, match="environment variable SKIFF_TEST_TOKEN"):
        ingest(s, lake)
    monkeypatch.setenv("SKIFF_TEST_TOKEN", SECRET)
    res = ingest(s, lake)
    assert res.counts["accepted"] == 3
    assert Api.auth_seen == [f"Bearer {SECRET}"]
    assert "/secure" in caplog.text  # the request was logged (httpx), its header was not
    assert SECRET not in caplog.text
    assert SECRET not in res.manifest.to_json() and SECRET not in json.dumps(res.summary())
    monkeypatch.setenv("SKIFF_TEST_TOKEN", "wrong")
    with pytest.raises(SourceError, match="HTTP 401") as err:
        ingest(s, lake, force=True)
    assert "wrong" not in str(err.value)
