"""Size checks shared by every API that stores client JSON."""

import json
from typing import Any

from project.exceptions import TooLarge


def check_json_size(value: Any, *, limit: int, what: str) -> int:
    """Return the size of `value` as compact UTF-8 JSON, or raise `TooLarge` naming `what`."""
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > limit:
        raise TooLarge(f"{what} is {size} bytes of JSON; the limit is {limit}.")
    return size
