"""bench/hot_run.py's URLs: the project's, plus an authenticated no-op (the HTTP floor)."""

import json

from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from project.urls import urlpatterns as project_urlpatterns


@csrf_exempt
def noop(request: HttpRequest) -> JsonResponse:
    """Parse the body as the API does and answer, after the same API-key middleware."""
    if getattr(request, "tenant", None) is None:
        return JsonResponse({"error": {"code": "unauthorized", "message": "no key"}}, status=401)
    json.loads(request.body or b"null")
    return JsonResponse({"ok": True}, status=201)


urlpatterns = [path("api/v1/noop", noop), *project_urlpatterns]

handler404 = "project.views.not_found"
