"""The TFDV half of skiff's validation step, run by the TFDV environment's interpreter.

TFDV's pins (pandas<2, pyarrow 10, protobuf<6) clash with the project environment, so the step is
split: :mod:`components.validate.logic` (project environment) resolves partitions, builds a request
and starts this script once per validation with the TFDV interpreter (``.venv-tfdv`` locally, the
image's TFDV environment in a cluster). This module imports only the standard library at module level
(the project environment imports it for :func:`classify` and :func:`render_report`); TFDV, pyarrow and
pandas are imported inside :func:`run`.

Usage::

    python tfdv_runner.py --request request.json

The request (JSON) names the partition's local Parquet files, the previous partition's statistics
(``stats.pb``) or files, the schema (an existing text proto, or where to write the inferred one), the
per-feature rules and drift thresholds, the severity policy and the output folder. The output folder
receives ``stats.pb`` (binary ``DatasetFeatureStatisticsList``), ``schema.pbtxt`` (the schema used),
``anomalies.pbtxt``, ``anomalies.json``, ``report.html`` (self-contained) and ``result.json``; the
result is printed on stdout as the last line too. On failure ``error.json`` says what went wrong
(``kind``: ``request``, ``input``, ``schema``, ``environment`` or ``internal``) and the exit code is
2 (request, input, schema), 3 (environment) or 1 (internal).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import html
import json
import math
import os
import sys
import traceback
from pathlib import Path
from typing import Any

__all__ = [
    "REQUEST_VERSION",
    "RunnerError",
    "classify",
    "render_report",
    "exact_counts",
    "run",
    "main",
]

REQUEST_VERSION = 1

#: The exit code of each failure kind; logic.py maps the kind to a skiff error.
EXIT_CODES = {"request": 2, "input": 2, "schema": 2, "environment": 3, "internal": 1}

#: Anomaly types for which values outside the domain may be tolerated up to a fraction.
DOMAIN_TYPE = "ENUM_TYPE_UNEXPECTED_STRING_VALUES"
#: Share of distinct among present values above which a text column is treated as an id in the report.
NEAR_UNIQUE = 0.9
#: The anomaly type of a partition without rows (always blocking).
EMPTY_TYPE = "DATASET_LOW_NUM_EXAMPLES"
#: Drift anomaly types (blocking unless warn-only).
DRIFT_MEASURES = {"JENSEN_SHANNON_DIVERGENCE": "jensen_shannon_divergence", "L_INFTY": "l_infinity"}


class RunnerError(Exception):
    """A failure with a kind that the caller maps to its own error class."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


# -- severity ---------------------------------------------------------------------------------------
def classify(
    anomaly_type: str,
    feature: str,
    policy: dict[str, Any],
    tolerated: bool = False,
) -> str:
    """The severity (``error`` or ``warning``) of one anomaly reason under a request's policy.

    ``policy`` holds ``blocking`` (types that always block), ``blocking_if_required`` (presence types
    that block for required features only), ``required`` (feature names) and ``warn_only``.
    ``tolerated`` marks out-of-domain values within the allowed fraction: a warning.
    """
    if policy.get("warn_only") or tolerated:
        return "warning"
    if anomaly_type in policy.get("blocking", ()):
        return "error"
    if anomaly_type in policy.get("blocking_if_required", ()) and feature in policy.get("required", ()):
        return "error"
    return "warning"


# -- report ----------------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#1f2328}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem}
table{border-collapse:collapse;font-size:.85rem;margin-top:.5rem}
th,td{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:.15rem .6rem;border-radius:1rem;color:#fff;font-weight:600}
.passed{background:#1a7f37}.failed{background:#cf222e}
.error{color:#cf222e;font-weight:600}.warning{color:#9a6700}.drifted{color:#cf222e;font-weight:600}
.meta td{border:none;padding:.1rem .8rem .1rem 0}
"""


def _fmt(value: Any, kind: str | None = None) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if kind == "datetime" and math.isfinite(value):
            try:
                return _dt.datetime.fromtimestamp(value, tz=_dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
            except (OverflowError, OSError, ValueError):
                pass
        return f"{value:.6g}"
    return str(value)


def _table(headers: list[str], rows: list[list[tuple[str, str]]]) -> str:
    """An HTML table; each cell is (text, css class). All text is escaped."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="{c}">{html.escape(t)}</td>' if c else f"<td>{html.escape(t)}</td>"
                         for t, c in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _top_values_cell(row: dict[str, Any]) -> str:
    if row.get("near_unique"):
        return "none shown: an id or near-unique column"
    return ", ".join(f"{v} ({_fmt(c)})" for v, c in row.get("top_values", []))


def render_report(result: dict[str, Any], features: list[dict[str, Any]]) -> str:
    """A self-contained HTML page (inline CSS, no scripts) for one validation.

    ``result`` is the runner's result document; ``features`` the per-feature statistics rows
    (name, kind, type, count, missing_pct, mean, std, min, median, max, unique, near_unique, top_values;
    the unique and top values counted exactly, see :func:`exact_counts`).
    """
    status = result["status"]
    drift = result.get("drift", {})
    meta = [
        ("dataset", result.get("dataset")),
        ("partition", f"ingest_date={result.get('date')}"),
        ("runs", ", ".join(r.get("run_id", "") for r in result.get("runs", [])) or "all"),
        ("compared with", f"ingest_date={result['previous_date']}" if result.get("previous_date") else "none"),
        ("schema", "inferred from this partition" if result.get("schema_inferred")
         else f"from {result.get('schema_source') or 'the request'}"),
        ("examples", result.get("num_examples")),
        ("blocking anomalies", sum(1 for a in result["anomalies"] if a["severity"] == "error")),
        ("warnings", sum(1 for a in result["anomalies"] if a["severity"] == "warning")),
    ]
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>skiff validation: {html.escape(str(result.get('dataset')))} {html.escape(str(result.get('date')))}"
        "</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Data validation: {html.escape(str(result.get('dataset')))} "
        f"<span class=\"badge {html.escape(status)}\">{html.escape(status.upper())}</span></h1>",
        "<table class=\"meta\">"
        + "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(_fmt(v))}</td></tr>" for k, v in meta)
        + "</table>",
    ]
    if result.get("notes"):
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(str(n))}</li>" for n in result["notes"])
                     + "</ul>")
    parts.append("<h2>Anomalies</h2>")
    if result["anomalies"]:
        parts.append(_table(
            ["feature", "anomaly", "description", "severity"],
            [[(a["feature"], ""), (a["anomaly"], ""), (a["description"], ""), (a["severity"], a["severity"])]
             for a in result["anomalies"]],
        ))
    else:
        parts.append("<p>No anomalies.</p>")
    parts.append("<h2>Drift against the previous partition</h2>")
    if drift:
        parts.append(_table(
            ["feature", "measure", "value", "threshold", "drifted"],
            [[(f, ""), (d["measure"], ""), (_fmt(d["value"]), "num"), (_fmt(d["threshold"]), "num"),
              ("yes" if d["drifted"] else "no", "drifted" if d["drifted"] else "")]
             for f, d in sorted(drift.items())],
        ))
    else:
        parts.append("<p>No drift comparison (first partition, or no thresholds set).</p>")

    def drift_cell(name: str) -> tuple[str, str]:
        d = drift.get(name)
        if d is None:
            return ("", "")
        return (_fmt(d["value"]), "num drifted" if d["drifted"] else "num")

    numeric = [f for f in features if f["kind"] == "numeric"]
    categorical = [f for f in features if f["kind"] == "categorical"]
    if numeric:
        parts.append("<h2>Numeric features</h2>")
        parts.append(_table(
            ["feature", "type", "count", "missing %", "mean", "std", "min", "median", "max", "zeros %", "drift"],
            [[(f["name"], ""), (f.get("type") or "", ""), (_fmt(f["count"]), "num"),
              (_fmt(f["missing_pct"]), "num"),
              (_fmt(f.get("mean"), f.get("type")), "num"), (_fmt(f.get("std")), "num"),
              (_fmt(f.get("min"), f.get("type")), "num"), (_fmt(f.get("median"), f.get("type")), "num"),
              (_fmt(f.get("max"), f.get("type")), "num"), (_fmt(f.get("zeros_pct")), "num"),
              drift_cell(f["name"])]
             for f in numeric],
        ))
    if categorical:
        parts.append("<h2>Categorical and string features</h2>")
        parts.append(_table(
            ["feature", "type", "count", "missing %", "unique", "top values", "drift"],
            [[(f["name"], ""), (f.get("type") or "", ""), (_fmt(f["count"]), "num"),
              (_fmt(f["missing_pct"]), "num"), (_fmt(f.get("unique")), "num"),
              (_top_values_cell(f), ""),
              drift_cell(f["name"])]
             for f in categorical],
        ))
    parts.append("</body></html>\n")
    return "".join(parts)


# -- TFDV work ---------------------------------------------------------------------------------------------
def _read_table(files: list[str]):
    """One Arrow table from the Parquet files; unsupported column types are reported and left out."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for f in files:
        try:
            tables.append(pq.read_table(f))
        except Exception as e:  # pyarrow raises several types for unreadable files
            raise RunnerError("input", f"cannot read Parquet file {f}: {e}") from e
    if not tables:
        raise RunnerError("input", "no Parquet files to validate")
    try:
        return pa.concat_tables(tables, promote=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise RunnerError("input", f"the partition's files have incompatible schemas: {e}") from e


def _to_frame(table) -> tuple[Any, list[tuple[str, str]]]:
    """A pandas DataFrame TFDV accepts: ints stay ints (nullable), booleans become 'true'/'false',
    timestamps and dates become epoch seconds, dictionaries their values. Returns the frame and the
    columns left out with the reason (no values at all, nested or binary types)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    cols: dict[str, Any] = {}
    skipped: list[tuple[str, str]] = []
    for field in table.schema:
        arr = table.column(field.name)
        typ = field.type
        if pa.types.is_dictionary(typ):
            arr, typ = arr.cast(typ.value_type), typ.value_type
        if pa.types.is_null(typ):
            skipped.append((field.name, "holds no values"))
        elif pa.types.is_integer(typ):
            try:
                cols[field.name] = arr.cast(pa.int64()).to_pandas().astype("Int64")
            except pa.ArrowInvalid:  # uint64 beyond int64: keep the magnitude as floats
                cols[field.name] = pc.cast(arr, pa.float64(), safe=False).to_pandas()
        elif pa.types.is_floating(typ) or pa.types.is_decimal(typ):
            cols[field.name] = arr.cast(pa.float64()).to_pandas()
        elif pa.types.is_boolean(typ):
            text = pc.if_else(arr, pa.scalar("true"), pa.scalar("false"))
            cols[field.name] = text.to_pandas()
        elif pa.types.is_timestamp(typ) or pa.types.is_date(typ):  # epoch seconds, sub-seconds dropped
            seconds = pc.cast(arr, pa.timestamp("s", tz=getattr(typ, "tz", None)), safe=False)
            cols[field.name] = seconds.cast(pa.int64()).to_pandas().astype("Int64")
        elif pa.types.is_string(typ) or pa.types.is_large_string(typ):
            cols[field.name] = arr.to_pandas()
        else:
            skipped.append((field.name, f"has type {typ}, which TFDV does not validate"))
    return pd.DataFrame(cols, index=pd.RangeIndex(table.num_rows)), skipped


def _statistics(files: list[str]):
    """TFDV statistics of the files, the columns left out, and the frame TFDV saw."""
    import tensorflow_data_validation as tfdv

    table = _read_table(files)
    frame, skipped = _to_frame(table)
    return tfdv.generate_statistics_from_dataframe(frame, n_jobs=1), skipped, frame


def exact_counts(frame, unique_columns: set[str], top: int = 5) -> dict[str, dict[str, Any]]:
    """Exact value counts of the frame's text columns, for the report.

    TFDV's ``top_values`` and ``unique`` come from sketches (on a table where every id occurs once it
    showed ids with a frequency of 7), so the report counts from the data instead (one pass per text
    column). A column that is an id (the spec's entity key or ``unique: true``) or near-unique (more
    than :data:`NEAR_UNIQUE` of its present values distinct) gets no top values: they say nothing.
    """
    out: dict[str, dict[str, Any]] = {}
    for name in frame.columns:
        col = frame[name]
        if col.dtype != object:
            continue
        counts = col.value_counts(dropna=True)
        present = int(counts.sum())
        distinct = int(len(counts))
        # a share of a handful of values says nothing: judge near-uniqueness from 20 present values on
        near_unique = name in unique_columns or (present >= 20 and distinct / present > NEAR_UNIQUE)
        out[name] = {
            "present": present,
            "unique": distinct,
            "near_unique": near_unique,
            # ties by value, so the report reads the same in every pandas version
            "top_values": [] if near_unique else sorted(((str(v), int(c)) for v, c in counts.items()),
                                                        key=lambda vc: (-vc[1], vc[0]))[:top],
        }
    return out


def _feature(schema, name: str):
    for f in schema.feature:
        if f.name == name:
            return f
    return None


def _apply_rules(schema, features: dict[str, dict[str, Any]]) -> list[str]:
    """Spec rules on an inferred schema: presence, domains, ranges, a non-empty partition.

    Returns notes on rules that could not be applied (a column absent from the data).
    """
    from tensorflow_metadata.proto.v0 import schema_pb2

    notes = []
    schema.dataset_constraints.min_examples_count = 1
    for name, rule in features.items():
        f = _feature(schema, name)
        if f is None:
            notes.append(f"column {name!r} of the spec is not in the data; the schema does not list it")
            continue
        if rule.get("required"):
            f.presence.min_fraction = 1.0
            f.presence.min_count = 1
        else:
            f.presence.ClearField("min_fraction")
            f.presence.min_count = 1
            if f.HasField("shape"):
                f.ClearField("shape")
                f.value_count.min = 1
                f.value_count.max = 1
        domain = rule.get("domain")
        if domain and f.type == schema_pb2.BYTES:
            f.ClearField("domain")
            f.string_domain.ClearField("value")
            f.string_domain.value.extend(str(v) for v in domain)
        lo, hi = rule.get("min"), rule.get("max")
        if f.type == schema_pb2.INT and (lo is not None or hi is not None):
            if lo is not None:
                f.int_domain.min = math.ceil(lo)
            if hi is not None:
                f.int_domain.max = math.floor(hi)
        elif f.type == schema_pb2.FLOAT and (lo is not None or hi is not None):
            if lo is not None:
                f.float_domain.min = float(lo)
            if hi is not None:
                f.float_domain.max = float(hi)
    used = {f.domain for f in schema.feature if f.HasField("domain")}
    keep = [d for d in schema.string_domain if d.name in used]
    del schema.string_domain[:]
    schema.string_domain.extend(keep)
    return notes


def _set_drift(schema, drift: dict[str, float | None]) -> None:
    """Drift comparators from the request: JSD for numeric features, L-infinity for strings."""
    from tensorflow_metadata.proto.v0 import schema_pb2

    for name, threshold in drift.items():
        f = _feature(schema, name)
        if f is None:
            continue
        f.ClearField("drift_comparator")
        if threshold is None:
            continue
        if f.type in (schema_pb2.INT, schema_pb2.FLOAT):
            f.drift_comparator.jensen_shannon_divergence.threshold = float(threshold)
        else:
            f.drift_comparator.infinity_norm.threshold = float(threshold)


def _tolerant(schema, tolerance: float):
    """A copy of the schema that accepts out-of-domain values up to ``tolerance`` of the values."""
    copy = type(schema)()
    copy.CopyFrom(schema)
    if tolerance > 0:
        for f in copy.feature:
            has_domain = f.HasField("domain") or f.HasField("string_domain")
            if has_domain and not f.HasField("distribution_constraints"):
                f.distribution_constraints.min_domain_mass = 1.0 - tolerance
    return copy


def _feature_rows(stats, kinds: dict[str, str], counts: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-feature summary rows from the statistics proto; text columns' distinct and top values from
    :func:`exact_counts`."""
    from tensorflow_metadata.proto.v0 import statistics_pb2

    rows = []
    if not stats.datasets:
        return rows
    ds = stats.datasets[0]
    total = ds.num_examples
    for fs in ds.features:
        name = fs.path.step[0] if fs.path.step else fs.name
        kind = fs.WhichOneof("stats")
        if kind == "num_stats":
            s = fs.num_stats
            common = s.common_stats
            median = s.median
            zeros = s.num_zeros
            row = {
                "name": name, "kind": "numeric", "type": kinds.get(name),
                "mean": s.mean, "std": s.std_dev, "min": s.min, "median": median, "max": s.max,
                "zeros_pct": 100.0 * zeros / common.num_non_missing if common.num_non_missing else None,
            }
        elif kind == "string_stats":
            s = fs.string_stats
            common = s.common_stats
            exact = counts.get(name, {})
            row = {
                "name": name, "kind": "categorical", "type": kinds.get(name),
                "unique": exact.get("unique"), "near_unique": exact.get("near_unique", False),
                "top_values": exact.get("top_values", []),
            }
        else:
            continue
        missing = common.num_missing
        row["count"] = common.num_non_missing
        row["missing_pct"] = 100.0 * missing / total if total else None
        if not row["type"]:
            row["type"] = statistics_pb2.FeatureNameStatistics.Type.Name(fs.type).lower()
        rows.append(row)
    return rows


def _anomaly_rows(strict, tolerant, policy: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (feature, reason): TFDV's type and text, and skiff's severity."""
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    type_name = anomalies_pb2.AnomalyInfo.Type.Name
    blocking_domain = {k for k, v in tolerant.anomaly_info.items()
                       if any(type_name(r.type) == DOMAIN_TYPE for r in v.reason)}
    rows = []
    infos = list(strict.anomaly_info.items())
    if strict.HasField("dataset_anomaly_info"):
        infos.append(("<dataset>", strict.dataset_anomaly_info))
    for feature, info in sorted(infos, key=lambda kv: kv[0]):
        for reason in info.reason:
            atype = type_name(reason.type)
            tolerated = atype == DOMAIN_TYPE and feature not in blocking_domain
            rows.append({
                "feature": feature,
                "anomaly": atype,
                "short": reason.short_description,
                "description": reason.description.strip(),
                "severity": classify(atype, feature, policy, tolerated=tolerated),
            })
    return rows


def _empty_partition(anomalies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """An empty partition blocks, warn-only or not, and whatever the schema's dataset constraints say
    (a reviewed schema may have none): nothing downstream can use it, and TFDV finds little else to say."""
    kept = [a for a in anomalies if not (a["feature"] == "<dataset>" and a["anomaly"] == EMPTY_TYPE)]
    return [{"feature": "<dataset>", "anomaly": EMPTY_TYPE, "short": "Empty partition",
             "description": "The partition has no rows: nothing to validate, build features from or train on. "
                            "Look at the ingest run's quarantine for why every row was rejected.",
             "severity": "error"}, *kept]


def _drift_rows(anomalies) -> dict[str, dict[str, Any]]:
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    name = anomalies_pb2.DriftSkewInfo.Measurement.Type.Name
    out = {}
    for info in anomalies.drift_skew_info:
        feature = ".".join(info.path.step)
        for m in info.drift_measurements:
            measure = DRIFT_MEASURES.get(name(m.type), name(m.type).lower())
            out[feature] = {"measure": measure, "value": float(m.value), "threshold": float(m.threshold),
                            "drifted": float(m.value) > float(m.threshold)}
    return out


def _check_request(req: Any) -> None:
    if not isinstance(req, dict):
        raise RunnerError("request", "the request is not a JSON object")
    if req.get("version") != REQUEST_VERSION:
        raise RunnerError("request", f"request version {req.get('version')!r}, this runner reads {REQUEST_VERSION}")
    for key in ("dataset", "date", "files", "schema", "output_dir", "policy"):
        if key not in req:
            raise RunnerError("request", f"the request has no {key!r}")
    if not req["files"]:
        raise RunnerError("input", f"partition {req['date']} of {req['dataset']} has no Parquet files")


def run(req: dict[str, Any]) -> dict[str, Any]:
    """Validate one partition as the request says and write the outputs; returns the result."""
    _check_request(req)
    out = Path(req["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    try:
        import tensorflow_data_validation as tfdv
        from google.protobuf import text_format
    except ImportError as e:
        raise RunnerError("environment", f"TFDV cannot be imported by {sys.executable}: {e}") from e

    stats, skipped, frame = _statistics(req["files"])
    (out / "stats.pb").write_bytes(stats.SerializeToString())

    previous = None
    if req.get("previous_statistics"):
        try:
            previous = tfdv.load_stats_binary(req["previous_statistics"])
        except Exception as e:  # a corrupt or foreign file
            raise RunnerError("input", f"cannot read previous statistics {req['previous_statistics']}: {e}") from e
    elif req.get("previous_files"):
        previous, _, _ = _statistics(req["previous_files"])

    schema_req = req["schema"]
    notes = [*req.get("notes", []), *(f"column {c!r} {why}; it was left out of the statistics" for c, why in skipped)]
    if schema_req.get("infer"):
        schema = tfdv.infer_schema(stats)
        notes += _apply_rules(schema, req.get("features", {}))
        inferred = True
    else:
        try:
            schema = tfdv.load_schema_text(schema_req["path"])
        except (text_format.ParseError, OSError) as e:
            raise RunnerError("schema", f"cannot read the schema {schema_req.get('source') or schema_req['path']}: "
                                        f"{e}") from e
        inferred = False
    tfdv.write_schema_text(schema, str(out / "schema.pbtxt"))

    checked = type(schema)()
    checked.CopyFrom(schema)
    _set_drift(checked, req.get("drift", {}))
    strict = tfdv.validate_statistics(stats, checked, previous_statistics=previous)
    tolerant = tfdv.validate_statistics(
        stats, _tolerant(checked, float(req["policy"].get("domain_tolerance", 0.0))), previous_statistics=previous
    )
    tfdv.write_anomalies_text(strict, str(out / "anomalies.pbtxt"))

    num_examples = stats.datasets[0].num_examples if stats.datasets else 0
    anomalies = _anomaly_rows(strict, tolerant, req["policy"])
    if num_examples == 0:
        anomalies = _empty_partition(anomalies)
    drift = _drift_rows(strict)
    kinds = {n: r.get("type") for n, r in req.get("features", {}).items()}
    counts = exact_counts(frame, {n for n, r in req.get("features", {}).items() if r.get("unique")})
    result = {
        "dataset": req["dataset"],
        "date": req["date"],
        "previous_date": req.get("previous_date") if previous is not None else None,
        "status": "failed" if any(a["severity"] == "error" for a in anomalies) else "passed",
        "num_examples": num_examples,
        "schema_inferred": inferred,
        "schema_source": schema_req.get("source"),
        "runs": req.get("runs", []),
        "anomalies": anomalies,
        "drift": drift,
        "notes": notes,
        "files": {n: str(out / n) for n in
                  ("stats.pb", "schema.pbtxt", "anomalies.pbtxt", "anomalies.json", "report.html", "result.json")},
    }
    (out / "anomalies.json").write_text(json.dumps(anomalies, indent=2))
    (out / "report.html").write_text(render_report(result, _feature_rows(stats, kinds, counts)), encoding="utf-8")
    (out / "result.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Validate one lake partition with TFDV (skiff).")
    parser.add_argument("--request", required=True, help="Path of the request JSON.")
    args = parser.parse_args(argv)
    out_dir: Path | None = None
    try:
        try:
            req = json.loads(Path(args.request).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise RunnerError("request", f"cannot read the request {args.request}: {e}") from e
        if isinstance(req, dict) and req.get("output_dir"):
            out_dir = Path(req["output_dir"])
        # TFDV and TensorFlow print to stdout; keep stdout for the result line.
        with contextlib.redirect_stdout(sys.stderr):
            result = run(req)
    except RunnerError as e:
        _write_error(out_dir, e.kind, e.message)
        print(f"skiff-tfdv: {e.kind} error: {e.message}", file=sys.stderr)
        return EXIT_CODES[e.kind]
    except Exception as e:
        traceback.print_exc(file=sys.stderr)
        _write_error(out_dir, "internal", f"{type(e).__name__}: {e}")
        return EXIT_CODES["internal"]
    print(json.dumps(result))
    return 0


def _write_error(out_dir: Path | None, kind: str, message: str) -> None:
    if out_dir is None:
        return
    with contextlib.suppress(OSError):
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "error.json").write_text(json.dumps({"kind": kind, "message": message}))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
