"""One renderer for every API error: `{"error": {"code": ..., "message": ...}}`."""

from typing import Any

from django.http import JsonResponse


def error_response(status: int, code: str, message: str, **extra: Any) -> JsonResponse:
    body: dict[str, Any] = {"code": code, "message": message, **extra}
    return JsonResponse({"error": body}, status=status)
