"""Model version identifiers as users write them: one strict parser for the API, the CLI and GitOps files.

A version is a whole number from 1 to :data:`MAX_VERSION`, ``latest`` or ``champion``. Accepted:

- an ``int`` (exactly ``int``: not ``bool``, not a float, not ruamel's ``ScalarInt`` that remembers a
  YAML spelling such as ``1_0``, ``01`` or ``0x1``);
- a string of ASCII digits without sign, spaces, underscores or leading zeros (``"3"``), or exactly
  ``latest`` / ``champion`` (lower case).

Refused, with one message naming the field and the accepted forms: ``true``, ``" 1 "``, ``"+1"``,
``"1_0"``, ``"1.0"``, Arabic-Indic or other non-ASCII digits (Python's ``int()`` takes them all), and
``"01"``: a version has one spelling, so ``"01"`` and ``"1"`` can never name two things in a file, a
label or a log line. Numbers stop at nine digits so every client (int32 included) holds them and the
OpenAPI schema can state the rule exactly (:data:`VERSION_PATTERN`). In JSON bodies, ``1.0`` is the
integer 1 (JSON Schema's ``integer`` says so, and the API documents that type); a YAML ``1.0`` is not.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from skiff.errors import SkiffError, UsageError

__all__ = [
    "MAX_VERSION",
    "VERSION_ALIASES",
    "VERSION_PATTERN",
    "NUMBER_PATTERN",
    "VersionRef",
    "VersionNumber",
    "parse_version",
    "parse_version_number",
]

MAX_VERSION = 999_999_999
VERSION_ALIASES = ("latest", "champion")
NUMBER_PATTERN = r"^[1-9][0-9]{0,8}$"
VERSION_PATTERN = r"^(latest|champion|[1-9][0-9]{0,8})$"
_NUMBER = re.compile(NUMBER_PATTERN)
_NUMBER_RULE = f"a whole number from 1 to {MAX_VERSION} (ASCII digits; no sign, spaces, underscores or leading zeros)"
_RULE = f"{_NUMBER_RULE}, 'latest' or 'champion'"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_version_number(value: Any, *, what: str = "version", error: type[SkiffError] = UsageError) -> int:
    """A version number (``latest``/``champion`` refused); raises ``error`` naming ``what``."""
    if type(value) is int:
        if 1 <= value <= MAX_VERSION:
            return value
    elif isinstance(value, str) and _NUMBER.fullmatch(value):
        return int(value)
    raise error(f"{what}: invalid version {_shown(value)}; give {_NUMBER_RULE}")


def parse_version(value: Any, *, what: str = "version", error: type[SkiffError] = UsageError) -> int | str:
    """A version number, ``'latest'`` or ``'champion'``; raises ``error`` naming ``what``."""
    if isinstance(value, str) and value in VERSION_ALIASES:
        return value
    try:
        return parse_version_number(value, what=what, error=error)
    except error:
        raise error(f"{what}: invalid version {_shown(value)}; give {_RULE}") from None


def _json_integer(value: Any) -> Any:
    # JSON Schema's "integer" includes 1.0, and a JSON parser hands it over as exactly `float`; ruamel's
    # ScalarFloat (a YAML file's `version: 1.0`) is a subclass and stays refused
    if type(value) is float and value.is_integer():
        return int(value)
    return value


def _pydantic_number(value: Any) -> int:
    # pydantic turns a ValueError into a field error that names the field
    value = _json_integer(value)
    try:
        return parse_version_number(value, what="version")
    except UsageError as e:
        raise ValueError(e.message) from None


def _pydantic_ref(value: Any) -> int | str:
    value = _json_integer(value)
    try:
        return parse_version(value, what="version")
    except UsageError as e:
        raise ValueError(e.message) from None


#: a version number in a pydantic model (API bodies, GitOps files): strict, documented as an integer
VersionNumber = Annotated[Annotated[int, Field(ge=1, le=MAX_VERSION)], BeforeValidator(_pydantic_number)]

#: a version number, 'latest' or 'champion' in a pydantic model
VersionRef = Annotated[
    Annotated[int, Field(ge=1, le=MAX_VERSION)] | Literal["latest", "champion"]
    | Annotated[str, Field(pattern=NUMBER_PATTERN)],
    BeforeValidator(_pydantic_ref),
]
