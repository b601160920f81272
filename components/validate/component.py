"""KFP component: the validation step (thin wrapper over components.validate.logic).

Locally (kfp.local, the project environment) logic.py starts the TFDV interpreter of ``.venv-tfdv``;
in the cluster the TFDV image runs the same logic and its own TFDV environment
(``SKIFF_TFDV_PYTHON`` is set in the image). Downstream steps gate on ``passed`` with ``dsl.If``.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Output

from components._image import TFDV_IMAGE

__all__ = ["validate"]


@dsl.component(base_image=TFDV_IMAGE, install_kfp_package=False)
def validate(
    ingested: Input[Dataset],
    spec: str,
    lake_uri: str,
    report: Output[HTML],
    statistics: Output[Artifact],
    drift_threshold: float = 0.1,
    feature_thresholds: dict = {},  # noqa: B006 - a KFP parameter default, never mutated
    warn_only: bool = False,
    new_columns: str = "warning",
    domain_tolerance: float = 0.01,
    schema_uri: str = "",
    run_id: str = "",
) -> NamedTuple("ValidateOutputs", [("passed", bool), ("blocking", int), ("warnings", int)]):
    """Validate the ingested partition with TFDV (its runs of this spec, or the run ``run_id`` alone);
    write the HTML report and the statistics."""
    import shutil
    from collections import namedtuple

    import fsspec

    from components.validate.logic import ValidateConfig, validate_partition
    from skiff.config import load_settings
    from skiff.lake import Lake
    from skiff.spec_text import spec_from_text
    from skiff.storage import Store

    settings = load_settings()
    s = spec_from_text(spec)
    date = ingested.metadata.get("ingest_date")
    config = ValidateConfig(
        drift_threshold=drift_threshold if drift_threshold > 0 else None,
        feature_thresholds=feature_thresholds, warn_only=warn_only, new_columns=new_columns,
        domain_tolerance=domain_tolerance,
    )
    lake = Lake(Store(lake_uri, settings.storage_options))
    result = validate_partition(
        s, lake, date=date, config=config, schema=schema_uri or None, tfdv_python=settings.tfdv_python,
        storage_options=settings.storage_options, threads=settings.max_threads, run_id=run_id or None,
    )
    for uri, artifact in ((result.report_uri, report), (result.statistics_uri, statistics)):
        with fsspec.open(uri, "rb", **settings.storage_options) as src, open(artifact.path, "wb") as dst:
            shutil.copyfileobj(src, dst)
    common = {"dataset": s.name, "ingest_date": result.date, "status": result.status,
              "ingest_run": ingested.metadata.get("run_id")}
    report.metadata.update({**common, "uri": result.report_uri})
    statistics.metadata.update({
        **common, "uri": result.statistics_uri, "format": "tfdv.DatasetFeatureStatisticsList (binary)",
        "previous_date": result.previous_date, "drifted": result.drifted,
        "blocking": [f"{a.feature}: {a.anomaly}" for a in result.blocking],
        "runs": result.runs,
    })
    outputs = namedtuple("ValidateOutputs", ["passed", "blocking", "warnings"])
    return outputs(result.passed, len(result.blocking), len(result.warnings))
