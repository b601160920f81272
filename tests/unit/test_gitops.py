"""GitOps environment files and ``skiff promote``: validated against the registry, comments kept, history
recorded, rollbacks from the file's own history, commits on request."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from serving.deploy.gitops import Environments, ModelDeployment
from skiff.cli import main
from skiff.config import load_settings
from skiff.errors import ConfigError, UsageError
from skiff.registry import ModelRegistry

ENV_YAML = """\
# prod environment: owned by the platform team
name: {name}
namespace: skiff   # the IRSA namespace
registry: s3://bucket/skiff/models
ingress_domain: models.example.com
"""

MODEL_YAML = """\
# churn in {env}: owned by the churn team
name: churn
version: 1   # first release
min_replicas: 2  # keep two warm
history:
  - version: 1
    action: promote
    reason: first
    at: "2026-01-01T00:00:00+00:00"
"""


@pytest.fixture
def world(skiff_env):
    """A registry with versions 1–4 of churn (3 failed its gate) and three environments."""
    reg = ModelRegistry.from_settings(load_settings())
    reg.register("churn", {"w": 1}, {"gate": {"promote": True, "reason": "first model"}})
    reg.register("churn", {"w": 2}, {"gate": {"promote": True, "reason": "beat v1 on roc_auc"}})
    reg.register("churn", {"w": 3}, {"gate": {"promote": False, "reason": "roc_auc 0.71 < champion 0.80"}})
    reg.register("churn", {"w": 4}, {"gate": {"promote": True}})
    root = skiff_env / "infra/environments"
    for env in ("dev", "staging", "prod"):
        (root / env / "models").mkdir(parents=True)
        (root / env / "environment.yaml").write_text(ENV_YAML.format(name=env))
    (root / "prod/models/churn.yaml").write_text(MODEL_YAML.format(env="prod"))
    return reg, Environments(root)


def _file(envs: Environments, env: str = "prod") -> str:
    return envs.model_path(env, "churn").read_text()


def test_promote_edits_the_file_and_keeps_its_comments(world, capsys):
    reg, envs = world
    assert main(["promote", "churn", "--version", "2", "--env", "prod", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["version"], out["previous"], out["changed"], out["reason"]) == (2, 1, True, "beat v1 on roc_auc")
    text = _file(envs)
    for comment in ("# churn in prod: owned by the churn team", "# first release", "# keep two warm"):
        assert comment in text
    dep = envs.deployment("prod", "churn")
    assert dep.version == 2 and dep.min_replicas == 2
    assert [(h.version, h.previous, h.action) for h in dep.history] == [(1, None, "promote"), (2, 1, "promote")]
    # promoting what already runs changes nothing
    before = _file(envs)
    assert main(["promote", "churn", "--version", "2", "--env", "prod"]) == 0
    assert "nothing changed" in capsys.readouterr().out and _file(envs) == before


def test_unknown_version_is_exit_2_and_changes_nothing(world, capsys):
    _, envs = world
    before = _file(envs)
    assert main(["promote", "churn", "--version", "9", "--env", "prod"]) == 2
    assert "has no version 9" in capsys.readouterr().err
    assert main(["promote", "nope", "--version", "1", "--env", "prod"]) == 2
    assert main(["promote", "churn", "--version", "1", "--env", "qa"]) == 2
    assert "environment 'qa' not found" in capsys.readouterr().err
    assert _file(envs) == before


def test_failed_gate_needs_force_and_a_reason(world, capsys):
    _, envs = world
    before = _file(envs)
    assert main(["promote", "churn", "--version", "3", "--env", "prod"]) == 1
    err = capsys.readouterr().err
    assert "did not pass its gate" in err and "roc_auc 0.71 < champion 0.80" in err
    assert main(["promote", "churn", "--version", "3", "--env", "prod", "--force"]) == 2
    assert "--force needs --reason" in capsys.readouterr().err
    assert _file(envs) == before
    assert main(["promote", "churn", "--version", "3", "--env", "prod", "--force", "--reason",
                 "hotfix: v2 leaks PII"]) == 0
    last = envs.deployment("prod", "churn").history[-1]
    assert (last.version, last.forced, last.reason) == (3, True, "hotfix: v2 leaks PII")


def test_rollback_takes_the_previous_version_from_history(world, capsys):
    reg, envs = world
    envs.promote(reg, "prod", "churn", 2)
    envs.promote(reg, "prod", "churn", 4)
    assert main(["promote", "churn", "--rollback", "--env", "prod", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["version"], out["previous"], out["action"]) == (2, 4, "rollback")
    # again: walks further back, not forth
    assert main(["promote", "churn", "--rollback", "--env", "prod"]) == 0
    assert envs.deployment("prod", "churn").version == 1
    assert main(["promote", "churn", "--rollback", "--env", "prod"]) == 2
    assert "names no version before 1" in capsys.readouterr().err
    assert "# first release" in _file(envs)


def test_canary_entries_do_not_count_as_versions_that_ran(world):
    reg, envs = world
    envs.promote(reg, "prod", "churn", 2)
    envs.promote(reg, "prod", "churn", 4, canary_percent=0)
    assert envs.deployment("prod", "churn").canary.version == 4
    envs.finish_canary("prod", "churn", promoted=False, reason="canary worse: 5xx share")
    dep = envs.deployment("prod", "churn")
    assert dep.version == 2 and dep.canary is None
    assert dep.rollback_target() == 1  # not the rolled-back canary 4
    envs.promote(reg, "prod", "churn", 4, canary_percent=10)
    envs.finish_canary("prod", "churn", promoted=True, reason="passed every step")
    dep = envs.deployment("prod", "churn")
    assert dep.version == 4 and dep.rollback_target() == 2
    with pytest.raises(UsageError, match="already the stable version"):
        envs.promote(reg, "prod", "churn", 4, canary_percent=10)


def test_from_to_copies_the_stable_version_and_checks_the_gate(world, capsys):
    reg, envs = world
    envs.promote(reg, "staging", "churn", 4)
    assert main(["promote", "churn", "--from", "staging", "--to", "prod"]) == 0
    dep = envs.deployment("prod", "churn")
    assert dep.version == 4 and dep.history[-1].source == "staging" and dep.history[-1].action == "copy"
    envs.promote(reg, "staging", "churn", 3, force=True, reason="experiment")
    assert main(["promote", "churn", "--from", "staging", "--to", "prod"]) == 1  # v3 failed its gate
    assert main(["promote", "churn", "--from", "staging", "--to", "dev"]) == 1
    assert main(["promote", "churn", "--from", "staging"]) == 2
    assert main(["promote", "churn", "--from", "staging", "--to", "prod", "--force", "--reason", "ok"]) == 0
    assert envs.deployment("prod", "churn").version == 3
    # a new environment file is created with a header comment and a valid history
    assert main(["promote", "churn", "--from", "staging", "--to", "dev", "--force", "--reason", "try"]) == 0
    assert _file(envs, "dev").startswith("# What runs of model churn in dev.")


def test_commit_makes_one_git_commit_naming_model_version_env_and_reason(world, capsys, monkeypatch):
    reg, envs = world
    repo = envs.root.parent.parent
    for k, v in {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
                 "GIT_COMMITTER_EMAIL": "t@example.com"}.items():
        monkeypatch.setenv(k, v)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "add", "infra"], check=True)
    subprocess.run(["git", "-C", str(repo), "commit", "-qm", "init"], check=True)
    (repo / "unrelated.txt").write_text("not committed\n")
    subprocess.run(["git", "-C", str(repo), "add", "unrelated.txt"], check=True)
    assert main(["promote", "churn", "--version", "2", "--env", "prod", "--commit", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    log = subprocess.run(["git", "-C", str(repo), "log", "-1", "--format=%H%n%B", "--name-only"],
                         capture_output=True, text=True, check=True).stdout
    assert log.startswith(out["commit"])
    assert "prod: churn version 2 (promote)" in log and "Reason: beat v1 on roc_auc" in log
    assert "infra/environments/prod/models/churn.yaml" in log and "unrelated.txt" not in log
    assert main(["promote", "churn", "--rollback", "--env", "prod", "--commit"]) == 0
    subj = subprocess.run(["git", "-C", str(repo), "log", "-1", "--format=%s"], capture_output=True, text=True).stdout
    assert subj.strip() == "prod: churn version 1 (rollback)"


def test_bad_files_are_refused_with_the_field_named(world):
    reg, envs = world
    path = envs.model_path("prod", "churn")
    path.write_text(path.read_text().replace("min_replicas: 2", "min_replicas: 2\nreplicas: 3"))
    with pytest.raises(ConfigError, match=r"churn.yaml: replicas: Extra inputs are not permitted"):
        envs.deployment("prod", "churn")
    path.write_text("name: other\nversion: 1\n")
    with pytest.raises(ConfigError, match="differs from its file name"):
        envs.deployment("prod", "churn")
    (envs.root / "dev/environment.yaml").write_text("name: dev\nnamespace: Bad_NS\ningress_domain: x\n")
    with pytest.raises(ConfigError, match="namespace"):
        envs.environment("dev")
    assert ModelDeployment(name="m", version=1).served_version == 1
    assert yaml.safe_load(_file(envs)) == {"name": "other", "version": 1}


def test_the_deployment_to_render_takes_the_asked_version_or_canary_over_the_file(world):
    _, envs = world
    assert envs.deployment_to_render("prod", "churn").version == 1
    dep = envs.deployment_to_render("prod", "churn", canary_version=2)
    assert (dep.version, dep.canary.version, dep.canary.percent) == (1, 2, 10)
    assert envs.deployment_to_render("prod", "churn", canary_version=2, canary_percent=30).canary.percent == 30
    assert envs.deployment_to_render("dev", "churn", version=4).version == 4  # no file: the version given
    with pytest.raises(UsageError, match="has no model file in 'dev': give --version"):
        envs.deployment_to_render("dev", "churn")
    with pytest.raises(UsageError, match="--canary-percent needs a canary"):
        envs.deployment_to_render("prod", "churn", canary_percent=20)


def test_a_rollout_outcome_is_recorded_only_for_the_canary_the_file_names(world):
    reg, envs = world
    envs.promote(reg, "prod", "churn", 2, canary_percent=0)
    # a rollout of another version, or in an environment without the model's file, leaves Git alone
    assert envs.record_rollout_outcome("prod", "churn", canary_version="4", promoted=True, reason="x") is None
    assert envs.record_rollout_outcome("dev", "churn", canary_version="2", promoted=True, reason="x") is None
    assert envs.deployment("prod", "churn").canary.version == 2
    res = envs.record_rollout_outcome("prod", "churn", canary_version="2", promoted=True, reason="canary healthy")
    assert res is not None and res.action == "canary-promoted"
    dep = envs.deployment("prod", "churn")
    assert (dep.version, dep.canary) == (2, None)
