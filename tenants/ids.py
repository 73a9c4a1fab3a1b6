"""Server-generated identifiers: a short prefix and 20 random base-36 characters."""

import secrets
import string

_ALPHABET = string.digits + string.ascii_lowercase


def new_id(prefix: str) -> str:
    """Return a new random id such as `ten_k3v9...` (about 103 bits of randomness)."""
    return f"{prefix}_" + "".join(secrets.choice(_ALPHABET) for _ in range(20))
