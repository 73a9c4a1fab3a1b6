"""Size checks shared by every API that stores client JSON."""

import json
from typing import Any

from tenants.exceptions import TooLarge


def json_size(value: Any) -> int:
    """Return the size in bytes of `value` encoded as compact UTF-8 JSON."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def check_json_size(value: Any, *, limit: int, what: str) -> int:
    """Return the encoded size of `value`, or raise `TooLarge` naming `what` and the limit."""
    size = json_size(value)
    if size > limit:
        raise TooLarge(f"{what} is {size} bytes of JSON; the limit is {limit}.")
    return size
