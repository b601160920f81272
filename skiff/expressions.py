"""Derived-feature expressions: parsed into a small whitelist at spec load, evaluated by a tree walker.

A spec's ``derived`` features (``usage / (seats + 1)``) are data, not code: they are never handed to
``eval``, ``exec`` or ``pandas.eval`` (which falls back to Python evaluation and reaches attributes).
:func:`parse_expression` accepts only

- names of columns (checked against the spec's feature columns by the spec),
- numeric constants (taken as float64, so ``10 ** 10 ** 10`` overflows to ``inf`` instead of
  computing a huge integer),
- ``+ - * / // % **``, unary ``-`` and ``+``, comparisons (chained too), ``and`` / ``or`` / ``not``
  (element-wise), and parentheses,

and :func:`evaluate` walks that tree over the pandas Series of a frame. The same function runs in the
Feast on-demand view offline (training rows) and online (serving), so both compute the same values.
"""

from __future__ import annotations

import ast
import functools
import operator
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from skiff.errors import SpecError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["MAX_DEPTH", "MAX_EXPRESSION_LENGTH", "DERIVED_DTYPES", "parse_expression", "expression_names", "evaluate",
           "derived_frame", "derived_udf"]

#: Longest expression text accepted (a bound on parse time and tree depth).
MAX_EXPRESSION_LENGTH = 1000
#: Deepest tree accepted (the walker recurses; Python's stack is not the limit users should meet).
MAX_DEPTH = 50
_ALLOWED = "column names, numbers, + - * / // % **, comparisons, and/or/not and parentheses"

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge}


def _refuse(expr: str, why: str) -> SpecError:
    shown = expr if len(expr) <= 80 else expr[:80] + "…"
    return SpecError(f"expression {shown!r}: {why}; an expression may only use {_ALLOWED}", expression=shown)


def _check(node: ast.AST, expr: str, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise _refuse(expr, f"nested deeper than {MAX_DEPTH} levels")
    depth += 1
    if isinstance(node, ast.Name):
        return
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise _refuse(expr, f"constant {node.value!r} is not a number")
        return
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        _check(node.left, expr, depth)
        _check(node.right, expr, depth)
        return
    if isinstance(node, ast.UnaryOp) and (type(node.op) in _UNARY or isinstance(node.op, ast.Not)):
        _check(node.operand, expr, depth)
        return
    if isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
        for child in (node.left, *node.comparators):
            _check(child, expr, depth)
        return
    if isinstance(node, ast.BoolOp):
        for child in node.values:
            _check(child, expr, depth)
        return
    raise _refuse(expr, f"{type(node).__name__} is not allowed")


@functools.lru_cache(maxsize=256)
def parse_expression(expr: str) -> ast.expr:
    """The checked tree of an expression, or a :class:`SpecError` saying what is not allowed."""
    if not isinstance(expr, str) or not expr.strip():
        raise _refuse(str(expr), "empty")
    if len(expr) > MAX_EXPRESSION_LENGTH:
        raise _refuse(expr, f"longer than {MAX_EXPRESSION_LENGTH} characters")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise _refuse(expr, f"not an expression ({type(e).__name__})") from None
    _check(tree.body, expr)
    return tree.body


def expression_names(expr: str) -> list[str]:
    """The column names an expression reads, in order of first use."""
    seen: dict[str, None] = {}
    for node in ast.walk(parse_expression(expr)):
        if isinstance(node, ast.Name):
            seen.setdefault(node.id, None)
    return list(seen)


def _walk(node: ast.expr, frame: pd.DataFrame) -> Any:
    # Any: a Series or a float64 constant, combined by pandas' and numpy's operator overloads
    if isinstance(node, ast.Name):
        return frame[node.id]
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return np.float64(node.value)
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_walk(node.left, frame), _walk(node.right, frame))
    if isinstance(node, ast.UnaryOp):
        value = _walk(node.operand, frame)
        return ~value.astype(bool) if isinstance(node.op, ast.Not) else _UNARY[type(node.op)](value)
    if isinstance(node, ast.Compare):
        result, left = None, _walk(node.left, frame)
        for op, comp in zip(node.ops, node.comparators, strict=True):
            right = _walk(comp, frame)
            part = _COMPARE[type(op)](left, right)
            result = part if result is None else result & part
            left = right
        return result
    if isinstance(node, ast.BoolOp):
        values = [_walk(v, frame).astype(bool) for v in node.values]
        return functools.reduce(operator.and_ if isinstance(node.op, ast.And) else operator.or_, values)
    raise TypeError(f"unchecked node {type(node).__name__}")  # parse_expression admits none


def evaluate(expr: str, frame: pd.DataFrame) -> pd.Series:
    """The expression's value over the columns of ``frame`` (a pandas DataFrame): a Series.

    Division by zero gives ``inf``/``nan`` as in pandas; a constant-only expression is broadcast to
    the frame's index.
    """
    import pandas as pd

    with np.errstate(all="ignore"):
        value = _walk(parse_expression(expr), frame)
    if not isinstance(value, pd.Series):
        value = pd.Series(value, index=frame.index)
    return value


#: pandas dtype of each derived feature type.
DERIVED_DTYPES: dict[str, Literal["float64", "int64", "bool"]] = {"float": "float64", "integer": "int64", "boolean": "bool"}


def derived_frame(inputs: pd.DataFrame, features: tuple[tuple[str, str, str], ...]) -> pd.DataFrame:
    """The derived features ``(name, expression, type)`` computed over ``inputs``, one column each.

    The on-demand feature view's transformation: the expressions are parsed (and so checked) again
    here, so text read back from a feature registry is held to the same whitelist as a spec.
    """
    import pandas as pd

    out = pd.DataFrame(index=inputs.index)
    for name, expr, typ in features:
        out[name] = evaluate(expr, inputs).astype(DERIVED_DTYPES[typ])
    return out


def derived_udf(features: tuple[tuple[str, str, str], ...]) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """A closure computing :func:`derived_frame` for ``features`` (data in its cells, not in code)."""
    features = tuple((str(n), str(e), str(t)) for n, e, t in features)

    # Unannotated on purpose: Feast evaluates a udf's hints in this module's globals, where pandas is not
    # imported (it stays lazy), and accepts no return hint but pandas.DataFrame
    def skiff_derived(inputs):  # type: ignore[no-untyped-def]
        return derived_frame(inputs, features)

    return skiff_derived
