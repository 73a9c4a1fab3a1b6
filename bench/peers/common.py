"""What the two peers share: settings from the environment, bearer keys, JSON in and out."""

import hashlib
import hmac
import json
import os
from typing import Any

from django.http import HttpRequest, JsonResponse


def database(name_default: str, engine: str) -> dict[str, Any]:
    """Return the `default` database: PostgreSQL on loopback, a persistent connection."""
    return {
        "ENGINE": engine,
        "NAME": os.environ.get("PEER_DB_NAME", name_default),
        "USER": os.environ.get("PEER_DB_USER", "postgres"),
        "PASSWORD": os.environ.get("PEER_DB_PASSWORD", ""),
        "HOST": os.environ.get("PEER_DB_HOST", "127.0.0.1"),
        "PORT": os.environ.get("PEER_DB_PORT", "5432"),
        # Persistent connections, as both projects' docs recommend for production.
        "CONN_MAX_AGE": None,
        "CONN_HEALTH_CHECKS": False,
    }


BASE_SETTINGS: dict[str, Any] = {
    "SECRET_KEY": "bench-peers-not-secret",
    "DEBUG": False,
    "ALLOWED_HOSTS": ["*"],
    "USE_TZ": True,
    "TIME_ZONE": "UTC",
    "DEFAULT_AUTO_FIELD": "django.db.models.BigAutoField",
    "LOGGING": {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"console": {"class": "logging.StreamHandler"}},
        "root": {"handlers": ["console"], "level": "WARNING"},
    },
}


def key_digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def bearer(request: HttpRequest) -> str:
    header = request.headers.get("Authorization", "")
    return header.removeprefix("Bearer ") if header.startswith("Bearer ") else ""


def key_matches(request: HttpRequest, key_hash: str) -> bool:
    """Whether the request's bearer key is the one whose SHA-256 is `key_hash`."""
    raw = bearer(request)
    return bool(raw) and hmac.compare_digest(key_digest(raw), key_hash)


def error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


def tool_call_body(request: HttpRequest) -> tuple[str, Any] | None:
    """Return (name, args) of a tool-call body, or None when it is not one."""
    try:
        body = json.loads(request.body)
    except ValueError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        return None
    name = body["name"]
    return (name, body.get("args", {})) if 1 <= len(name) <= 128 else None


def tool_call_json(call: Any) -> dict[str, Any]:
    return {
        "seq": call.seq,
        "name": call.name,
        "args": call.args,
        "status": call.status,
        "result": call.result,
        "error": call.error,
        "created_at": call.created_at.isoformat(),
    }
