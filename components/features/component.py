"""KFP component: the features step (thin wrapper over components.features.logic)."""


from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components._image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def features(
    ingested: Input[Dataset],
    spec: str,
    lake_uri: str,
    feature_repo: str,
    feast_dir: str,
    training_data: Output[Dataset],
    feature_store_yaml: str = "feature_store.yaml",
    run_id: str = "",
) -> NamedTuple("FeaturesOutputs", [("feature_service", str), ("rows", int)]):
    """Apply the spec's Feast definitions, materialize online, write point-in-time training rows (from
    the lake's runs of this spec, or the run ``run_id`` alone)."""
    from collections import namedtuple

    from components.features.logic import run_features
    from skiff.lake import Lake
    from skiff.spec_text import spec_from_text
    from skiff.storage import Store

    s = spec_from_text(spec)
    result = run_features(s, Lake(Store(lake_uri)), feature_repo, feast_dir, feature_store_yaml,
                          training_out=training_data.path, run_id=run_id or None)
    training_data.metadata.update({
        "dataset": s.name, "feature_service": result.feature_service, "rows": result.rows,
        "partitions": result.partitions, "source_uri": result.source_uri,
        "ingest_run": ingested.metadata.get("run_id"), "runs": result.runs,
    })
    return namedtuple("FeaturesOutputs", ["feature_service", "rows"])(result.feature_service, result.rows)
