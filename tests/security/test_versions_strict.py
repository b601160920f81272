"""Version identifiers are parsed by one strict rule everywhere a user gives one: the parser, the REST
API (path and bodies), the CLI and GitOps environment files."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sklearn.dummy import DummyClassifier

from serving.deploy.gitops import Environments
from skiff.api import create_app
from skiff.api.auth import TokenSet, hash_token
from skiff.cli import main
from skiff.config import load_settings
from skiff.errors import ConfigError, UsageError
from skiff.registry import ModelRegistry
from skiff.versions import parse_version, parse_version_number

ADMIN = "admin-token-for-version-tests"
A = {"Authorization": f"Bearer {ADMIN}"}

GOOD = [(1, 1), (2, 2), ("2", 2), ("latest", "latest"), ("champion", "champion"), (999_999_999, 999_999_999)]
#: each was accepted as a version before (int(), pydantic's lax int, YAML 1.1 integers)
BAD = [True, False, " 1 ", "1 ", "+1", "-1", "0", 0, "01", "1_0", "١", "٢", "１", "1.0", 1.0, "1e0", "0x1",
       "Latest", "LATEST", "", "1\n", 10**9, "9" * 5000, None, [1], {"v": 1}]


@pytest.mark.parametrize("value, expected", GOOD)
def test_the_parser_accepts_numbers_latest_and_champion(value, expected):
    assert parse_version(value) == expected


@pytest.mark.parametrize("value", BAD)
def test_the_parser_refuses_everything_else_naming_the_field(value):
    with pytest.raises(UsageError) as info:
        parse_version(value, what="body.version")
    assert info.value.message.startswith("body.version: invalid version")
    assert "'latest' or 'champion'" in info.value.message and len(info.value.message) < 300
    with pytest.raises(UsageError):
        parse_version_number(value)


def test_aliases_are_not_numbers():
    for alias in ("latest", "champion"):
        with pytest.raises(UsageError):
            parse_version_number(alias)


@pytest.fixture
def world(skiff_env):
    settings = load_settings()
    reg = ModelRegistry.from_settings(settings)
    model = DummyClassifier().fit([[0], [1]], [0, 1])
    for _ in range(2):
        reg.register("churn", model, {"gate": {"promote": True, "reason": "ok"}})
    envs = skiff_env / "infra/environments"
    (envs / "prod/models").mkdir(parents=True)
    (envs / "prod/environment.yaml").write_text("name: prod\nnamespace: skiff\ningress_domain: example.com\n")
    app = create_app(settings, tokens=TokenSet.of(admin=[hash_token(ADMIN)]), environments=envs)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, reg, envs


PATH_BAD = [" 1 ", "+1", "01", "1_0", "١", "1.0", "true", "Latest", "0", "1000000000"]


def test_api_path_and_bodies_use_the_strict_rule(world):
    client, reg, envs = world
    assert client.get("/api/v1/models/churn/versions/2", headers=A).json()["version"] == 2
    for v in PATH_BAD:
        resp = client.get(f"/api/v1/models/churn/versions/{v}", headers=A)
        assert resp.status_code == 400, (v, resp.text)
        assert resp.json()["error"] == "UsageError" and "invalid version" in resp.json()["message"]
    for v in [True, " 1 ", "1_0", "١", "01", 1.5, "1.0", "+1", 0]:
        for url, body in (("/api/v1/models/churn/champion", {"version": v, "reason": "x"}),
                          ("/api/v1/environments/prod/deployments/churn/promote", {"version": v})):
            resp = client.post(url, json=body, headers=A)
            assert resp.status_code == 422, (url, v, resp.text)
            assert "body.version" in resp.json()["message"] and "invalid version" in resp.json()["message"]
    assert reg.champion_version("churn") is None
    assert not (envs / "prod/models/churn.yaml").exists()
    resp = client.post("/api/v1/environments/prod/deployments/churn/promote", json={"version": "2"}, headers=A)
    assert resp.status_code == 200 and resp.json()["version"] == 2
    # JSON Schema's integer includes 1.0, as the document says
    resp = client.post("/api/v1/models/churn/champion", json={"version": 1.0, "reason": "json"}, headers=A)
    assert resp.status_code == 200 and reg.champion_version("churn") == 1


@pytest.mark.parametrize("argv", [
    ["models", "show", "churn", "{v}"],
    ["models", "set-champion", "churn", "{v}"],
    ["promote", "churn", "--env", "prod", "--version", "{v}"],
    ["render", "isvc", "churn", "--env", "prod", "--version", "{v}"],
])
def test_cli_commands_use_the_strict_rule(world, capsys, argv):
    _, reg, envs = world
    for v in [" 1 ", "+1", "01", "1_0", "١", "true", "1.0"]:
        code = main([a.format(v=v) for a in argv] + (["--environments", str(envs)]
                                                     if argv[0] in ("promote", "render") else []))
        err = " ".join(capsys.readouterr().err.split())
        assert code == 2 and "invalid version" in err, (argv, v, err)
    assert reg.champion_version("churn") is None
    assert not (envs / "prod/models/churn.yaml").exists()


@pytest.mark.parametrize("scalar", ["true", "1_0", "01", "0x1", "'١'", "' 1 '", "1.0", "0", "'+1'"])
def test_gitops_files_use_the_strict_rule(world, scalar):
    _, _, envs = world
    path = envs / "prod/models/churn.yaml"
    path.write_text(f"name: churn\nversion: {scalar}\n")
    with pytest.raises(ConfigError) as info:
        Environments(envs).deployment("prod", "churn")
    assert "version" in info.value.message and "invalid version" in info.value.message
    path.write_text("name: churn\nversion: 2\ncanary: {version: 1_0, percent: 5}\n")
    with pytest.raises(ConfigError, match="canary.version"):
        Environments(envs).deployment("prod", "churn")
    path.write_text("name: churn\nversion: 2\n")
    assert Environments(envs).deployment("prod", "churn").version == 2
