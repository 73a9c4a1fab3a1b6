"""Server-generated identifiers: a short prefix and 20 random base-36 characters."""

import re
import secrets
import string

_ALPHABET = string.digits + string.ascii_lowercase
_LENGTH = 20
_ID_RE = re.compile(rf"^[a-z]{{1,4}}_[0-9a-z]{{{_LENGTH}}}$")


def new_id(prefix: str) -> str:
    """Return a new random id such as `ten_k3v9...` (about 103 bits of randomness)."""
    return f"{prefix}_" + "".join(secrets.choice(_ALPHABET) for _ in range(_LENGTH))


def is_id(value: str, prefix: str | None = None) -> bool:
    """Tell whether `value` has the shape `new_id` gives (with `prefix`, if one is named)."""
    return bool(_ID_RE.match(value)) and (prefix is None or value.startswith(f"{prefix}_"))
