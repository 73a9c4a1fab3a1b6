"""Strict JSON decoding for every byte a client sends: bodies and pagination cursors.

RFC 8259 JSON only, and only values every later step can store and send back:
- no `NaN`/`Infinity`, and no number that overflows to infinity (`1e400`, `-1e999`);
- no lone UTF-16 surrogate (`"\\udfff"`), in values or keys: SQLite and UTF-8 cannot encode it;
- at most `MAX_DEPTH` nested arrays/objects, integers of at most 4,300 digits.

pydantic-core's parser (jiter, already a dependency through pydantic) enforces these in Rust
(its depth limit lets arrays one level deeper than objects); one pass over the decoded value
refuses infinities and makes the depth rule exact.
"""

import math
from typing import Any

from pydantic_core import from_json

from project.exceptions import BadRequest

# Nesting of arrays and objects; about jiter's own limit, which refuses far deeper documents
# before any Python object is built.
MAX_DEPTH = 200


class InvalidJSON(BadRequest):
    """Bytes that are not strict JSON."""


def loads(data: bytes | str, *, what: str = "Request body") -> Any:
    """Return the value `data` encodes, or raise `InvalidJSON` saying what is wrong and where."""
    try:
        value = from_json(data, allow_inf_nan=False)
    except ValueError as exc:
        raise InvalidJSON(
            f"{what} is not valid JSON ({exc}); send UTF-8 JSON without NaN, Infinity or lone "
            f"surrogates, nested at most {MAX_DEPTH} deep."
        ) from exc
    _check_values(value, what)
    return value


def _check_values(value: Any, what: str) -> None:
    # Hot on large bodies: type() identity checks, containers only on the stack (~70 ns/item).
    if type(value) is float:
        _check_float(value, what)
        return
    if type(value) is not dict and type(value) is not list:
        return
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        container, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidJSON(f"{what} nests arrays and objects deeper than {MAX_DEPTH}.")
        for child in container.values() if type(container) is dict else container:
            kind = type(child)
            if kind is float:
                _check_float(child, what)
            elif kind is dict or kind is list:
                stack.append((child, depth + 1))


def _check_float(number: float, what: str) -> None:
    if math.isinf(number):
        raise InvalidJSON(
            f"{what} has a number too large for a 64-bit float (it would be {number}); "
            "the largest is about 1.8e308."
        )
