"""REST API tokens: SHA-256 digests from env vars and a file, scopes, constant-time checks, clear errors."""

from __future__ import annotations

import hashlib
import io

import pytest

from skiff.api.auth import ADMIN_ENV, READ_ENV, TokenSet, hash_token, load_tokens
from skiff.cli import main
from skiff.errors import ConfigError

ADMIN, READER = "admin-secret-1", "reader-secret-2"


def test_hash_token_is_sha256_hex_of_the_stripped_token():
    assert hash_token(ADMIN + "\n") == hashlib.sha256(ADMIN.encode()).hexdigest()
    with pytest.raises(ConfigError, match="empty token"):
        hash_token("  \n")


def test_env_vars_give_admin_and_read_scopes():
    tokens = load_tokens(environ={ADMIN_ENV: f" {hash_token(ADMIN)} ,", READ_ENV: hash_token(READER).upper()})
    assert tokens.scope_of(ADMIN) == "admin"
    assert tokens.scope_of(READER) == "read"
    assert tokens.scope_of("wrong") is None
    assert tokens.scope_of("") is None
    assert tokens.scope_of(hash_token(ADMIN)) is None  # the digest itself is not a token


def test_tokens_file_with_scopes_and_comments(tmp_path):
    f = tmp_path / "tokens"
    f.write_text(f"# operators\n{hash_token(ADMIN)}\n\n{hash_token(READER)} read  # dashboards\n")
    tokens = load_tokens(f, environ={})
    assert (tokens.scope_of(ADMIN), tokens.scope_of(READER)) == ("admin", "read")
    assert len(tokens.admin) == 1 and len(tokens.read) == 1


@pytest.mark.parametrize("content", ["not-a-digest\n", f"{'a' * 64} owner\n", f"{'a' * 63}\n"])
def test_bad_tokens_file_names_the_line_and_never_echoes_it(tmp_path, content):
    f = tmp_path / "tokens"
    f.write_text("# header\n" + content)
    with pytest.raises(ConfigError) as e:
        load_tokens(f, environ={})
    assert f"{f}:2" in e.value.message
    assert content.split()[0] not in e.value.message


def test_plaintext_token_in_env_var_is_refused_without_echo():
    with pytest.raises(ConfigError, match=ADMIN_ENV) as e:
        load_tokens(environ={ADMIN_ENV: "my-plain-token"})
    assert "my-plain-token" not in e.value.message
    with pytest.raises(ConfigError, match="tokens file not found"):
        load_tokens("/nonexistent/tokens", environ={})


def test_empty_configuration_is_falsy():
    assert not load_tokens(environ={})
    assert TokenSet.of(read=[hash_token(READER)])


def test_cli_hash_token_reads_stdin(monkeypatch, capsys, skiff_env):
    monkeypatch.setattr("sys.stdin", io.StringIO(ADMIN + "\n"))
    assert main(["api", "hash-token"]) == 0
    assert capsys.readouterr().out.strip() == hashlib.sha256(ADMIN.encode()).hexdigest()


def test_cli_refuses_to_serve_without_tokens(monkeypatch, capsys, skiff_env):
    monkeypatch.delenv(ADMIN_ENV, raising=False)
    monkeypatch.delenv(READ_ENV, raising=False)
    assert main(["api", "--port", "1"]) == 2
    assert "no API token configured" in capsys.readouterr().err
