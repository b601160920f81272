"""Loaders of the pinned upstream definitions the cluster contract suite holds skiff's objects against.

The files are upstream's own (CRDs, chart Chart.yaml/values.yaml, Knative's ConfigMaps, KFP's install
manifests), byte-identical at the tags in ``SOURCES.md``. They are read from ``$SKIFF_UPSTREAM_SCHEMAS`` when
set, else from ``../shared/upstream`` next to the repository; ``make cluster-schemas``
(``.ci/fetch_upstream.py``) downloads them on a machine with internet. A test whose file is in neither place
skips and says which file and where it looked.
"""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

# Release tooling fills these in (knative-operator's Chart.yaml/values.yaml hold `{{ version }}`, `{{ tag }}`);
# they are not YAML until rendered.
_PLACEHOLDER = re.compile(r"\{\{\s*[A-Za-z_][\w.]*\s*\}\}")


def upstream_roots() -> list[Path]:
    roots = []
    if os.environ.get("SKIFF_UPSTREAM_SCHEMAS"):
        roots.append(Path(os.environ["SKIFF_UPSTREAM_SCHEMAS"]))
    roots.append(REPO.parent / "shared" / "upstream")
    return roots


def find_upstream(rel: str) -> Path | None:
    """``<folder>/<path in the upstream repo>`` under the first root that has it, or None."""
    for root in upstream_roots():
        if (root / rel).is_file():
            return root / rel
    return None


def upstream_file(rel: str) -> Path:
    """The upstream file, or a skip naming it and the roots searched."""
    found = find_upstream(rel)
    if found is None:
        pytest.skip(
            f"upstream file {rel} not found under {', '.join(map(str, upstream_roots()))} "
            "(set SKIFF_UPSTREAM_SCHEMAS or run make cluster-schemas)"
        )
    return found


@cache
def _load_all(path: Path) -> tuple[Any, ...]:
    text = _PLACEHOLDER.sub("PLACEHOLDER", path.read_text())
    return tuple(d for d in yaml.safe_load_all(text) if d is not None)


def upstream_yaml(rel: str) -> Any:
    """The one YAML document of an upstream file (an empty file, such as the KServe CRD charts'
    values.yaml, reads as an empty mapping)."""
    docs = _load_all(upstream_file(rel))
    if not docs:
        return {}
    assert len(docs) == 1, f"{rel} holds {len(docs)} documents"
    return docs[0]


def upstream_documents(rel: str) -> tuple[Any, ...]:
    return _load_all(upstream_file(rel))


@cache
def upstream_tags() -> dict[str, str]:
    """folder -> tag, from the summary table of SOURCES.md (the provenance of every upstream file)."""
    sources = upstream_file("SOURCES.md").read_text()
    tags: dict[str, str] = {}
    for line in sources.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        # | folder | upstream repository | tag | commit | files | bytes | license |
        if len(cells) == 7 and re.fullmatch(r"[0-9a-f]{40}", cells[3]):
            tags[cells[0]] = cells[2]
    assert tags, "SOURCES.md has no summary table of folders and tags"
    return tags


def configmap_example_keys(rel: str) -> set[str]:
    """The keys a Knative-style ConfigMap documents in its ``_example`` block (commented or not), plus the
    keys its data sets: what a skiff override of that ConfigMap may name."""
    data = upstream_yaml(rel).get("data", {})
    keys = {k for k in data if k != "_example"}
    for line in data.get("_example", "").splitlines():
        m = re.match(r"^\s*#?\s*([A-Za-z0-9][\w.\-/]*):\s", line + " ")
        if m and not line.lstrip().startswith("# "):
            keys.add(m.group(1))
    return keys


def configmap_example_values(rel: str) -> dict[str, str]:
    """``key: value`` lines of a Knative ConfigMap's ``_example`` block: its defaults."""
    data = upstream_yaml(rel).get("data", {})
    values: dict[str, str] = {}
    for line in data.get("_example", "").splitlines():
        m = re.match(r'^\s*([A-Za-z0-9][\w.\-/]*):\s*"?([^"#]*?)"?\s*$', line)
        if m:
            values[m.group(1)] = m.group(2)
    return values


def helm_merge(defaults: Any, overrides: Any) -> Any:
    """Helm's coalescing of user values over a chart's values.yaml: maps merge key by key, a null deletes
    the key, anything else (lists included) replaces the default."""
    if not isinstance(defaults, dict) or not isinstance(overrides, dict):
        return overrides
    merged = dict(defaults)
    for key, value in overrides.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = helm_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def unknown_value_paths(values: Any, defaults: Any, prefix: str = "") -> list[str]:
    """Paths of ``values`` that the chart's values.yaml (``defaults``) does not declare.

    A key must exist at its level. Below a key whose default is a free-form map (empty, e.g. nodeSelector,
    annotations, podLabels), a list or null, anything goes: the chart passes it through as given."""
    if not isinstance(values, dict):
        return []
    if not isinstance(defaults, dict):
        return []
    unknown = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if key not in defaults:
            unknown.append(path)
        elif isinstance(defaults[key], dict) and defaults[key]:
            unknown += unknown_value_paths(value, defaults[key], path + ".")
    return unknown
