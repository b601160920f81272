"""Every YAML skiff reads from users refuses anchors and aliases (the alias bomb) and reports errors in
one line naming file:line:column, without quoting the file."""

from __future__ import annotations

import os
import time
import tracemalloc
from pathlib import Path

import pytest

from serving.deploy.gitops import Environments
from skiff.cli import main
from skiff.config import load_settings
from skiff.errors import ConfigError, SkiffError, SpecError, UsageError
from skiff.spec import load_spec
from skiff.yamlio import load_user_yaml


def _bomb(depth: int = 7) -> str:
    """A spec whose `allowed` list would expand to 9**depth strings: ~2.6 KB of text."""
    lines = ["name: bomb", "columns:", "  c:", "    type: category",
             '    l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, depth):
        lines.append(f"    l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]")
    lines.append(f"    allowed: [{','.join([f'*l{depth - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


def test_the_alias_bomb_is_refused_fast_with_small_memory(tmp_path):
    text = _bomb()
    assert 400 < len(text) < 4000
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(SpecError) as info:
        load_spec(path)
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 1.0 and peak < 2 * 1024 * 1024, (elapsed, peak)
    msg = info.value.message
    assert "\n" not in msg
    assert msg.startswith(f"{path}:5:9: ") and "anchor" in msg and "write the values out" in msg


@pytest.mark.parametrize("text, line", [
    ("a: &x 1\nb: *x\n", 1),            # anchor and alias
    ("base: {x: 1}\nother:\n  <<: *base\n", 3),  # a merge key is an alias
])
def test_anchors_aliases_and_merge_keys_are_refused(text, line):
    with pytest.raises(SpecError) as info:
        load_user_yaml(text, "dataset spec", origin="d.yaml")
    assert info.value.message.startswith(f"d.yaml:{line}:")


SECRET = "hunter2-very-secret-value"


@pytest.mark.parametrize("text", [
    f"password: '{SECRET}'\n  broken: [\n",
    f"token: {SECRET}\nx: [1, 2\n",
    f"key: !!python/object:os.system '{SECRET}'\n",
    f"name: x\nsecret: '{SECRET}\n",
])
def test_yaml_errors_are_one_line_and_never_quote_the_file(tmp_path, text):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    msg = info.value.message
    assert SECRET not in msg and SECRET not in str(info.value.detail)
    assert "\n" not in msg
    assert msg.startswith(f"{path}:") and msg.split(":")[1].isdigit() and msg.split(":")[2].isdigit()
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no traceback quotes it either


def test_settings_file_refuses_aliases(skiff_env):
    (skiff_env / "skiff.yaml").write_text("root: &r /tmp/skiff\nlake: *r\n")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.message.startswith("skiff.yaml:1:7: settings file uses an anchor")


def test_environment_files_refuse_aliases_and_duplicate_keys_without_quoting(tmp_path):
    env = tmp_path / "prod"
    (env / "models").mkdir(parents=True)
    (env / "environment.yaml").write_text("name: prod\nnamespace: skiff\ningress_domain: example.com\n")
    model = env / "models" / "churn.yaml"
    model.write_text(_bomb().replace("name: bomb", "name: churn\nversion: 1"))
    with pytest.raises(ConfigError) as info:
        Environments(tmp_path).deployment("prod", "churn")
    assert "anchor" in info.value.message and "\n" not in info.value.message
    model.write_text(f"name: churn\nversion: 1\nversion: 2\nreason: {SECRET}\n")
    with pytest.raises(ConfigError) as info:
        Environments(tmp_path).deployment("prod", "churn")
    assert info.value.message == f"{model}:3:1: environment file: a key appears twice in one mapping; fix the file " \
                                 "at that position"


def test_rollout_policy_file_refuses_aliases(skiff_env, capsys):
    policy = skiff_env / "policy.yaml"
    policy.write_text("steps: &s [10, 50]\nmin_requests: 5\nother: *s\n")
    code = main(["rollout", "start", "churn", "--local", "--canary-version", "2", "--policy", str(policy)])
    err = capsys.readouterr().err
    assert code == 2 and "policy.yaml:1:8: rollout policy file uses an anchor" in " ".join(err.split())


def test_every_user_yaml_loader_goes_through_yamlio():
    """No module reads YAML with PyYAML's loaders directly; ruamel only after load_user_yaml checked the text."""
    from tests.conftest import REPO

    offenders = []
    for folder in ("skiff", "components", "serving", "pipelines"):
        for dirpath, _, files in os.walk(REPO / folder):
            for f in files:
                if not f.endswith(".py") or f == "yamlio.py":
                    continue
                text = Path(dirpath, f).read_text(encoding="utf-8")
                if "yaml.safe_load(" in text or "yaml.load(" in text:
                    offenders.append(os.path.join(dirpath, f))
    # serving/deploy/isvc.py reads back manifests skiff rendered itself (tests), not a user's file
    assert [o for o in offenders if not o.endswith("serving/deploy/isvc.py")] == []


def test_errors_are_skiff_errors_of_the_callers_class():
    for cls in (SpecError, ConfigError, UsageError):
        with pytest.raises(cls):
            load_user_yaml("a: [", "x", error=cls)
    assert issubclass(SpecError, SkiffError)
