"""The image pipeline's compiled IR and its definition: a GPU for the train task only, with the GPU pool's
toleration and node selector; caching off where the input lives outside KFP; arguments and preflight errors."""

import pytest
import yaml

from pipelines.definitions import get_pipeline
from pipelines.image import GPU_NODE_SELECTOR, GPU_TOLERATION
from pipelines.runner import compile_pipeline
from skiff.config import Settings
from skiff.errors import UsageError
from skiff.spec import DatasetSpec


@pytest.fixture(scope="module")
def ir(tmp_path_factory):
    path = compile_pipeline("image", tmp_path_factory.mktemp("ir") / "image.yaml")
    return list(yaml.safe_load_all(path.read_text()))


def _all_tasks(spec):
    """Every task of the IR, the ones inside conditions too: name -> task."""
    out, dags = {}, [spec["root"]["dag"]]
    while dags:
        for name, task in dags.pop()["tasks"].items():
            comp = spec["components"][task["componentRef"]["name"]]
            if "dag" in comp:
                dags.append(comp["dag"])
            else:
                out[name] = task
    return out


def test_only_the_train_task_asks_for_a_gpu_on_the_gpu_pool(ir):
    spec, platform = ir
    tasks = _all_tasks(spec)
    assert set(tasks) == {"ingest-images-op", "train-image-op", "evaluate-image-op", "register-image-op",
                          "track-run-op", "train-image-tfjob-op", "evaluate-image-op-2", "register-image-op-2",
                          "track-run-op-2", "track-final-status-op"}
    executors = spec["deploymentSpec"]["executors"]
    for name, task in tasks.items():
        container = executors[task["componentRef"]["name"].replace("comp-", "exec-")]["container"]
        accelerator = container.get("resources", {}).get("accelerator")
        if name == "train-image-op":
            assert accelerator["resourceType"] == "nvidia.com/gpu" and accelerator["resourceCount"] == "1"
            assert "skiff-gpu" in container["image"]
        else:  # the TFJob launcher only waits: its workers hold the GPUs
            assert accelerator is None
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    train = k8s["exec-train-image-op"]
    assert train["nodeSelector"]["labels"] == {GPU_NODE_SELECTOR[0]: GPU_NODE_SELECTOR[1]}
    assert train["tolerations"] == [GPU_TOLERATION]
    assert "tolerations" not in k8s["exec-ingest-images-op"] and "nodeSelector" not in k8s["exec-evaluate-image-op"]
    assert "tolerations" not in k8s["exec-train-image-tfjob-op"]
    assert tasks["ingest-images-op"]["cachingOptions"] == {}


def test_workers_choose_between_the_step_and_the_tfjob(ir):
    spec, _ = ir
    # the whole body runs inside the exit handler, its exit task (the run's final status) after it
    assert set(spec["root"]["dag"]["tasks"]) == {"exit-handler-1", "track-final-status-op"}
    assert set(spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]) == {"ingest-images-op",
                                                                              "condition-branches-2"}
    branches = spec["components"]["comp-condition-branches-2"]["dag"]["tasks"]
    by_condition = {t["triggerPolicy"]["condition"]: set(spec["components"][t["componentRef"]["name"]]["dag"]["tasks"])
                    for t in branches.values()}
    one = "int(inputs.parameter_values['pipelinechannel--workers']) == 1"
    assert by_condition == {one: {"train-image-op", "evaluate-image-op", "register-image-op", "track-run-op"},
                            f"!({one})": {"train-image-tfjob-op", "evaluate-image-op-2", "register-image-op-2",
                                          "track-run-op-2"}}


def test_the_gpu_pool_names_are_the_terraform_modules():
    from tests.conftest import REPO

    for cloud in ("aws-eks", "azure-aks"):
        text = (REPO / "terraform" / "modules" / cloud / "gpu.tf").read_text()
        assert f'key    = "{GPU_TOLERATION["key"]}"' in text and f'value  = "{GPU_TOLERATION["value"]}"' in text
        assert f'effect = "{GPU_TOLERATION["effect"]}"' in text
    assert '"skiff.io/node-pool" = "gpu"' in (REPO / "terraform" / "modules" / "azure-aks" / "aks.tf").read_text()


def _spec():
    return DatasetSpec.model_validate({"name": "shapes", "entity_key": "path", "columns": {"path": {"type": "string"},
                                                                     "label": {"type": "string"}}})


def test_arguments_and_preflight(tmp_path):
    definition = get_pipeline("image")
    settings = Settings(root=str(tmp_path / "root"))
    (tmp_path / "imgs").mkdir()
    args = definition.arguments(_spec(), {"data": str(tmp_path / "imgs")}, settings, local=True)
    assert args["dataset"] == args["model_name"] == "shapes" and args["run_id"].startswith("run-")
    assert args["lake_uri"].startswith("/") and args["data"] == str(tmp_path / "imgs")
    with pytest.raises(UsageError, match="needs --param data"):
        definition.arguments(_spec(), {}, settings, local=True)
    with pytest.raises(UsageError, match="image data not found"):
        definition.arguments(_spec(), {"data": str(tmp_path / "nope")}, settings, local=True)
    with pytest.raises(UsageError, match="train_config"):
        definition.arguments(_spec(), {"data": str(tmp_path / "imgs"), "train_config": {"backbone": "VGG99"}},
                             settings, local=True)
    with pytest.raises(UsageError, match="needs a cluster: submit with --host"):
        definition.arguments(_spec(), {"data": str(tmp_path / "imgs"), "workers": 3}, settings, local=True)
    with pytest.raises(UsageError, match="'workers' must be an integer >= 1"):
        definition.arguments(_spec(), {"data": "s3://b/imgs", "workers": 0}, settings, local=False)
    remote = definition.arguments(_spec(), {"data": "s3://b/imgs", "workers": 4, "gpus_per_worker": 2}, settings,
                                  local=False)
    assert remote["workers"] == 4 and remote["gpus_per_worker"] == 2 and remote["artifacts_uri"]
