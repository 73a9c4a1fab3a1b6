"""Run endpoints. The middleware has bound the API key's tenant; every run id is looked up
within that tenant, so another tenant's run is the same 404 as an unknown one."""

import re
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from ninja import Header, Path, Query, Router, Status

from project.exceptions import BadRequest, InvalidInput
from project.schemas import ErrorOut
from runs import queue, selectors, services
from runs.models import NAME_PATTERN, Event, Run, StateCheckpoint, ToolCall
from runs.schemas import (
    MAX_INT,
    MAX_SEQ,
    CompleteIn,
    EventOut,
    EventPage,
    EventsIn,
    EventsOut,
    RunCountsOut,
    RunIn,
    RunOut,
    RunPage,
    StateIn,
    StateOut,
    ToolCallIn,
    ToolCallOut,
    ToolCallOutcomeIn,
    ToolCallPage,
)
from tenancy.context import current_tenant

router = Router(tags=["runs"])

COMMON = {401: ErrorOut, 404: ErrorOut, 422: ErrorOut, 503: ErrorOut}
WRITE = {**COMMON, 400: ErrorOut, 409: ErrorOut, 413: ErrorOut}
RUN_ID = Path(..., max_length=64, description="A run id from POST /runs.")
SEQ = Path(..., ge=1, le=MAX_SEQ)
AFTER = Query(0, ge=0, le=MAX_SEQ, description="Only items with a higher seq.")
LIMIT = Query(100, ge=1, le=1000)


def _run(run_id: str, *, fresh: bool = False) -> Run:
    return selectors.run_get(tenant=current_tenant(), run_id=run_id, fresh=fresh)


def _run_out(run: Run, *, live: bool) -> RunOut:
    counts = None
    if live or not run.is_active:
        found = selectors.run_counts(run=run)
        if found is not None:
            counts = RunCountsOut.model_validate(found, from_attributes=True)
    out = RunOut.model_validate(run, from_attributes=True)
    out.counts = counts
    out.database_state = run.database.state
    out.database_error = run.database.last_error or None
    return out


# ToolCallOut's fields, in its order. A tool call's answer is built from the model's own
# attributes and rendered by the API's renderer, as ninja renders a schema's dump: validating
# our own row into ToolCallOut and dumping it again was about a quarter of a one-row GET's CPU
# (decision 0058).
_CALL_FIELDS = tuple(ToolCallOut.model_fields)


def _call_body(call: ToolCall) -> dict[str, Any]:
    return {field: getattr(call, field) for field in _CALL_FIELDS}


def _call_response(request: HttpRequest, call: ToolCall, status: int = 200) -> HttpResponse:
    """Answer one tool call, as ToolCallOut (the schema the OpenAPI document shows)."""
    return _rendered(request, _call_body(call), status)


def _rendered(request: HttpRequest, body: Any, status: int) -> HttpResponse:
    """`body` as the API renders every answer (its renderer and content type)."""
    from project.api import api  # it imports this module to mount the router

    return api.create_response(request, body, status=status)


def _event_out(event: Event) -> EventOut:
    return EventOut.model_validate(event, from_attributes=True)


def _state_out(checkpoint: StateCheckpoint | None) -> StateOut:
    if checkpoint is None:
        return StateOut(version=0, state=None, updated_at=None)
    return StateOut(
        version=checkpoint.version, state=checkpoint.state, updated_at=checkpoint.created_at
    )


@router.post("/runs", response={201: RunOut, **WRITE, 429: ErrorOut}, summary="Create a run")
def run_create(request: HttpRequest, body: RunIn) -> Status:
    run = services.run_create(tenant=current_tenant(), metadata=body.metadata, labels=body.labels)
    return Status(201, _run_out(run, live=False))


@router.get("/runs", response={200: RunPage, **COMMON}, summary="List runs, newest first")
def runs_list(
    request: HttpRequest,
    status: str | None = Query(None, pattern="^(active|succeeded|failed|expired)$"),
    cursor: str | None = Query(None, max_length=400),
    limit: int = Query(50, ge=1, le=200),
) -> RunPage:
    runs, next_cursor = selectors.runs_list(
        tenant=current_tenant(), status=status, cursor=cursor, limit=limit
    )
    return RunPage(items=[_run_out(r, live=False) for r in runs], next=next_cursor)


@router.get("/runs/{run_id}", response={200: RunOut, **COMMON}, summary="One run, with counts")
def run_get(request: HttpRequest, run_id: str = RUN_ID) -> RunOut:
    return _run_out(_run(run_id, fresh=True), live=True)


@router.post(
    "/runs/{run_id}/tool-calls",
    response={201: ToolCallOut, 202: ToolCallOut, 200: ToolCallOut, **WRITE},
    summary="Record a tool call (201), or queue a registered tool (`async`: 202); "
    "200 for an idempotent retry",
)
def tool_call_record(request: HttpRequest, body: ToolCallIn, run_id: str = RUN_ID) -> HttpResponse:
    if body.run_async:
        call, created = services.tool_call_enqueue(
            run=_run(run_id), name=body.name, args=body.args, idempotency_key=body.idempotency_key
        )
        return _call_response(request, call, 202 if created else 200)
    call, created = services.tool_call_record(
        run=_run(run_id), name=body.name, args=body.args, idempotency_key=body.idempotency_key
    )
    return _call_response(request, call, 201 if created else 200)


@router.post(
    "/runs/{run_id}/tool-calls/{seq}/cancel",
    response={200: ToolCallOut, **WRITE},
    summary="Cancel a queued or running async call (409 `not_cancellable` otherwise)",
)
def tool_call_cancel(request: HttpRequest, run_id: str = RUN_ID, seq: int = SEQ) -> HttpResponse:
    return _call_response(request, queue.tool_call_cancel(run=_run(run_id), seq=seq))


@router.patch(
    "/runs/{run_id}/tool-calls/{seq}",
    response={200: ToolCallOut, **WRITE},
    summary="Record a tool call's result or error (once)",
)
def tool_call_complete(
    request: HttpRequest, body: ToolCallOutcomeIn, run_id: str = RUN_ID, seq: int = SEQ
) -> HttpResponse:
    is_error = "error" in body.model_fields_set
    outcome = services.Outcome(
        result=body.result,
        error=body.error,
        is_error=is_error,
        started_at=body.started_at,
        duration_ms=body.duration_ms,
        input_tokens=body.input_tokens,
        output_tokens=body.output_tokens,
        cost_usd=body.cost_usd,
    )
    return _call_response(
        request, services.tool_call_complete(run=_run(run_id), seq=seq, outcome=outcome)
    )


@router.get("/runs/{run_id}/tool-calls", response={200: ToolCallPage, **COMMON})
def tool_calls_list(
    request: HttpRequest, run_id: str = RUN_ID, after: int = AFTER, limit: int = LIMIT
) -> HttpResponse:
    calls, next_after = selectors.tool_calls_list(run=_run(run_id), after=after, limit=limit)
    return _rendered(request, {"items": [_call_body(c) for c in calls], "next": next_after}, 200)


@router.get(
    "/runs/{run_id}/tool-calls/{seq}",
    response={200: ToolCallOut, **COMMON},
    summary="One call; `wait=N` waits up to N seconds (at most TOOL_CALL_WAIT_MAX_S) for an "
    "async call's final status",
)
def tool_call_get(
    request: HttpRequest,
    run_id: str = RUN_ID,
    seq: int = SEQ,
    wait: float = Query(
        0,
        ge=0,
        allow_inf_nan=False,
        description="Seconds to wait for succeeded, failed or cancelled (0: answer at once); "
        "above TOOL_CALL_WAIT_MAX_S is a 422.",
    ),
) -> HttpResponse:
    run = _run(run_id)
    if wait == 0:
        return _call_response(request, selectors.tool_call_get(run=run, seq=seq))
    if wait > settings.TOOL_CALL_WAIT_MAX_S:
        raise InvalidInput(
            f"wait={wait:g} is above TOOL_CALL_WAIT_MAX_S ({settings.TOOL_CALL_WAIT_MAX_S:g}); "
            "wait again after the answer instead."
        )
    return _call_response(request, queue.tool_call_wait(run=run, seq=seq, wait_s=wait))


@router.post(
    "/runs/{run_id}/events",
    response={201: EventsOut, **WRITE},
    summary="Append a batch of events (at most EVENTS_MAX_BATCH)",
)
def events_append(request: HttpRequest, body: EventsIn, run_id: str = RUN_ID) -> Status:
    seqs = services.events_append(
        run=_run(run_id), events=[(e["kind"], e.get("payload")) for e in body.events]
    )
    return Status(201, EventsOut(seqs=seqs))


@router.get("/runs/{run_id}/events", response={200: EventPage, **COMMON})
def events_list(
    request: HttpRequest,
    run_id: str = RUN_ID,
    after: int = AFTER,
    limit: int = LIMIT,
    kind: str | None = Query(None, pattern=NAME_PATTERN),
) -> EventPage:
    events, next_after = selectors.events_list(
        run=_run(run_id), after=after, limit=limit, kind=kind
    )
    return EventPage(items=[_event_out(e) for e in events], next=next_after)


@router.get("/runs/{run_id}/state", response={200: StateOut, **COMMON})
def state_get(request: HttpRequest, run_id: str = RUN_ID) -> StateOut:
    return _state_out(selectors.state_get(run=_run(run_id)))


@router.put(
    "/runs/{run_id}/state",
    response={200: StateOut, **WRITE},
    summary="Checkpoint the state; `If-Match: <version>` (or `version`) must be current",
)
def state_put(
    request: HttpRequest,
    body: StateIn,
    run_id: str = RUN_ID,
    if_match: str | None = Header(
        None, alias="If-Match", description='The current version: `3`, `"3"` or `W/"3"`; else 400.'
    ),
) -> StateOut:
    expected = body.version if if_match is None else _version_from_etag(if_match)
    if expected is None:
        raise InvalidInput(
            "Send the version you are replacing: `If-Match: <version>` or `version`."
        )
    checkpoint = services.state_put(run=_run(run_id), state=body.state, expected_version=expected)
    return _state_out(checkpoint)


def _version_from_etag(value: str) -> int:
    """Return the version an `If-Match` value names: `3`, `"3"` or `W/"3"`, ASCII digits only.

    `str.isdigit()` and `int()` also take other scripts' digits (`²`, `٣`): a malformed header
    is a 400, never a 500 or a version nobody sent.
    """
    match = _ETAG.fullmatch(value.strip())
    if match is None or int(match["version"]) > MAX_INT:
        raise BadRequest(
            f"If-Match {value[:40]!r} is not a state version: send 0 to {MAX_INT} in ASCII "
            'digits, optionally quoted ("3") or weak (W/"3").'
        )
    return int(match["version"])


_ETAG = re.compile(r'(?:W/)?("?)(?P<version>[0-9]{1,10})\1', re.ASCII)


@router.post(
    "/runs/{run_id}/complete",
    response={200: RunOut, **WRITE},
    summary="Finish the run; it takes no writes afterwards (409)",
)
def run_complete(request: HttpRequest, body: CompleteIn, run_id: str = RUN_ID) -> RunOut:
    run = services.run_complete(
        run=_run(run_id, fresh=True), status=body.status, summary=body.summary
    )
    return _run_out(run, live=False)
