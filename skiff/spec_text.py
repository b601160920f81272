"""The dataset spec as a pipeline parameter: JSON text that keeps the spec's own order.

A KFP ``dict`` parameter travels as a protobuf ``Struct``, whose keys come back sorted or shuffled
(seen under kfp.local, and a cluster backend re-encodes it the same way). The order of ``columns`` is
the model's input order — a V1 client sends rows as lists in that order — so the spec travels as text
instead: every step parses the same text, and a run, a rerun, a restart and the cluster all read the
columns in the order the spec file lists them. The feature service name and the fingerprints are
computed from the parsed spec, so they are the same wherever the text is read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from skiff.errors import SpecError
from skiff.spec import DatasetSpec, parse_spec

__all__ = ["spec_to_text", "spec_from_text"]


def spec_to_text(spec: DatasetSpec | Mapping[str, Any]) -> str:
    """The spec (parsed, or as loaded from YAML) as compact JSON text, keys in the spec's order."""
    data = spec.model_dump(mode="json", exclude_none=True) if isinstance(spec, DatasetSpec) else dict(spec)
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)


def spec_from_text(text: str, origin: str = "pipeline parameter 'spec'") -> DatasetSpec:
    """Parse :func:`spec_to_text`'s output; a :class:`SpecError` names ``origin`` when it is not a spec."""
    if not isinstance(text, str):
        raise SpecError(f"{origin}: expected the dataset spec as JSON text, got {type(text).__name__}")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise SpecError(f"{origin}: not the JSON text of a dataset spec: {e}") from e
    if not isinstance(raw, dict):
        raise SpecError(f"{origin}: a dataset spec is a JSON object, got {type(raw).__name__}")
    return parse_spec(raw, origin=origin)
