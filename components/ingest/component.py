"""The ingest step as a KFP v2 component: a thin wrapper over :func:`components.ingest.logic.ingest`.

The function body imports what it needs (KFP lightweight components run the function on its own). It
writes the run's manifest JSON to the ``manifest`` artifact and puts the dataset, ingest date, run id,
partition URI and counts in the artifact's metadata. The outputs name the partition for later steps.
Caching should be off for this task (``task.set_caching_options(False)``): its input is outside KFP.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Output

from components._image import BASE_IMAGE

__all__ = ["ingest_op"]


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def ingest_op(
    spec: str,
    lake_uri: str,
    run_id: str,
    manifest: Output[Dataset],
    sources: list = [],  # noqa: B006 - KFP needs a literal default; it is never mutated
    ingest_date: str = "",
    storage_options: dict = {},  # noqa: B006
    read_run: str = "",
) -> NamedTuple("IngestOutputs", [("status", str), ("ingest_date", str), ("partition_uri", str)]):
    """Ingest a dataset (spec as a dict; ``sources`` overrides its sources) into the lake at ``lake_uri``.

    ``read_run`` pins a committed run instead: nothing is read or written, the outputs name that run
    (status ``pinned``; a :class:`~skiff.errors.NotFoundError` listing the runs when it does not exist).
    """
    from collections import namedtuple

    from components.ingest.logic import IngestResult, coerce_sources, ingest
    from skiff.lake import Lake
    from skiff.spec_text import spec_from_text
    from skiff.storage import Store

    parsed = spec_from_text(spec)
    lake = Lake(Store(lake_uri, storage_options or None))
    if read_run:
        ref = lake.select_runs(parsed.name, run_id=read_run).runs[0]
        found = lake.manifest(ref)
        result = IngestResult(status="pinned", dataset=parsed.name, run_id=ref.run_id, ingest_date=ref.date,
                              partition_uri=lake.store.uri(*ref.parts), manifest=found,
                              counts=found.counts.model_dump() if found.counts else {}, duration_s=0.0,
                              reason=f"run {ref.run_id} pinned by the pipeline parameter lake_run")
    else:
        result = ingest(
            parsed,
            lake,
            sources=coerce_sources(sources) if sources else None,
            run_id=run_id or None,
            ingest_date=ingest_date or None,
        )
    with open(manifest.path, "w") as f:
        f.write(result.manifest_json())
    manifest.metadata.update(
        {
            "status": result.status,
            "dataset": result.dataset,
            "ingest_date": result.ingest_date,
            "run_id": result.run_id,
            "partition_uri": result.partition_uri,
            "counts": result.counts,
            "quarantine_reasons": result.manifest.quarantine_reasons if result.manifest else {},
        }
    )
    outputs = namedtuple("IngestOutputs", ["status", "ingest_date", "partition_uri"])
    return outputs(result.status, result.ingest_date, result.partition_uri)
