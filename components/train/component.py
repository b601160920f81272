"""KFP component: the train step (a thin wrapper over components.train.logic)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components._image import BASE_IMAGE

__all__ = ["train"]


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def train(
    training_data: Input[Dataset],
    spec: str,
    config: dict,
    model: Output[Model],
    test_data: Output[Dataset],
    cv_table: Output[Artifact],
    search_table: Output[Artifact],
) -> NamedTuple("TrainOutputs", [("estimator", str), ("scoring", str), ("cv_score", float)]):
    """Train on a Parquet training set typed by ``spec``; ``config`` is a TrainConfig mapping.

    ``model`` is a folder (model.joblib, train.json, cv.csv[, search.csv]); ``test_data`` the held-out
    split as Parquet; ``cv_table``/``search_table`` CSV files (the search table holds the candidates of
    a search or of the automatic estimator choice, and only a header when there were none).
    """
    import math
    import shutil
    from collections import namedtuple

    import pandas as pd

    from components.train.logic import parse_config
    from components.train.logic import train as run_train
    from skiff.modeling import save_model
    from skiff.spec_text import spec_from_text

    dataset = spec_from_text(spec)
    cfg = parse_config(config)
    frame = pd.read_parquet(training_data.path)
    result = run_train(frame, dataset, cfg)

    info = {**result.metadata(), "config": cfg.model_dump(mode="json")}  # the config: experiment tracking logs it
    files = save_model(model.path, result.pipeline, info, result.cv_table, result.search_table)
    model.metadata.update(
        {
            "framework": "scikit-learn",
            "estimator": result.estimator,
            "problem_type": result.problem_type,
            "scoring": result.scoring,
            "cv_score": info["cv_score"],
            "threshold": result.threshold,
            "params": info["params"],
            "cv_means": info["cv_means"],
            "features": result.feature_columns,
            "dataset": dataset.name,
        }
    )
    result.test_df.to_parquet(test_data.path, index=False)
    test_data.metadata.update({"rows": len(result.test_df), "dataset": dataset.name})
    shutil.copyfile(files["cv"], cv_table.path)
    if "search" in files:
        shutil.copyfile(files["search"], search_table.path)
    else:
        pd.DataFrame(columns=["candidate", "estimator", "params"]).to_csv(search_table.path, index=False)
    score = result.cv_score if not math.isnan(result.cv_score) else -1.0
    outputs = namedtuple("TrainOutputs", ["estimator", "scoring", "cv_score"])
    return outputs(result.estimator, result.scoring, float(score))
