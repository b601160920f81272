"""KFP component: stop a run whose validation gate said no, with the reason as the run's error."""

from kfp import dsl
from kfp.dsl import Artifact, Input

from components._image import BASE_IMAGE

__all__ = ["validation_blocked"]


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def validation_blocked(statistics: Input[Artifact], blocking: int, run_id: str = "", model_name: str = "",
                       tracking_uri: str = ""):
    """Fail the run: the partition has blocking anomalies (listed in the statistics' metadata); the MLflow
    run is marked failed at this step with the same reason (``tracking_uri`` as the register step's)."""
    problems = statistics.metadata.get("blocking") or []
    detail = "; ".join(problems[:10]) or "see the validation report"
    reason = (f"validation gate failed for {statistics.metadata.get('dataset')} "
              f"ingest_date={statistics.metadata.get('ingest_date')}: {blocking} blocking anomalies: {detail}")
    from skiff.tracking.runs import track_failure

    track_failure(tracking_uri, run_id=run_id, pipeline="tabular",
                  model_name=model_name or str(statistics.metadata.get("dataset")), step="validation-blocked",
                  reason=reason, tags={"skiff.validation_status": str(statistics.metadata.get("status") or "")})
    raise RuntimeError(reason)
