"""Strict JSON decoding for every byte a client sends: bodies and pagination cursors.

RFC 8259 JSON only, and only values every later step can store and send back:
- no `NaN`/`Infinity`, and no number that overflows to infinity (`1e400`, `-1e999`);
- no lone UTF-16 surrogate (`"\\udfff"`), in values or keys: SQLite and UTF-8 cannot encode it;
- at most `MAX_DEPTH` nested arrays/objects, integers of at most 4,300 digits.

pydantic-core's parser (jiter, already a dependency through pydantic) enforces all but the
overflow in Rust; one pass over the decoded floats catches that.
"""

import math
from typing import Any

from pydantic_core import from_json

from project.exceptions import BadRequest

# jiter's fixed recursion limit: deeper documents are refused (400) before any Python sees them.
MAX_DEPTH = 200


class InvalidJSON(BadRequest):
    """Bytes that are not strict JSON."""


def loads(data: bytes | str, *, what: str = "Request body") -> Any:
    """Return the value `data` encodes, or raise `InvalidJSON` saying what is wrong and where."""
    try:
        value = from_json(data, allow_inf_nan=False, cache_strings=False)
    except ValueError as exc:
        raise InvalidJSON(
            f"{what} is not valid JSON ({exc}); send UTF-8 JSON without NaN, Infinity or lone "
            f"surrogates, nested at most {MAX_DEPTH} deep."
        ) from exc
    _refuse_infinity(value, what)
    return value


def _refuse_infinity(value: Any, what: str) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, float) and math.isinf(item):
            raise InvalidJSON(
                f"{what} has a number too large for a 64-bit float (it would be {item}); "
                "the largest is about 1.8e308."
            )
