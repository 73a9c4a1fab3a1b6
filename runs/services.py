"""Writes of agent runs: the registry row in the control plane and each run's own database.

Callers only pass the `Run`. Every write to a run database goes through the run's single writer
(`runs.writer.write`): group commit under the run's lease, fenced in the database, which also
keeps sequence numbers gapless per run; database triggers refuse writes once the run is closed,
so a write racing `run_complete` cannot land after it.
"""

import contextlib
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pydantic_core
from django.conf import settings
from django.db import DatabaseError, connections, router
from django.db.models import Max, Min
from django.utils import timezone

from audit import chain as audit
from project.exceptions import (
    ApplicationError,
    Conflict,
    DependencyUnavailable,
    InvalidInput,
    NotFound,
    TooLarge,
    TooManyRequests,
)
from project.limits import check_json_size
from runs import writer
from runs.exceptions import AfterCommitFailed, RunClosed, StaleVersion
from runs.models import (
    LABEL_PATTERN,
    LABEL_RULE,
    MAX_LABELS,
    NAME_PATTERN,
    NAME_RULE,
    Event,
    Run,
    RunInfo,
    StateCheckpoint,
    ToolCall,
)
from runs.selectors import run_forget
from runs.signals import run_finished
from tenancy import faults
from tenancy.context import run_context
from tenancy.exceptions import DatabaseQuarantined, DatabaseUnavailable
from tenancy.ids import new_id
from tenancy.paths import absolute, run_alias, run_db_relpath
from tenancy.provisioning import database_provisioned
from tenancy.rows import (
    insert_row,
    insert_stored,
    instance_from_stored,
    raw_connection,
    stored_datetime,
    update_stored,
)
from tenancy.scopes import Scope
from tenants.models import Database, Tenant

logger = logging.getLogger(__name__)

NAME_RE = re.compile(NAME_PATTERN)
LABEL_RE = re.compile(LABEL_PATTERN)


def _check_name(value: str, what: str) -> str:
    if not NAME_RE.match(value):
        raise InvalidInput(f"{what} {value[:140]!r} is invalid: {NAME_RULE}.")
    return value


def run_create(
    *, tenant: Tenant, metadata: dict[str, Any] | None = None, labels: list[str] | None = None
) -> Run:
    """Provision a run database from the run template and register the run as active."""
    metadata = metadata or {}
    labels = labels or []
    check_json_size(metadata, limit=settings.RUN_METADATA_MAX_BYTES, what="Run metadata")
    if len(labels) > MAX_LABELS or not all(LABEL_RE.match(label) for label in labels):
        raise InvalidInput(f"Labels must be at most {MAX_LABELS} strings of {LABEL_RULE}.")
    limit = tenant.max_active_runs
    limit = settings.TENANT_MAX_ACTIVE_RUNS if limit is None else limit
    run_id = new_id("run")
    with database_provisioned(Scope.RUN, run_db_relpath(tenant.id, run_id)) as database:
        # Counted inside the registering transaction (serialised on a SQLite control plane).
        active = Run.objects.filter(tenant=tenant, status=Run.Status.ACTIVE).count()
        if active >= limit:
            raise TooManyRequests(
                f"Tenant {tenant.slug} has {active} active runs, its limit; complete some first.",
                code="too_many_active_runs",
            )
        run = insert_row(
            Run, id=run_id, tenant=tenant, database=database, metadata=metadata, labels=labels
        )
    run.tenant, run.database = tenant, database
    return run


def _compact_json(value: Any) -> str:
    # pydantic-core's encoder (compact, UTF-8): ~4x faster than json.dumps per event.
    return pydantic_core.to_json(value).decode()


def _digest(name: str, args: Any) -> str:
    canonical = json.dumps([name, args], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replay(key: str, digest: str) -> ToolCall | None:
    existing = ToolCall.objects.filter(idempotency_key=key).first()
    if existing is not None and existing.digest != digest:
        raise Conflict(
            f"Idempotency key {key!r} was used for tool call {existing.seq} with a different "
            "name or args; use a new key for a different call.",
            code="idempotency_mismatch",
            seq=existing.seq,
        )
    return existing


def tool_call_record(
    *, run: Run, name: str, args: Any, idempotency_key: str | None = None
) -> tuple[ToolCall, bool]:
    """Append a tool call to the run's log; return it and whether it was created.

    The same `idempotency_key` with the same name and args returns the call recorded first.
    """
    _check_name(name, "Tool name")
    check_json_size(args, limit=settings.TOOL_ARGS_MAX_BYTES, what="Tool args")
    digest = _digest(name, args)
    if idempotency_key is not None:
        with run_context(run):
            if found := _replay(idempotency_key, digest):
                return found, False

    def work() -> ToolCall | tuple[int, datetime]:
        if idempotency_key is not None and (found := _replay(idempotency_key, digest)):
            return found
        created_at = timezone.now()  # in the critical section: in seq order
        # The hot path of every agent: one INSERT on the raw connection, the row audited as
        # stored, the model instance built after the commit, outside the run's critical section.
        row = insert_stored(
            ToolCall,
            using=router.db_for_write(ToolCall),
            name=name,
            args=args,
            digest=digest,
            idempotency_key=idempotency_key,
            created_at=created_at,
        )
        audit.run_append_stored("tool_call", "runs_toolcall", "seq", row)
        return int(row["seq"]), created_at

    done = writer.write(run, work)
    if isinstance(done, ToolCall):
        return done, False
    seq, created_at = done
    call = ToolCall(
        seq=seq,
        name=name,
        args=args,
        digest=digest,
        idempotency_key=idempotency_key,
        created_at=created_at,
    )
    call._state.adding, call._state.db = False, run_alias(run.id)
    return call, True


@dataclass(frozen=True)
class Outcome:
    """What `PATCH /tool-calls/{seq}` records; exactly one of `result` and `error` is set."""

    result: Any = None
    error: Any = None
    is_error: bool = False
    started_at: datetime | None = None
    duration_ms: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None


def tool_call_complete(*, run: Run, seq: int, outcome: Outcome) -> ToolCall:
    """Record the result or error of tool call `seq`; a second outcome is a conflict."""
    value = outcome.error if outcome.is_error else outcome.result
    check_json_size(value, limit=settings.TOOL_RESULT_MAX_BYTES, what="Tool result")

    def work() -> ToolCall:
        try:
            call = ToolCall.objects.get(seq=seq)
        except ToolCall.DoesNotExist:
            raise NotFound(f"Run {run.id} has no tool call {seq}.") from None
        if call.status != ToolCall.Status.PENDING:
            raise Conflict(
                f"Tool call {seq} already has its outcome ({call.status}); it is recorded once.",
                code="already_completed",
            )
        call.status = ToolCall.Status.FAILED if outcome.is_error else ToolCall.Status.SUCCEEDED
        call.result = None if outcome.is_error else outcome.result
        call.error = outcome.error if outcome.is_error else None
        call.completed_at = timezone.now()
        timings = ("started_at", "duration_ms", "input_tokens", "output_tokens", "cost_usd")
        for field in timings:
            setattr(call, field, getattr(outcome, field))
        call.save(update_fields=["status", "result", "error", "completed_at", *timings])
        audit.run_append_row("outcome", "runs_toolcall", "seq", seq)
        return call

    return writer.write(run, work)


EVENT_COLUMNS = ("seq", "kind", "payload", "created_at")
EVENTS_INSERT = (
    "INSERT INTO runs_event (seq, kind, payload, created_at) "
    "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), "
    "json_extract(value, '$[2]'), json_extract(value, '$[3]') FROM json_each(?, '$.rows')"
)


def events_append(*, run: Run, events: list[tuple[str, Any]]) -> list[int]:
    """Append a batch of `(kind, payload)` events in order; return their sequence numbers."""
    if not events:
        raise InvalidInput("Send at least one event.")
    if len(events) > settings.EVENTS_MAX_BATCH:
        raise TooLarge(
            f"A batch holds at most {settings.EVENTS_MAX_BATCH} events; got {len(events)}."
        )
    encoded: list[tuple[str, str | None]] = []
    for kind, payload in events:
        _check_name(kind, "Event kind")
        # Encoded once: the size checked is the text stored (as JSONField would read it back).
        text = None if payload is None else _compact_json(payload)
        size = 4 if text is None else len(text) if text.isascii() else len(text.encode())
        if size > settings.EVENT_PAYLOAD_MAX_BYTES:
            raise TooLarge(
                f"Event payload is {size} bytes of JSON; "
                f"the limit is {settings.EVENT_PAYLOAD_MAX_BYTES}."
            )
        encoded.append((kind, text))

    def work() -> list[int]:
        alias = router.db_for_write(Event)
        created_at = stored_datetime(timezone.now(), connections[alias])
        with raw_connection(alias) as raw:
            # The writer holds the database's write lock: the next seqs are known and gapless.
            found = raw.execute("SELECT seq FROM sqlite_sequence WHERE name = 'runs_event'")
            last = found.fetchone()
            first = (last[0] if last else 0) + 1
            # Explicit seqs (the ones AUTOINCREMENT would give): the audit entry names them.
            rows = [
                (seq, kind, text, created_at)
                for seq, (kind, text) in enumerate(encoded, start=first)
            ]
            body = audit.rows_body("runs_event", "seq", list(EVENT_COLUMNS), rows)
            # One statement for the batch, its rows read by SQLite from the audit entry's own
            # JSON: the sqlite3 module lets go of the GIL once, not once per row as
            # executemany does, and every time it does the writer waits for the GIL behind
            # the request threads parsing bodies (decision 0048).
            raw.execute(EVENTS_INSERT, [body])
        audit.run_append("events", body)
        return list(range(first, first + len(rows)))

    return writer.write(run, work)


def state_put(*, run: Run, state: Any, expected_version: int) -> StateCheckpoint:
    """Store a new version of the run's state if `expected_version` is still the current one."""
    check_json_size(state, limit=settings.STATE_MAX_BYTES, what="State")

    def work() -> StateCheckpoint:
        current = StateCheckpoint.objects.aggregate(v=Max("version"))["v"] or 0
        if expected_version != current:
            raise StaleVersion(
                f"State is at version {current}, not {expected_version}; read it and retry.",
                current_version=current,
            )
        checkpoint = StateCheckpoint.objects.create(version=current + 1, state=state)
        audit.run_append_row("state", "runs_statecheckpoint", "version", checkpoint.version)
        return checkpoint

    return writer.write(run, work)


def _close(now: datetime, status: str) -> tuple[int, int, int]:
    """Close the bound run's database to writes; return its tool call, event and state counts.

    Closing first means no write lands after the counts; an already closed database (a previous
    attempt died before the control-plane update) is fine. Runs inside the writer. The audit
    entry goes first: the closed-run triggers refuse it afterwards.
    """
    if RunInfo.objects.filter(id=1, closed_at__isnull=True).exists():
        alias = router.db_for_write(RunInfo)
        closed_at = connections[alias].ops.adapt_datetimefield_value(now)
        row = {"id": 1, "closed_at": closed_at}
        audit.run_append(
            "close",
            audit.encode({"table": "runs_runinfo", "pk": "id", "row": row, "status": status}),
        )
        RunInfo.objects.filter(id=1).update(closed_at=now)
    return (
        ToolCall.objects.aggregate(n=Max("seq"))["n"] or 0,
        Event.objects.aggregate(n=Max("seq"))["n"] or 0,
        StateCheckpoint.objects.aggregate(v=Max("version"))["v"] or 0,
    )


def _checkpoint(run: Run) -> None:
    """Fold the closed run's WAL into its file, so its size (and a copy of it) is final."""
    with run_context(run), connections[router.db_for_write(RunInfo)].cursor() as cursor:
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def run_complete(*, run: Run, status: str, summary: Any = None) -> Run:
    """Close the run to writes, then copy its final counts and sizes to the control plane.

    A run whose database is missing or damaged (or hits an I/O fault) can still be completed
    as `failed`: through the control plane only, with the reason recorded on its registry row,
    so it stops counting toward the tenant's active runs. `succeeded` needs its database.
    """
    if status not in (Run.Status.SUCCEEDED, Run.Status.FAILED):
        raise InvalidInput(f"Status {status!r} is invalid: use 'succeeded' or 'failed'.")
    check_json_size(summary, limit=settings.RUN_METADATA_MAX_BYTES, what="Summary")
    if not run.is_active:
        raise RunClosed(f"Run {run.id} is already {run.status}.")
    now = timezone.now()
    try:
        tool_calls, events, version = _close_run_database(run, now, status)
    except (DatabaseUnavailable, DatabaseQuarantined, DatabaseError) as exc:
        if status != Run.Status.FAILED or not _is_database_fault(exc):
            raise
        return _end_without_database(
            run=run, status=Run.Status.FAILED, summary=summary, now=now, exc=exc
        )
    size = os.stat(absolute(run.database.path)).st_size
    return _finish(
        run,
        status=status,
        finished_at=now,
        summary=summary,
        tool_calls=tool_calls,
        events=events,
        state_version=version,
        db_bytes=size,
    )


def _close_run_database(run: Run, now: datetime, status: str) -> tuple[int, int, int]:
    counts = writer.write(run, lambda: _close(now, status))
    _checkpoint(run)
    return counts


def _is_database_fault(exc: Exception) -> bool:
    """A missing, damaged or quarantined database: the run can only end in the control plane."""
    if isinstance(exc, DatabaseUnavailable | DatabaseQuarantined):
        return True
    return faults.classify(exc) is not None


def _end_without_database(
    *, run: Run, status: str, summary: Any, now: datetime, exc: Exception
) -> Run:
    """End the run in the control plane only; its counts stay unknown (null)."""
    reason = exc.message if isinstance(exc, ApplicationError) else str(exc)
    note = f"{now.isoformat(timespec='seconds')} run {status} without its database: {reason}"
    Database.objects.filter(pk=run.database_id).update(last_error=note[:2000])
    return _finish(run, status=status, finished_at=now, summary=summary)


def _finish(run: Run, **fields: Any) -> Run:
    updated = Run.objects.filter(pk=run.pk, status=Run.Status.ACTIVE).update(**fields)
    run_forget(run=run)
    if not updated:
        raise RunClosed(f"Run {run.id} was completed by another request.")
    run.refresh_from_db()
    run.database.refresh_from_db()
    run_finished.send(sender=Run, run_id=run.id)
    return run


# --- Idle expiry (decision 0027) ------------------------------------------------------------------
# "No write for that long" is read from the run database's files, not from a column written on
# every API write: a commit appends to the -wal file (or, after a checkpoint, rewrites the main
# file), so the newest of their modification times is the last write, for free. A -wal of zero
# bytes is skipped: opening a database creates one, and that is not a write.


@dataclass(frozen=True)
class ExpiryResult:
    checked: int  # active runs old enough to be idle, on this node
    expired: list[str]  # ids of the runs that expired now
    errors: list[str]  # ids whose database could not be read or closed (tried again next time)


def run_last_write(*, run: Run) -> float | None:
    """Return when the run's database was last written (epoch seconds), None if it is missing."""
    path = absolute(run.database.path)
    try:
        last = path.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        wal = path.with_name(path.name + "-wal").stat()
    except FileNotFoundError:
        return last
    return max(last, wal.st_mtime) if wal.st_size else last


def runs_expire_idle(
    *, now: datetime | None = None, progress: Callable[[Iterator[Run]], Iterator[Run]] = iter
) -> ExpiryResult:
    """Expire this node's active runs that had no write for their tenant's idle timeout.

    Expired runs are closed like completed ones (their database refuses writes) and no longer
    count toward `TENANT_MAX_ACTIVE_RUNS`. Idempotent: run it from Celery beat or cron.
    """
    now = now or timezone.now()
    overrides = Tenant.objects.filter(run_idle_timeout_s__gt=0).aggregate(
        shortest=Min("run_idle_timeout_s")
    )["shortest"]
    timeouts = [t for t in (settings.RUN_IDLE_TIMEOUT, overrides) if t]
    if not timeouts:
        return ExpiryResult(checked=0, expired=[], errors=[])
    # A run younger than the shortest timeout cannot be idle that long: not even stat'ed.
    candidates = (
        Run.objects.filter(
            status=Run.Status.ACTIVE,
            database__home_node=settings.HOME_NODE,
            created_at__lte=now - timedelta(seconds=min(timeouts)),
        )
        .select_related("tenant", "database")
        .order_by("created_at")
    )
    checked, expired, errors = 0, [], []
    for run in progress(candidates.iterator()):
        timeout = run.tenant.idle_timeout_s
        if not timeout or run.created_at > now - timedelta(seconds=timeout):
            continue
        checked += 1
        last = run_last_write(run=run)
        if last is not None and last > now.timestamp() - timeout:
            continue
        try:
            if run_expire(run=run, now=now, timeout_s=timeout):
                expired.append(run.id)
        except (DatabaseUnavailable, DatabaseQuarantined, DatabaseError, OSError) as exc:
            if not isinstance(exc, OSError) and _is_database_fault(exc):
                # Idle, and its database is gone or damaged: it ends in the control plane only.
                with suppress(RunClosed):  # ended by another process meanwhile
                    _end_without_database(
                        run=run, status=Run.Status.EXPIRED, summary=None, now=now, exc=exc
                    )
                    expired.append(run.id)
                continue
            logger.exception("run %s could not be expired; trying again next time", run.id)
            errors.append(run.id)
        except ApplicationError:  # busy, Redis down, lease lost: retryable
            logger.exception("run %s could not be expired; trying again next time", run.id)
            errors.append(run.id)
    return ExpiryResult(checked=checked, expired=expired, errors=errors)


def run_expire(*, run: Run, now: datetime, timeout_s: int) -> bool:
    """Close an idle run's database and mark the run `expired`; False if it was written since.

    The idle check is repeated inside the run's writer (its lease and `BEGIN IMMEDIATE`), so a
    write that raced the first look keeps the run active.
    """

    def close_if_idle() -> tuple[int, int, int] | None:
        # Pages reach the WAL (and its mtime) only at commit: this sees writes before ours.
        last = run_last_write(run=run)
        if last is not None and last > now.timestamp() - timeout_s:
            return None
        return _close(now, Run.Status.EXPIRED)

    counts = writer.write(run, close_if_idle)
    if counts is None:
        return False
    tool_calls, events, version = counts
    _checkpoint(run)
    updated = Run.objects.filter(pk=run.pk, status=Run.Status.ACTIVE).update(
        status=Run.Status.EXPIRED,
        finished_at=now,
        tool_calls=tool_calls,
        events=events,
        state_version=version,
        db_bytes=os.stat(absolute(run.database.path)).st_size,
    )
    run_forget(run=run)
    if updated:
        logger.info("run %s expired after %d s without a write", run.id, timeout_s)
        run_finished.send(sender=Run, run_id=run.id)
    return bool(updated)


# --- Async tool calls (issue 10, decision 0030) ---------------------------------------------------
# A call of a registered tool recorded with `async: true` is `queued`; a worker claims it
# (`running`, `attempts` + 1) and records the outcome of the attempt it claimed, once: every
# transition below is a conditional write through the run's single writer, so a redelivered
# task, a late worker or a cancel racing a worker can never record twice or overwrite a final
# status. The hand-off to a worker happens only after the run database committed the row.


@dataclass(frozen=True)
class Claim:
    call: ToolCall
    attempt: int


def tool_call_enqueue(
    *,
    run: Run,
    name: str,
    args: Any,
    idempotency_key: str | None = None,
    dispatch: bool = True,
) -> tuple[ToolCall, bool]:
    """Record an async call of the registered tool `name` as `queued`; return (call, created).

    The args are checked against the tool's JSON schema first (422 `invalid_args`). Once the
    run database committed the call, it is handed to a worker (Celery, or the embedded pool);
    `dispatch=False` leaves that to the caller (groups and chords: `runs.queue`). The same
    `idempotency_key` with the same name and args returns the call recorded first.
    """
    from runs import queue
    from tools.registry import registry

    _check_name(name, "Tool name")
    tool = registry.get(name)
    check_json_size(args, limit=settings.TOOL_ARGS_MAX_BYTES, what="Tool args")
    tool.check_args(args)
    digest = _digest(name, args)
    if idempotency_key is not None:
        with run_context(run):
            if found := _replay(idempotency_key, digest):
                return found, False

    def work() -> tuple[ToolCall, bool]:
        if idempotency_key is not None and (found := _replay(idempotency_key, digest)):
            return found, False
        alias = router.db_for_write(ToolCall)
        call = insert_row(
            ToolCall,
            using=alias,
            name=name,
            args=args,
            digest=digest,
            idempotency_key=idempotency_key,
            status=ToolCall.Status.QUEUED,
        )
        audit.run_append_row("tool_call", "runs_toolcall", "seq", call.seq)
        return call, True

    # Once the run database committed the call it is handed over by the batch's leader, after
    # the run's lease is released: one message for the async calls the batch committed
    # together (`runs.queue.dispatch_committed`), not one publish per caller inside the run's
    # critical section (decisions 0046, 0056).
    try:
        return writer.write(run, work, after=queue.dispatch_committed if dispatch else None)
    except AfterCommitFailed as exc:
        call, created = exc.result
        failed = exc.__cause__
        sent = isinstance(failed, queue.DispatchFailed) and call.seq not in failed.seqs
        if not created or sent:
            return call, created  # a replay, or a call whose own message went out
        logger.error("tool call %s of run %s could not be queued", call.seq, run.id)
        error = {"code": "dispatch_failed", "message": "The task queue was unreachable."}
        with contextlib.suppress(ApplicationError, DatabaseError):
            tool_call_fail_queued(run=run, seq=call.seq, error=error)
        raise DependencyUnavailable(
            f"Tool call {call.seq} was recorded but the task queue is unreachable; it is marked "
            "failed. Retry with a new idempotency key.",
            seq=call.seq,
        ) from exc.__cause__


def tool_calls_claim(*, run: Run, seqs: list[int]) -> list[Claim]:
    """Mark queued calls (or ones whose worker died: still `running`) as running, attempt+1,
    in one write. The calls that are not the worker's to run (finished, cancelled, not async)
    are left out."""

    def work() -> list[Claim]:
        alias = router.db_for_write(ToolCall)
        claims = []
        for seq in seqs:
            row = update_stored(
                ToolCall,
                using=alias,
                where='"seq" = ? AND "status" IN (?, ?)',
                params=[seq, ToolCall.Status.QUEUED, ToolCall.Status.RUNNING],
                extra_set='"attempts" = "attempts" + 1',
                status=ToolCall.Status.RUNNING,
                started_at=timezone.now(),
            )
            if row is None:
                continue
            audit.run_append_stored("claim", "runs_toolcall", "seq", row)
            call = instance_from_stored(ToolCall, using=alias, row=row)
            claims.append(Claim(call, call.attempts))
        return claims

    return writer.write(run, work)


def tool_calls_settle(
    *, run: Run, outcomes: list[tuple[int, int, Outcome]]
) -> list[ToolCall | None]:
    """Record the outcomes of async calls, each `(seq, attempt, outcome)`, once, in one write.

    A call's entry is None (nothing written for it) unless it is still `running` that attempt:
    cancelled meanwhile, claimed again by a redelivery, or already recorded.
    """
    checked = [(seq, attempt, _result_checked(outcome)) for seq, attempt, outcome in outcomes]

    def work() -> list[ToolCall | None]:
        alias = router.db_for_write(ToolCall)
        recorded: list[ToolCall | None] = []
        for seq, attempt, outcome in checked:
            values: dict[str, Any] = {
                "status": ToolCall.Status.FAILED if outcome.is_error else ToolCall.Status.SUCCEEDED,
                "result": None if outcome.is_error else outcome.result,
                "error": outcome.error if outcome.is_error else None,
                "completed_at": timezone.now(),
                "duration_ms": outcome.duration_ms,
            }
            if outcome.started_at is not None:
                values["started_at"] = outcome.started_at
            row = update_stored(
                ToolCall,
                using=alias,
                where='"seq" = ? AND "status" = ? AND "attempts" = ?',
                params=[seq, ToolCall.Status.RUNNING, attempt],
                **values,
            )
            if row is None:
                recorded.append(None)
                continue
            audit.run_append_stored("outcome", "runs_toolcall", "seq", row)
            recorded.append(instance_from_stored(ToolCall, using=alias, row=row))
        return recorded

    if not checked:
        return []
    return writer.write(run, work)


def _result_checked(outcome: Outcome) -> Outcome:
    """`outcome`, or a `result_too_large` error in its place if its result is over the limit."""
    if outcome.is_error:
        return outcome
    try:
        check_json_size(outcome.result, limit=settings.TOOL_RESULT_MAX_BYTES, what="The result")
    except TooLarge as exc:
        return Outcome(
            error={"code": "result_too_large", "message": exc.message},
            is_error=True,
            started_at=outcome.started_at,
            duration_ms=outcome.duration_ms,
        )
    return outcome


def tool_call_requeue(*, run: Run, seq: int, attempt: int, error: Any) -> bool:
    """Put attempt `attempt` back to `queued` (a retryable failure), keeping its error."""

    def work() -> bool:
        updated = ToolCall.objects.filter(
            seq=seq, status=ToolCall.Status.RUNNING, attempts=attempt
        ).update(status=ToolCall.Status.QUEUED, error=error)
        if updated:
            audit.run_append_row("requeue", "runs_toolcall", "seq", seq)
        return bool(updated)

    return writer.write(run, work)


def tool_call_fail_queued(*, run: Run, seq: int, error: Any) -> bool:
    """Mark a call that never reached a worker as failed with `error`."""

    def work() -> bool:
        updated = ToolCall.objects.filter(seq=seq, status=ToolCall.Status.QUEUED).update(
            status=ToolCall.Status.FAILED, error=error, completed_at=timezone.now()
        )
        if updated:
            audit.run_append_row("outcome", "runs_toolcall", "seq", seq)
        return bool(updated)

    return writer.write(run, work)


def tool_call_cancel(*, run: Run, seq: int) -> tuple[ToolCall, bool]:
    """Cancel a queued or running async call; return (call, whether it was running).

    A cancelled call stays cancelled (a second cancel answers the same); a finished or
    synchronous call is a 409 `not_cancellable`. A worker running it records nothing after.
    """

    def work() -> tuple[ToolCall, bool]:
        call = ToolCall.objects.filter(seq=seq).first()
        if call is None:
            raise NotFound(f"Run {run.id} has no tool call {seq}.")
        if call.status == ToolCall.Status.CANCELLED:
            return call, False
        if call.status not in (ToolCall.Status.QUEUED, ToolCall.Status.RUNNING):
            raise Conflict(
                f"Tool call {seq} is {call.status}; only queued or running async calls can be "
                "cancelled.",
                code="not_cancellable",
            )
        was_running = call.status == ToolCall.Status.RUNNING
        call.status = ToolCall.Status.CANCELLED
        call.error = {"code": "cancelled", "message": "Cancelled by the client."}
        call.completed_at = timezone.now()
        call.save(update_fields=["status", "error", "completed_at"])
        audit.run_append_row("cancel", "runs_toolcall", "seq", seq)
        return call, was_running

    return writer.write(run, work)
