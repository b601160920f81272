import json
import multiprocessing as mp

import pytest

from skiff.cli import main
from skiff.errors import NotFoundError, UsageError
from skiff.registry import ModelRegistry, VersionMetadata
from skiff.storage import Store


def _reg(path) -> ModelRegistry:
    return ModelRegistry(Store(str(path)))


def _register_one(root: str, tag: int) -> int:
    return _reg(root).register("churn", {"tag": tag}, {"estimator": "x"}).version


def test_register_read_and_immutable_files(tmp_path):
    reg = _reg(tmp_path)
    report = tmp_path / "r.html"
    report.write_text("<html></html>")
    mv = reg.register("churn", {"w": [1, 2]}, {"metrics": {"roc_auc": 0.84}, "estimator": "lr"},
                      files={"report.html": report})
    assert mv.version == 1 and not mv.champion
    assert reg.load_model("churn", 1) == {"w": [1, 2]}
    assert set(mv.metadata.files) == {"model.joblib", "metadata.json", "MODEL_CARD.md", "report.html"}
    assert mv.metadata.code_version["skiff"]
    card = (tmp_path / "churn" / "1" / "MODEL_CARD.md").read_text()
    assert "roc_auc | 0.8400" in card
    assert reg.register("churn", {"w": 3}, {}).version == 2
    assert reg.get("churn").version == 2  # no champion: latest
    reg.set_champion("churn", 1, "first gate")
    assert reg.get("churn").version == 1 and reg.get("churn", "latest").version == 2
    assert [h["version"] for h in reg.champion_history("churn")] == [1]


def test_failed_registration_leaves_nothing(tmp_path):
    reg = _reg(tmp_path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError):
        reg.register("churn", Unpicklable(), {})
    assert reg.version_numbers("churn") == []
    # no version and no staging folder; only the (hidden) lock file of the model's writers may remain
    assert [p.name for p in (tmp_path / "churn").iterdir() if not p.name.endswith(".lock")] == []


def test_concurrent_registrations_get_distinct_versions(tmp_path):
    with mp.get_context("spawn").Pool(4) as pool:
        versions = pool.starmap(_register_one, [(str(tmp_path), i) for i in range(8)])
    assert sorted(versions) == list(range(1, 9))
    reg = _reg(tmp_path)
    tags = sorted(reg.load_model("churn", v)["tag"] for v in versions)
    assert tags == list(range(8))


def test_errors(tmp_path):
    reg = _reg(tmp_path)
    with pytest.raises(NotFoundError, match="no versions"):
        reg.get("nope")
    reg.register("m", 1, {})
    with pytest.raises(NotFoundError, match="no version 7"):
        reg.get("m", 7)
    with pytest.raises(NotFoundError, match="no champion"):
        reg.get("m", "champion")
    with pytest.raises(UsageError):
        reg.get("m", "abc")
    with pytest.raises(UsageError):
        reg.register("bad name", 1, {})
    with pytest.raises(UsageError):
        reg.register("m", 1, {}, files={"../x": tmp_path})
    with pytest.raises(Exception, match="extra"):
        VersionMetadata.model_validate({"name": "m", "bogus": 1})


def test_models_cli(skiff_env, capsys):
    reg = ModelRegistry(Store(str(skiff_env / ".skiff" / "models")))
    reg.register("churn", 1, {"metrics": {"roc_auc": 0.8}, "estimator": "lr"})
    assert main(["models", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [{"name": "churn", "version": 1, "champion": False, "created_at": rows[0]["created_at"],
                     "estimator": "lr", "metrics": {"roc_auc": 0.8}}]
    assert main(["models", "set-champion", "churn", "1", "--reason", "ok"]) == 0
    capsys.readouterr()
    assert main(["models", "show", "churn", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["champion"] is True
    assert main(["models", "show", "churn", "9"]) == 2
    assert "no version 9" in capsys.readouterr().err
