"""MQTT payloads to records: one JSON object is one reading, a JSON array holds several.

A record is what the lake counts as one row read: each object of a message, or the whole message when
it cannot be split into objects (not UTF-8, not JSON, not an object or array). Values are handed to the
:class:`~skiff.cleansing.Cleanser` as text (JSON scalars in their JSON spelling, nested values
as JSON), so it coerces and validates them exactly as it does rows of a CSV file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["Rejected", "parse_payload", "as_text"]


@dataclass(frozen=True)
class Rejected:
    """A record that never reached the Cleanser: its reason code, a readable problem and the raw text."""

    reason: str
    problem: str
    raw: str


def as_text(value: Any) -> str | None:
    """A JSON value as the text the Cleanser coerces: strings as they are, other values as JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def parse_payload(payload: bytes, *, required: list[str] | None = None,
                  known: set[str] | None = None) -> list[dict[str, Any] | Rejected]:
    """Records of one message, in order: dicts of column -> text, or :class:`Rejected` entries.

    ``required``: columns each object must have (a missing one rejects that object). ``known``: when
    given, an object with a key outside it is rejected (the spec's ``unknown_columns: reject``).
    """
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        return [Rejected("malformed_message", f"not UTF-8 text: {e.reason}", payload[:500].hex())]
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        return [Rejected("malformed_message", f"not JSON: {e.msg} at line {e.lineno} column {e.colno}", text)]
    items = doc if isinstance(doc, list) else [doc]
    out: list[dict[str, Any] | Rejected] = []
    for i, item in enumerate(items):
        where = f"item {i}: " if isinstance(doc, list) else ""
        if not isinstance(item, dict):
            out.append(Rejected("not_an_object", f"{where}a reading is a JSON object, got "
                                f"{type(item).__name__}", json.dumps(item, ensure_ascii=False)))
            continue
        missing = [c for c in (required or []) if c not in item]
        if missing:
            out.append(Rejected("missing_column", f"{where}required column(s) {', '.join(missing)} missing",
                                json.dumps(item, ensure_ascii=False)))
            continue
        if known is not None:
            unknown = sorted(k for k in item if k not in known)
            if unknown:
                out.append(Rejected("unknown_column", f"{where}column(s) {', '.join(unknown)} not in the spec "
                                    "(unknown_columns: reject)", json.dumps(item, ensure_ascii=False)))
                continue
        out.append({str(k): as_text(v) for k, v in item.items()})
    return out
