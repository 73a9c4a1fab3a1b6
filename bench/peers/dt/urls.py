"""The two tool-call endpoints; the tenant (and its schema) is already bound by the middleware."""

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from bench.peers.common import error, key_matches, tool_call_body, tool_call_json
from bench.peers.dt.toolcalls.models import Run, ToolCall


@csrf_exempt
@require_POST
def tool_call_create(request: HttpRequest, run_id: str) -> JsonResponse:
    if not key_matches(request, request.tenant.key_hash):  # type: ignore[attr-defined]
        return error(401, "unauthorized", "Missing or bad bearer key.")
    parsed = tool_call_body(request)
    if parsed is None:
        return error(422, "invalid", "Expected {name, args}.")
    name, args = parsed
    with transaction.atomic():
        # The run's row lock serialises its writers: seqs are unique and gapless.
        run = Run.objects.select_for_update().filter(pk=run_id).first()
        if run is None:
            return error(404, "not_found", "No such run.")
        run.last_seq += 1
        run.save(update_fields=["last_seq"])
        call = ToolCall.objects.create(run=run, seq=run.last_seq, name=name, args=args)
    return JsonResponse(tool_call_json(call), status=201)


@require_GET
def tool_call_detail(request: HttpRequest, run_id: str, seq: int) -> JsonResponse:
    if not key_matches(request, request.tenant.key_hash):  # type: ignore[attr-defined]
        return error(401, "unauthorized", "Missing or bad bearer key.")
    call = ToolCall.objects.filter(run_id=run_id, seq=seq).first()
    if call is None:
        return error(404, "not_found", "No such tool call.")
    return JsonResponse(tool_call_json(call))


urlpatterns = [
    path("runs/<uuid:run_id>/tool-calls", tool_call_create),
    path("runs/<uuid:run_id>/tool-calls/<int:seq>", tool_call_detail),
]
