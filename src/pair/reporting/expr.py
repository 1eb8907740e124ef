"""A tiny, safe arithmetic language for computed elements (CARDS ArithmeticExpression).

Allowed: numbers, element ids, + - * /, unary minus, parentheses and the functions
sum, min, max, abs, round and value_or(x, default). A missing operand makes the result missing.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from typing import Any

FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sum": lambda *a: sum(a),
    "min": min,
    "max": max,
    "abs": abs,
    "round": round,
}
_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
}


class _Missing(Exception):
    pass


def parse(expression: str) -> ast.Expression:
    """Parse and check the expression; raise ValueError naming what is not allowed."""
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"expression {expression!r} is not valid: {exc.msg}") from exc
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in (*FUNCTIONS, "value_or"):
                raise ValueError(
                    f"expression {expression!r}: only the functions "
                    f"{', '.join([*FUNCTIONS, 'value_or'])} are allowed"
                )
            if node.keywords:
                raise ValueError(f"expression {expression!r}: keyword arguments are not allowed")
        elif isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                raise ValueError(f"expression {expression!r}: only numeric constants are allowed")
        elif not isinstance(
            node,
            ast.Expression
            | ast.BinOp
            | ast.UnaryOp
            | ast.Name
            | ast.Load
            | ast.USub
            | ast.UAdd
            | ast.Add
            | ast.Sub
            | ast.Mult
            | ast.Div,
        ):
            raise ValueError(f"expression {expression!r}: {type(node).__name__} is not allowed")
    return tree


def names(tree: ast.Expression) -> set[str]:
    return {
        n.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Name) and n.id not in FUNCTIONS and n.id != "value_or"
    }


def evaluate(tree: ast.Expression, values: Mapping[str, Any]) -> float | int | None:
    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            value = values.get(node.id)
            if value is None or isinstance(value, bool) or not isinstance(value, int | float):
                raise _Missing(node.id)
            return value
        if isinstance(node, ast.UnaryOp):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp):
            return _BINOPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name)
            if node.func.id == "value_or":
                try:
                    return ev(node.args[0])
                except _Missing:
                    return ev(node.args[1])
            return FUNCTIONS[node.func.id](*(ev(a) for a in node.args))
        raise ValueError(f"unsupported node {type(node).__name__}")

    try:
        result = ev(tree)
    except _Missing:
        return None
    except ZeroDivisionError:
        return None
    if isinstance(result, float) and result.is_integer():
        return int(result)
    return result  # type: ignore[no-any-return]
