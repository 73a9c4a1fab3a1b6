"""Tenant-scoped endpoints: memory. The middleware has bound the API key's tenant."""

from django.http import HttpRequest, HttpResponse
from ninja import Path, Query, Router, Status

from memory import selectors, services
from memory.models import MemoryEntry
from memory.schemas import MemoryIn, MemoryOut, MemoryPage
from memory.services import MEMORY_KEY_RULE
from project.schemas import ErrorOut

router = Router(tags=["memory"])

KEY_DOC = f"Memory key: {MEMORY_KEY_RULE}."
# 404 everywhere: keys the URL cannot carry (control characters) never reach the view.
ERRORS = {400: ErrorOut, 401: ErrorOut, 404: ErrorOut, 413: ErrorOut, 422: ErrorOut, 503: ErrorOut}


def _out(entry: MemoryEntry) -> MemoryOut:
    return MemoryOut.model_validate(entry, from_attributes=True)


@router.get("/memory", response={200: MemoryPage, **ERRORS}, summary="List memory entries")
def memory_list(
    request: HttpRequest,
    prefix: str = Query("", max_length=200, description="Only keys starting with this."),
    limit: int = Query(50, ge=1, le=200),
    cursor: str | None = Query(None, max_length=400, description="`next` of the previous page."),
) -> MemoryPage:
    entries, next_cursor = selectors.memory_list(prefix=prefix, limit=limit, cursor=cursor)
    return MemoryPage(items=[_out(e) for e in entries], next=next_cursor)


@router.get("/memory/{path:key}", response={200: MemoryOut, **ERRORS}, summary="Read one")
def memory_get(request: HttpRequest, key: str = Path(..., description=KEY_DOC)) -> MemoryOut:
    return _out(selectors.memory_get(key=key))


@router.put(
    "/memory/{path:key}",
    response={200: MemoryOut, 201: MemoryOut, **ERRORS},
    summary="Create (201) or replace (200) one",
)
def memory_put(
    request: HttpRequest, body: MemoryIn, key: str = Path(..., description=KEY_DOC)
) -> Status:
    entry, created = services.memory_put(key=key, value=body.value)
    return Status(201 if created else 200, _out(entry))


@router.delete("/memory/{path:key}", response={204: None, **ERRORS}, summary="Delete one")
def memory_delete(request: HttpRequest, key: str = Path(..., description=KEY_DOC)) -> HttpResponse:
    services.memory_delete(key=key)
    return HttpResponse(status=204)
