"""The image ingestion step as a KFP v2 component: a thin wrapper over
:func:`components.ingest_images.logic.ingest_images`.

It writes the run's manifest JSON to the ``manifest`` artifact and puts the dataset, run id, partition URI,
counts, quarantine reasons and class balance in the artifact's metadata. Caching should be off for this
task (``task.set_caching_options(False)``): its input lives outside KFP.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Output

from components._image import BASE_IMAGE

__all__ = ["ingest_images_op"]


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def ingest_images_op(
    dataset: str,
    data: str,
    lake_uri: str,
    run_id: str,
    manifest: Output[Dataset],
    config: dict = {},  # noqa: B006 - KFP needs a literal default; it is never mutated
    ingest_date: str = "",
    storage_options: dict = {},  # noqa: B006
) -> NamedTuple("IngestImagesOutputs", [("status", str), ("run_id", str), ("partition_uri", str)]):
    """Check and publish the images of ``data`` (a folder, a manifest file or a URI) as a run of ``dataset``."""
    from collections import namedtuple

    from components.ingest_images.logic import IngestImagesConfig, ingest_images
    from skiff.lake import Lake
    from skiff.storage import Store

    result = ingest_images(dataset, data, Lake(Store(lake_uri, storage_options or None)), run_id=run_id,
                           ingest_date=ingest_date or None, config=IngestImagesConfig.model_validate(config),
                           storage_options=storage_options or None)
    with open(manifest.path, "w") as f:
        f.write(result.manifest_json())
    manifest.metadata.update({
        "status": result.status, "dataset": result.dataset, "ingest_date": result.ingest_date,
        "run_id": result.run_id, "partition_uri": result.partition_uri, "layout": result.layout,
        "counts": result.counts, "quarantine_reasons": result.quarantine_reasons, "classes": result.classes,
        "imbalance": result.imbalance,
    })
    outputs = namedtuple("IngestImagesOutputs", ["status", "run_id", "partition_uri"])
    return outputs(result.status, result.run_id, result.partition_uri)
