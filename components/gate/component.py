"""KFP component: stop a run whose validation gate said no, with the reason as the run's error."""

from kfp import dsl
from kfp.dsl import Artifact, Input

from components._image import BASE_IMAGE

__all__ = ["validation_blocked"]


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def validation_blocked(statistics: Input[Artifact], blocking: int):
    """Fail the run: the partition has blocking anomalies (listed in the statistics' metadata)."""
    problems = statistics.metadata.get("blocking") or []
    detail = "; ".join(problems[:10]) or "see the validation report"
    raise RuntimeError(
        f"validation gate failed for {statistics.metadata.get('dataset')} "
        f"ingest_date={statistics.metadata.get('ingest_date')}: {blocking} blocking anomalies: {detail}"
    )
