"""Reads of agent runs. Listing runs reads the control plane only; the rest binds the run."""

import copy
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Max, Q

from project.exceptions import NotFound
from project.memo import Memo
from project.pagination import (
    cursor_decode,
    cursor_encode,
    json_size,
    page_within_budget,
    with_json_bytes,
)
from runs.models import Event, Run, StateCheckpoint, ToolCall
from tenancy.context import run_context
from tenancy.ids import is_id
from tenancy.paths import absolute
from tenancy.rows import by_pk, fetch_one
from tenants.models import Database, Tenant

_run_memo: Memo[Run] = Memo()


def run_get(*, tenant: Tenant, run_id: str, fresh: bool = False) -> Run:
    """Return the tenant's run; unknown ids and other tenants' runs are the same 404.

    Unless `fresh`, the row may come from a memo a few seconds old (`project.memo`): its
    `status` may lag, which writes do not rely on (the run database's triggers decide).
    """
    run = None
    if is_id(run_id, "run"):
        key = (tenant.id, run_id)
        if fresh:
            _run_memo.forget(key)
        cached = _run_memo.get_or_load(key, lambda: _load_run(tenant, run_id))
        run = None if cached is None else copy.copy(cached)
    if run is None:
        raise NotFound(f"No run {run_id[:60]!r}.")
    run.tenant = tenant
    return run


# A run and its database's registry row: two plain queries (`tenancy.rows.fetch_one`) cost less
# than half the ORM's compiled join, and every request that misses the memo pays it.
_RUN_SQL = f'SELECT * FROM "{Run._meta.db_table}" WHERE "id" = %s AND "tenant_id" = %s'


def _load_run(tenant: Tenant, run_id: str) -> Run | None:
    run = fetch_one(Run, _RUN_SQL, [run_id, tenant.pk])
    if run is None:
        return None
    database = by_pk(Database, run.database_id)
    if database is None:
        return None  # as the join would: a run is served only with its database
    run.database = database
    return run


def run_forget(*, run: Run) -> None:
    """Drop this process's memo of `run` (after its status changed)."""
    _run_memo.forget((run.tenant_id, run.id))


def runs_list(
    *, tenant: Tenant, status: str | None = None, cursor: str | None = None, limit: int = 50
) -> tuple[list[Run], str | None]:
    """Return the tenant's runs, newest first, from the control plane only.

    A page stops at `limit` runs or at the page byte budget (`project.pagination`).
    """
    rows = Run.objects.filter(tenant=tenant).order_by("-created_at", "-id")
    if status:
        rows = rows.filter(status=status)
    if cursor:
        created_at, run_id = cursor_decode(cursor, _created_and_id)
        rows = rows.filter(Q(created_at__lt=created_at) | Q(created_at=created_at, id__lt=run_id))
    page, last = page_within_budget(rows.select_related("database"), limit=limit, size=_run_bytes)
    for run in page:
        run.tenant = tenant
    return page, (cursor_encode([last.created_at.isoformat(), last.id]) if last else None)


def _run_bytes(run: Run) -> int:
    # The control plane may be PostgreSQL (jsonb, no stored text): measure in Python; metadata
    # and summary are small (RUN_METADATA_MAX_BYTES each).
    return json_size(run.metadata) + json_size(run.labels) + json_size(run.summary)


def _created_and_id(value: Any) -> tuple[datetime, str]:
    created, run_id = value
    return datetime.fromisoformat(created), str(run_id)


@dataclass(frozen=True)
class RunCounts:
    tool_calls: int
    events: int
    state_version: int
    db_bytes: int


def run_counts(*, run: Run) -> RunCounts | None:
    """Return counts and size: copied values for finished runs, live ones for active runs.

    None for a run that failed without its database (damaged or missing): nobody knows them.
    """
    if not run.is_active:
        if run.tool_calls is None:
            return None
        return RunCounts(run.tool_calls, run.events or 0, run.state_version or 0, run.db_bytes or 0)
    with run_context(run):
        # Sequence numbers are gapless, so the highest is the count (an index lookup).
        tool_calls = ToolCall.objects.aggregate(n=Max("seq"))["n"] or 0
        events = Event.objects.aggregate(n=Max("seq"))["n"] or 0
        version = StateCheckpoint.objects.aggregate(v=Max("version"))["v"] or 0
    path = absolute(run.database.path)
    size = sum(os.stat(p).st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())
    return RunCounts(tool_calls, events, version, size)


def tool_call_get(*, run: Run, seq: int) -> ToolCall:
    # The agents' most frequent read: a plain query (~0.2 ms against ~0.5 ms through the ORM).
    with run_context(run):
        call = by_pk(ToolCall, seq)
    if call is None:
        raise NotFound(f"Run {run.id} has no tool call {seq}.")
    return call


def tool_calls_list(
    *, run: Run, after: int = 0, limit: int = 100
) -> tuple[list[ToolCall], int | None]:
    """Return tool calls after `after` in order, at most `limit` and the page byte budget."""
    with run_context(run):
        rows = ToolCall.objects.filter(seq__gt=after).order_by("seq")
        page, last = page_within_budget(
            with_json_bytes(rows, "args", "result", "error"), limit=limit
        )
    return page, (last.seq if last else None)


def events_list(
    *, run: Run, after: int = 0, limit: int = 100, kind: str | None = None
) -> tuple[list[Event], int | None]:
    """Return events after `after` in order, at most `limit` and the page byte budget."""
    with run_context(run):
        rows = Event.objects.filter(seq__gt=after).order_by("seq")
        if kind:
            rows = rows.filter(kind=kind)
        page, last = page_within_budget(with_json_bytes(rows, "payload"), limit=limit)
    return page, (last.seq if last else None)


def state_get(*, run: Run) -> StateCheckpoint | None:
    """Return the current state checkpoint, or None before the first `PUT`."""
    with run_context(run):
        return StateCheckpoint.objects.order_by("-version").first()


def tool_calls_open_counts(*, tenant: Tenant) -> dict[str, int]:
    """Return the tenant's queued and running async calls, over its active runs on this node.

    Read from the run databases (a partial index of open calls), so the counts are exact after
    any crash; a run whose database cannot be read is skipped. For the admin and `dbstats`.
    """
    from django.conf import settings
    from django.db import DatabaseError
    from django.db.models import Count

    from project.exceptions import ApplicationError

    counts = {ToolCall.Status.QUEUED.value: 0, ToolCall.Status.RUNNING.value: 0}
    runs = Run.objects.filter(
        tenant=tenant, status=Run.Status.ACTIVE, database__home_node=settings.HOME_NODE
    ).select_related("database")
    for run in runs:
        run.tenant = tenant
        try:
            with run_context(run):
                rows = (
                    ToolCall.objects.filter(status__in=list(counts))
                    .values("status")
                    .annotate(n=Count("seq"))
                    .values_list("status", "n")
                )
                for status, n in rows:
                    counts[status] += n
        except (ApplicationError, DatabaseError, OSError):
            continue
    return counts
