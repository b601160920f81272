"""The identifier policy: which column, feature and dataset names may leave a spec.

A column name becomes a Parquet column, a Feast field and join key, an ONNX input name, a key in a
V1/V2 request, a path segment of a URL and (on the cluster) a column in SQL stores. Every one of those
has its own quoting rules, and some (generated definitions for the ``feast`` CLI) are Python text. So
skiff admits one small alphabet everywhere and maps whatever a source calls its columns onto it
(``safe_identifier``), recording the original header in the spec (``ColumnSpec.source_name``).

The rule for columns, features and derived features, :data:`IDENTIFIER_RE`:

- ASCII letters, digits and ``_``, starting with a letter or ``_``: a name that is a valid identifier
  in Python, SQL, ONNX and a URL segment without quoting, and that has one spelling (no Unicode
  look-alikes or normalisation forms that render alike and compare different);
- at most 63 characters: PostgreSQL (the control plane's database, Feast's SQL registry and stores)
  silently truncates longer identifiers, so two long names could become one;
- not starting with ``__``: Feast reserves such names (``__dummy``, ``__dummy_id``) and Python treats
  them as special.

Dataset and model names (:data:`NAME_RE`) also allow ``-`` after the first letter: they name folders,
URL segments and Feast objects, never columns.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Collection, Iterable
from typing import TypeGuard

from skiff.errors import SpecError

__all__ = [
    "IDENTIFIER_RE",
    "IDENTIFIER_RULE",
    "MAX_LENGTH",
    "NAME_RE",
    "NAME_RULE",
    "check_identifier",
    "check_name",
    "is_identifier",
    "safe_identifier",
    "safe_identifiers",
    "quote_name",
]

MAX_LENGTH = 63
IDENTIFIER_RE = r"^(?!__)[A-Za-z_][A-Za-z0-9_]{0,62}$"
IDENTIFIER_RULE = ("1-63 ASCII letters, digits and '_', starting with a letter or '_' (not '__')")
NAME_RE = r"^[A-Za-z][A-Za-z0-9_\-]{0,62}$"
NAME_RULE = "1-63 ASCII letters, digits, '_' and '-', starting with a letter"

_IDENT = re.compile(IDENTIFIER_RE)
_NAME = re.compile(NAME_RE)
_SHOWN = 60  # characters of an offending name quoted in a message


def quote_name(name: object) -> str:
    """The repr of a name for a message, cut so a 10k-character header stays one readable line."""
    text = name if isinstance(name, str) else str(name)
    if len(text) > _SHOWN:
        return f"{text[:_SHOWN]!r}… ({len(text)} characters)"
    return repr(text)


def is_identifier(name: object) -> TypeGuard[str]:
    return isinstance(name, str) and _IDENT.fullmatch(name) is not None


def check_identifier(name: object, what: str = "column") -> str:
    """``name`` if it meets the column policy, else a :class:`SpecError` naming it and the rule."""
    if not is_identifier(name):
        raise SpecError(
            f"{what} name {quote_name(name)} is not allowed: use {IDENTIFIER_RULE} "
            "(rename it; `skiff init-dataset` maps source headers to such names and keeps the header in "
            "`source_name`)",
            name=quote_name(name), rule=IDENTIFIER_RE,
        )
    return name


def check_name(name: object, what: str = "dataset") -> str:
    """``name`` if it is a valid dataset/model name, else a :class:`SpecError`."""
    if not (isinstance(name, str) and _NAME.fullmatch(name)):
        raise SpecError(f"{what} name {quote_name(name)} is not allowed: use {NAME_RULE}",
                        name=quote_name(name), rule=NAME_RE)
    return name


def _ascii_words(header: str) -> str:
    # é → e, ﬁ → fi (NFKD splits off accents and compatibility forms); everything else becomes '_'
    text = unicodedata.normalize("NFKD", header)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = re.sub(r"[^A-Za-z0-9]+", "_", text)
    return text.strip("_")


def _fit(base: str, suffix: str, header: str, cut: bool) -> str:
    # A cut name carries a hash of the whole header, so long headers sharing a prefix stay distinct
    # and map the same way on every run.
    if cut or len(base) + len(suffix) > MAX_LENGTH:
        tag = "_" + hashlib.sha256(header.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        base = base[: MAX_LENGTH - len(tag) - len(suffix)].rstrip("_") + tag
    return base + suffix


def safe_identifier(header: object, taken: Collection[str] = ()) -> str:
    """A name meeting the policy for a source header, different from every name in ``taken``.

    Deterministic: the same header and ``taken`` give the same name. A header that already meets the
    policy and is free keeps its spelling. Otherwise accents are dropped, runs of other characters
    become ``_``, a leading digit gets ``c_``, an empty result becomes ``column``, a name cut to fit
    ends in a hash of the header, and a clash gets ``_2``, ``_3``… Clashes are found ignoring case
    (stores and file systems that fold case would otherwise merge two columns). ``taken`` is not
    changed: add the result before mapping the next header, or use :func:`safe_identifiers`.
    """
    text = "" if header is None else (header if isinstance(header, str) else str(header))
    folded = {t.casefold() for t in taken}
    if is_identifier(text) and text.casefold() not in folded:
        return text
    base = _ascii_words(text)
    cut = len(base) > MAX_LENGTH
    if not base:
        base = "column"
    elif base[0].isdigit():
        base = "c_" + base
    n = 1
    while True:
        candidate = _fit(base, "" if n == 1 else f"_{n}", text, cut)
        if candidate.casefold() not in folded:
            return candidate
        n += 1


def safe_identifiers(headers: Iterable[object]) -> list[str]:
    """Safe, unique names for a table's headers, in order.

    Headers that already meet the policy keep their names (first occurrence wins); the others are
    mapped around them, so mapping ``"a b"`` never pushes a real column ``a_b`` to ``a_b_2``.
    """
    headers = list(headers)
    out: list[str | None] = [None] * len(headers)
    taken: list[str] = []
    folded: set[str] = set()
    for i, h in enumerate(headers):
        if is_identifier(h) and h.casefold() not in folded:
            out[i] = h
            taken.append(h)
            folded.add(h.casefold())
    names: list[str] = []
    for i, h in enumerate(headers):
        name = out[i]
        if name is None:
            name = safe_identifier(h, taken)
            taken.append(name)
        names.append(name)
    return names
