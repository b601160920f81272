"""A validated partition's result: the record the validate step writes and everyone else reads.

The validate step (``components/validate``) publishes one folder per partition in the lake::

    validation/<dataset>/ingest_date=D/   stats.pb  schema.pbtxt  anomalies.pbtxt  anomalies.json
                                          report.html  result.json

``result.json`` is a :class:`ValidationResult`. The gate is defined here once: an anomaly of severity
``error`` is blocking, and a partition with a blocking anomaly has failed (:func:`gate_status`). The
API's monitoring routes, ``skiff validate`` and the pipeline summary read results with
:func:`read_result`, which also names the partition's output files in the lake.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from skiff.errors import NotFoundError, StorageError
from skiff.lake import Lake

__all__ = [
    "Anomaly",
    "Drift",
    "ValidationResult",
    "Severity",
    "GateStatus",
    "RESULT_FILE",
    "REPORT_FILE",
    "gate_status",
    "result_from_doc",
    "validation_parts",
    "output_uris",
    "validated_dates",
    "read_result",
]

Severity = Literal["error", "warning"]
GateStatus = Literal["passed", "failed"]
#: The severity that blocks: a partition with one such anomaly fails the gate.
BLOCKING: Severity = "error"
RESULT_FILE = "result.json"
REPORT_FILE = "report.html"
_PARTITION_PREFIX = "ingest_date="


class Anomaly(BaseModel):
    """One anomaly reason of one feature (``<dataset>`` for the partition as a whole)."""

    model_config = ConfigDict(extra="forbid")

    feature: str
    anomaly: str = Field(description="TFDV's anomaly type, e.g. ENUM_TYPE_UNEXPECTED_STRING_VALUES.")
    short: str = Field(default="", description="TFDV's short description.")
    description: str
    severity: Severity

    @property
    def is_blocking(self) -> bool:
        return self.severity == BLOCKING


def gate_status(anomalies: Iterable[Anomaly]) -> GateStatus:
    """The gate's verdict on a partition: failed when any anomaly blocks."""
    return "failed" if any(a.is_blocking for a in anomalies) else "passed"


class Drift(BaseModel):
    """A feature's distance to the previous partition."""

    model_config = ConfigDict(extra="forbid")

    measure: str = Field(description="jensen_shannon_divergence or l_infinity.")
    value: float
    threshold: float
    drifted: bool


class ValidationResult(BaseModel):
    """The outcome of validating one partition, with the lake URIs of its outputs."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    date: str
    previous_date: str | None = None
    status: GateStatus
    num_examples: int
    schema_inferred: bool
    schema_source: str | None = None
    runs: list[dict[str, Any]] = Field(
        default_factory=list,
        description="The runs validated (ingest_date, run_id, spec_hash, current_spec): skiff.lake's selection, "
        "the same the features step reads.",
    )
    anomalies: list[Anomaly] = Field(default_factory=list)
    drift: dict[str, Drift] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    output_uri: str | None = None
    report_uri: str | None = None
    statistics_uri: str | None = None
    anomalies_uri: str | None = None
    schema_uri: str | None = None
    result_uri: str | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def blocking(self) -> list[Anomaly]:
        return [a for a in self.anomalies if a.is_blocking]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def warnings(self) -> list[Anomaly]:
        return [a for a in self.anomalies if not a.is_blocking]

    @property
    def drifted(self) -> list[str]:
        return sorted(f for f, d in self.drift.items() if d.drifted)


def result_from_doc(doc: Mapping[str, Any], **uris: str | None) -> ValidationResult:
    """A result document (``result.json``, or the TFDV runner's) as a :class:`ValidationResult`; keys the
    model does not hold (the runner's file list) are left out. Raises ``ValueError`` when it does not fit."""
    fields = {k: doc[k] for k in ValidationResult.model_fields if k in doc}
    return ValidationResult.model_validate({**fields, **uris})


def validation_parts(dataset: str, date: str | None = None) -> tuple[str, ...]:
    """Lake path parts of a dataset's validation folder, or of one partition's outputs."""
    parts: tuple[str, ...] = ("validation", dataset)
    return parts + (f"{_PARTITION_PREFIX}{date}",) if date else parts


def output_uris(lake: Lake, dataset: str, date: str) -> dict[str, str]:
    """The lake URIs of a validated partition's outputs, by :class:`ValidationResult` field."""
    parts = validation_parts(dataset, date)
    store = lake.store
    return {"output_uri": store.uri(*parts), "report_uri": store.uri(*parts, REPORT_FILE),
            "statistics_uri": store.uri(*parts, "stats.pb"), "anomalies_uri": store.uri(*parts, "anomalies.json"),
            "result_uri": store.uri(*parts, RESULT_FILE)}


def validated_dates(lake: Lake, dataset: str) -> list[str]:
    """The partitions of ``dataset`` that have a validation result, ascending."""
    names = lake.store.listdir(*validation_parts(dataset))
    dates = (n[len(_PARTITION_PREFIX):] for n in names if n.startswith(_PARTITION_PREFIX))
    return sorted(d for d in dates if lake.store.exists(*validation_parts(dataset, d), RESULT_FILE))


def read_result(lake: Lake, dataset: str, date: str) -> ValidationResult:
    """The validation result of one partition, its output URIs filled in from the lake.

    Raises :class:`NotFoundError` when the partition was never validated and :class:`StorageError` when
    its ``result.json`` is not a result skiff can read.
    """
    parts = validation_parts(dataset, date)
    if not lake.store.exists(*parts, RESULT_FILE):
        raise NotFoundError(f"dataset {dataset!r} has no validation result for {date} "
                            f"({lake.store.uri(*parts, RESULT_FILE)}); run `skiff validate` first",
                            dataset=dataset, date=date)
    try:
        doc = lake.store.read_json(*parts, RESULT_FILE)
        uris = {k: v for k, v in output_uris(lake, dataset, date).items() if k not in doc}
        return result_from_doc(doc, **uris)
    except ValueError as e:
        raise StorageError(f"{lake.store.uri(*parts, RESULT_FILE)}: not a validation result skiff can read: {e}"
                           ) from e
