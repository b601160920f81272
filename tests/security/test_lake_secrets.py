"""No credential from a source URL reaches the lake (manifests, watermark state, quarantine), a log or an
error; a database URL holding one is refused on the command line and in a spec."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import httpx
import pytest

from components.ingest.logic import ingest, source_from_arg
from skiff.errors import SourceError, SpecError, UsageError
from skiff.lake import Lake
from skiff.spec import parse_spec
from skiff.storage import Store
from tests.conftest import require_service

SECRET = "s3cr3t" + uuid.uuid4().hex
PG = "postgresql+psycopg://root@127.0.0.1:5432/test"
COLUMNS = {"id": {"type": "integer", "required": True}, "kwh": {"type": "float", "min": 0},
           "at": {"type": "datetime", "required": True}}


def spec(sources):
    return parse_spec({"name": "meters", "entity_key": "id", "event_timestamp": "at", "columns": COLUMNS,
                       "sources": sources})


def assert_no_secret_under(root: Path, *texts: str) -> None:
    leaks = [str(p) for p in root.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaks == [], f"secret written to {leaks}"
    for t in texts:
        assert SECRET not in t


@pytest.mark.parametrize("param", ["password", "sslpassword", "token", "key", "secret", "Password"])
def test_sql_url_with_a_secret_parameter_is_refused_on_the_command_line(param):
    with pytest.raises(UsageError) as e:
        source_from_arg(f"{PG}?{param}={SECRET}", table="t")
    assert SECRET not in str(e.value) and "url_env" in str(e.value) and param in str(e.value)


def test_sql_url_with_a_secret_parameter_is_refused_in_a_spec(tmp_path):
    s = spec([{"type": "sql", "url": f"{PG}?sslmode=disable&password={SECRET}", "table": "t"}])
    with pytest.raises(SpecError) as e:
        ingest(s, Lake(Store(str(tmp_path / "lake"))))
    assert SECRET not in str(e.value) and "url_env" in str(e.value)
    assert not (tmp_path / "lake").exists() or not any((tmp_path / "lake").rglob("_manifest.json"))


@pytest.mark.integration
def test_postgres_ingest_via_url_env_with_password_parameter_leaves_no_secret(tmp_path, monkeypatch, caplog):
    require_service("PostgreSQL", 5432)
    import sqlalchemy as sa

    engine = sa.create_engine(PG)
    table = f"skiff_secret_{uuid.uuid4().hex[:10]}"
    with engine.begin() as conn:
        conn.execute(sa.text(f"create table {table} (id integer, kwh float, at timestamptz)"))
        conn.execute(sa.text(f"insert into {table} values (1, 1.5, '2024-03-01 10:00+00'), "
                             f"(2, -1, '2024-03-01 11:00+00'), (3, 2.0, '2024-03-01 12:00+00')"))
    try:
        # trust auth ignores the password, so the run really reads with this URL
        monkeypatch.setenv("SKIFF_TEST_PG_SECRET_URL", f"{PG}?password={SECRET}&sslpassword={SECRET}")
        root = tmp_path / "lake"
        lake = Lake(Store(str(root)))
        caplog.set_level(logging.DEBUG)
        s = spec([{"type": "sql", "url_env": "SKIFF_TEST_PG_SECRET_URL", "table": table, "watermark": "at"}])
        res = ingest(s, lake)
        assert res.status == "ingested" and res.counts["read"] == 3 and res.counts["quarantined"] == 1
        src = res.manifest.sources[0]
        assert src["url"] == f"{PG}?password=***&sslpassword=***"
        assert list(root.glob("state/meters/*.json")), "the watermark state was written"
        again = ingest(s, lake)  # reads the state back: still works with the redacted record
        assert again.status == "unchanged"
        assert_no_secret_under(root, caplog.text, repr(res.summary()))
        # an error on the same URL (missing table) names the source without the secret
        with pytest.raises(Exception) as e:
            ingest(spec([{"type": "sql", "url_env": "SKIFF_TEST_PG_SECRET_URL", "table": "no_such_table_x"}]), lake)
        assert SECRET not in str(e.value) and "no_such_table_x" in str(e.value)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"drop table if exists {table}"))
        engine.dispose()


def test_rest_url_key_never_reaches_lake_logs_or_errors(tmp_path, caplog):
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.params.get("page") == "2":
            return httpx.Response(200, json={"items": [{"id": 3, "kwh": "x", "at": "2024-03-01T12:00:00Z"}]})
        if request.url.params.get("page") == "3":
            return httpx.Response(200, json={"items": []})
        return httpx.Response(200, json={"items": [{"id": 1, "kwh": 1, "at": "2024-03-01T10:00:00Z"},
                                                   {"id": 2, "kwh": 2, "at": "2024-03-01T11:00:00Z"}]})

    root = tmp_path / "lake"
    caplog.set_level(logging.DEBUG)
    url = f"https://api.example.com/readings?api_key={SECRET}"
    s = spec([{"type": "rest", "url": url, "records_path": "items", "pagination": {"type": "page"}}])
    res = ingest(s, Lake(Store(str(root))), http_transport=httpx.MockTransport(handler))
    assert res.counts == {"read": 3, "accepted": 2, "quarantined": 1, "duplicates": 0}
    assert all(SECRET in u for u in seen)  # the key is still sent to the API
    assert res.manifest.sources[0]["url"] == "https://api.example.com/readings?api_key=***"
    assert_no_secret_under(root, caplog.text)

    def failing(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, text=f"bad key {request.url}")

    with pytest.raises(SourceError) as e:
        ingest(s, Lake(Store(str(tmp_path / "lake2"))), http_transport=httpx.MockTransport(failing))
    assert "403" in str(e.value) and SECRET not in str(e.value) and SECRET not in repr(e.value.detail)
