"""One redaction function for every credential a URL can carry (skiff.redact)."""

from __future__ import annotations

import pytest

from skiff.errors import SourceError
from skiff.redact import redact_text, redact_url, url_secrets

# (url, redacted form, what url_secrets names)
CASES = [
    ("postgresql+psycopg://u:hunter2@h:5432/db", "postgresql+psycopg://u:***@h:5432/db", ["password"]),
    ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db", ["password"]),
    ("postgresql://u@h/db?sslmode=require&password=hunter2", "postgresql://u@h/db?sslmode=require&password=***",
     ["password"]),
    ("postgresql://u@h/db?sslpassword=hunter2", "postgresql://u@h/db?sslpassword=***", ["sslpassword"]),
    ("mysql://u@h/db?PASSWD=hunter2", "mysql://u@h/db?PASSWD=***", ["PASSWD"]),
    ("mssql+pyodbc://u@dsn?PWD=hunter2&driver=x", "mssql+pyodbc://u@dsn?PWD=***&driver=x", ["PWD"]),
    ("https://api.example.com/v1?token=hunter2&page=2", "https://api.example.com/v1?token=***&page=2", ["token"]),
    ("https://api.example.com/v1?Access_Token=hunter2", "https://api.example.com/v1?Access_Token=***",
     ["Access_Token"]),
    ("https://api.example.com/v1?key=hunter2", "https://api.example.com/v1?key=***", ["key"]),
    ("https://api.example.com/v1?api_key=hunter2", "https://api.example.com/v1?api_key=***", ["api_key"]),
    ("https://api.example.com/v1?APIKEY=hunter2", "https://api.example.com/v1?APIKEY=***", ["APIKEY"]),
    ("https://api.example.com/v1?api-key=hunter2", "https://api.example.com/v1?api-key=***", ["api-key"]),
    ("https://x/?secret=hunter2", "https://x/?secret=***", ["secret"]),
    ("https://x/?client_secret=hunter2&client_id=app", "https://x/?client_secret=***&client_id=app",
     ["client_secret"]),
    ("https://x/?db_password=hunter2", "https://x/?db_password=***", ["db_password"]),
    ("https://acct.blob.core.windows.net/c/f.csv?sv=2022-11-02&ss=b&sig=ab%2Fc%3D&se=2030-01-01",
     "https://acct.blob.core.windows.net/c/f.csv?sv=2022-11-02&ss=b&sig=***&se=2030-01-01", ["sig"]),
    ("https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA&X-Amz-Signature=hunter2",
     "https://b.s3.amazonaws.com/k?X-Amz-Credential=***&X-Amz-Signature=***",
     ["X-Amz-Credential", "X-Amz-Signature"]),
    ("https://x/?signature=hunter2", "https://x/?signature=***", ["signature"]),
    ("s3://AKIA:hunter2@bucket/key.csv", "s3://AKIA:***@bucket/key.csv", ["password"]),
    ("https://x/cb#access_token=hunter2&state=1", "https://x/cb#access_token=***&state=1", ["access_token"]),
    # nothing secret: unchanged
    ("postgresql+psycopg://root@127.0.0.1:5432/test", "postgresql+psycopg://root@127.0.0.1:5432/test", []),
    ("https://api.example.com/v1?page=2&size=10", "https://api.example.com/v1?page=2&size=10", []),
    ("/data/in/*.csv", "/data/in/*.csv", []),
]


@pytest.mark.parametrize(("url", "redacted", "names"), CASES, ids=[c[0][:40] for c in CASES])
def test_redact_url_table(url, redacted, names):
    assert redact_url(url) == redacted
    assert url_secrets(url) == names
    assert "hunter2" not in redact_url(url)


def test_unparseable_url_keeps_nothing_after_the_query():
    out = redact_url("http://[::1/x?token=hunter2")
    assert "hunter2" not in out and out.startswith("http://")


def test_urls_inside_text_and_errors_are_redacted():
    text = 'connect "postgresql://a:hunter2@h/d?apikey=hunter2" failed; retry https://x/?sig=hunter2.'
    assert "hunter2" not in redact_text(text)
    assert "postgresql://a:***@h/d?apikey=***" in redact_text(text)
    err = SourceError(f"cannot read {text}", source="https://x/?token=hunter2")
    assert "hunter2" not in str(err) and "hunter2" not in repr(err.to_dict())


def test_the_cli_redacts_every_log_line_and_unexpected_error_of_its_process(tmp_path):
    """Whoever logs a URL (a library's child logger, uvicorn) and whatever an unexpected error says, the
    credentials never reach stderr once the CLI has started."""
    import subprocess
    import sys

    script = (
        "import logging, sys\n"
        "from skiff.cli import main\n"
        "assert main(['config', '--json']) == 0\n"
        "logging.getLogger('some.library.client').warning('GET %s', 'https://u:hunter2@db.example/x?token=t0ps3cret')\n"
        "logging.getLogger('uvicorn.access').warning('GET /x?api_key=k3y-s3cret HTTP/1.1')\n"
        "logging.getLogger('skiff.ingest').error('reading postgresql://etl:pa55word@db/prod failed')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          env={"PATH": "", "SKIFF_ROOT": str(tmp_path / ".skiff"), "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    for secret in ("hunter2", "t0ps3cret", "k3y-s3cret", "pa55word"):
        assert secret not in proc.stderr, proc.stderr
    assert proc.stderr.count("GET") == 2 and "db.example" in proc.stderr  # the lines are there, redacted
