"""Async tool calls: hand a queued call to a worker, run it there, record its outcome.

With REDIS_URL a Celery task carries only ids: (tenant id, run id, seq) for one call
(`runs.tool_call_execute`), or (tenant id, run id, seqs) for the calls one group commit
committed together (`runs.tool_calls_execute`, decision 0056). The worker loads the run within
that tenant, binds it (`run_context`), claims the calls through the run's single writer, runs
each tool under its timeout and records the outcome of the attempt it claimed
(`runs.services`). Embedded (no REDIS_URL) the same `execute` runs on a small thread pool in
the process that recorded the call, so the states are the same with no broker.

Timeouts: in a worker's main thread (Celery prefork or solo) a SIGALRM interrupts the tool at
its deadline (the calls of a message run one after the other there); elsewhere (the threads
pool, the embedded pool) each tool runs in its own thread and the call is recorded `timeout`
at the deadline while that thread is abandoned. Celery's soft and hard time limits stand
behind both (the timeouts + TOOL_KILL_GRACE_S, and twice that)."""

import collections
import concurrent.futures
import contextlib
import contextvars
import functools
import json
import logging
import random
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from queue import Empty, SimpleQueue
from typing import Any

import kombu.exceptions
import redis
from billiard.pool import soft_timeout_sighandler as billiard_soft_timeout
from celery import chord
from celery.canvas import Signature
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import task_prerun, worker_process_init
from django.conf import settings
from django.db import DatabaseError, connections
from django.utils import timezone

from project.exceptions import ApplicationError, Unavailable
from project.memo import Memo
from runs import selectors, services, waiters
from runs.exceptions import RunClosed
from runs.models import Run, ToolCall
from tenancy import connections as tenant_connections
from tenancy.context import run_context
from tools.exceptions import RetryableToolError, ToolCancelled, ToolTimeout, UnknownTool
from tools.registry import Tool, ToolContext, registry

logger = logging.getLogger(__name__)


def task_id(run_id: str, seq: int) -> str:
    """The Celery task id of a call: the same across retries, so a cancel can revoke it."""
    return f"toolcall-{run_id}-{seq}"


def backoff_s(attempt: int) -> float:
    """Seconds before retry number `attempt` (1, 2, ...): exponential, capped, jittered."""
    ceiling = min(
        settings.TOOL_RETRY_BACKOFF_MAX_S, settings.TOOL_RETRY_BACKOFF_S * 2 ** (attempt - 1)
    )
    return ceiling * random.uniform(0.5, 1.0)  # jitter, not security


# --- Hand-off ------------------------------------------------------------------------------------


def signature(*, run: Run, seq: int, tool: Tool) -> Signature:
    """The Celery signature running call `seq` of `run` (for groups and chords too)."""
    from runs.tasks import tool_call_execute

    return tool_call_execute.si(run.tenant_id, run.id, seq).set(**_options(run, seq, tool))


def _options(run: Run, seq: int, tool: Tool | None) -> dict[str, Any]:
    if tool is None:  # no longer registered: the worker records it failed (`unknown_tool`)
        return {"task_id": task_id(run.id, seq)}
    soft = tool.timeout_s + settings.TOOL_KILL_GRACE_S
    return {"task_id": task_id(run.id, seq), "soft_time_limit": soft, "time_limit": soft * 2}


def dispatch(*, run: Run, seq: int, tool: Tool | None) -> None:
    """Hand a committed `queued` call to a worker: Celery, or the embedded pool."""
    if settings.REDIS_URL:
        from runs.tasks import tool_call_execute

        # The task's own apply_async: what `signature(...).apply_async()` ends in, without
        # building and copying a Signature per call. The arguments' repr (shown in the
        # worker's log and in task events) is given: Celery's saferepr of three scalars cost
        # ~30 us of a ~250-270 us publish.
        args = (run.tenant_id, run.id, seq)
        tool_call_execute.apply_async(
            args, argsrepr=repr(args), kwargsrepr="{}", **_options(run, seq, tool)
        )
    else:
        _pool().submit(_run_embedded, run.tenant_id, run.id, seq)


class DispatchFailed(Exception):
    """Some of the calls `dispatch_committed` was given could not be handed on: `seqs`."""

    def __init__(self, seqs: list[int]) -> None:
        super().__init__(list(seqs))  # as given: the exception copies itself from its args
        self.seqs = set(seqs)

    def __str__(self) -> str:
        return f"tool calls {sorted(self.seqs)} could not be handed to a worker"


def dispatch_committed(run: Run, results: list[tuple[ToolCall, bool]]) -> None:
    """The writer's after-commit hook of `services.tool_call_enqueue`: hand the calls one batch
    created (`(call, created)` pairs) to the workers, in messages of at most
    TOOL_CALLS_PER_MESSAGE calls whose timeouts add up to at most TOOL_MAX_TIMEOUT_S. Raises
    `DispatchFailed` with the calls of the messages that could not be published."""
    failed: list[int] = []
    for calls in _messages([call for call, created in results if created]):
        if failed:  # the broker refused a message: the next ones are not tried (and waited for)
            failed += [call.seq for call in calls]
            continue
        try:
            dispatch_many(run=run, calls=calls)
        except Exception:
            logger.exception("tool calls of run %s could not be queued", run.id)
            failed += [call.seq for call in calls]
    if failed:
        raise DispatchFailed(failed)


def _messages(calls: list[ToolCall]) -> Iterator[list[ToolCall]]:
    """`calls` in messages: a prefork worker runs a message's calls one after the other, so
    their timeouts add up, and a task running past TASK_VISIBILITY_TIMEOUT_S (kept above
    TOOL_MAX_TIMEOUT_S) would be delivered a second time."""
    message: list[ToolCall] = []
    total = 0.0
    for call in calls:
        tool = _registered(call.name)
        timeout = tool.timeout_s if tool is not None else 0.0
        if message and (
            len(message) == settings.TOOL_CALLS_PER_MESSAGE
            or total + timeout > settings.TOOL_MAX_TIMEOUT_S
        ):
            yield message
            message, total = [], 0.0
        message.append(call)
        total += timeout
    if message:
        yield message


def dispatch_many(*, run: Run, calls: list[ToolCall]) -> None:
    """Hand committed `queued` calls of one run to a worker in one message (one call: the
    single-call task). The message lists each call's own task id in its `tool_calls` header,
    so the broker is read for lost hand-offs by call (`tasks_in_broker`)."""
    if len(calls) == 1 or not settings.REDIS_URL:
        for call in calls:
            dispatch(run=run, seq=call.seq, tool=_registered(call.name))
        return
    from runs.tasks import tool_calls_execute

    seqs = [call.seq for call in calls]
    tools = [_registered(call.name) for call in calls]
    # The calls run at once (`execute_many`), one after the other in a prefork child (a claim
    # and a record each): the limits allow the sum of their timeouts, and a grace each.
    soft = sum(tool.timeout_s + settings.TOOL_KILL_GRACE_S for tool in tools if tool is not None)
    soft = max(soft, settings.TOOL_KILL_GRACE_S)
    args = (run.tenant_id, run.id, seqs)
    tool_calls_execute.apply_async(
        args,
        argsrepr=repr(args),
        kwargsrepr="{}",
        task_id=f"toolcalls-{run.id}-{seqs[0]}-{seqs[-1]}",
        headers={"tool_calls": [task_id(run.id, seq) for seq in seqs]},
        soft_time_limit=soft,
        time_limit=soft * 2,
    )


def dispatch_later(*, run: Run, seq: int, tool: Tool | None, countdown: float) -> None:
    """Hand call `seq` to a worker again in `countdown` seconds (a retry of a call that came in
    a message of several). If the broker refuses, the call stays queued: `redispatch_lost`
    sends it again."""
    from runs.tasks import tool_call_execute

    try:
        tool_call_execute.apply_async(
            (run.tenant_id, run.id, seq), countdown=countdown, **_options(run, seq, tool)
        )
    except _BROKER_ERRORS as exc:
        logger.warning("tool call %s of run %s: retry not queued: %s", seq, run.id, exc)


def _registered(name: str) -> Tool | None:
    try:
        return registry.get(name)
    except UnknownTool:
        return None


def tool_calls_chord(
    *, run: Run, calls: list[tuple[str, Any]], kind: str = "tool_calls.gathered"
) -> list[ToolCall]:
    """Record `calls` (name, args) as queued, run them in parallel, and when all are done append
    one event `kind` with their outcomes to the run (a Celery chord; needs REDIS_URL)."""
    from runs.tasks import tool_calls_gather

    recorded = [
        services.tool_call_enqueue(run=run, name=name, args=args, dispatch=False)[0]
        for name, args in calls
    ]
    header = [signature(run=run, seq=call.seq, tool=registry.get(call.name)) for call in recorded]
    chord(header)(tool_calls_gather.s(tenant_id=run.tenant_id, run_id=run.id, kind=kind))
    return recorded


def tool_call_cancel(*, run: Run, seq: int) -> ToolCall:
    """Cancel a queued or running call, stop its worker if it can, and wake its waiters."""
    call, was_running = services.tool_call_cancel(run=run, seq=seq)
    if was_running:
        if settings.REDIS_URL:
            from project.celery import app

            # SIGUSR1 is Celery's soft time limit: the tool is interrupted; its outcome is not
            # recorded (the call is cancelled).
            app.control.revoke(task_id(run.id, seq), terminate=True, signal="SIGUSR1")
        else:
            _cancel_local(run.id, seq)
    waiters.notify(run.id, seq)
    return call


# --- Lost hand-offs -----------------------------------------------------------------------------
#
# A queued call's message can be lost after the call committed: the process died between the
# commit and the publish; a worker was killed between taking the message off the queue (BRPOP)
# and recording it as unacknowledged (kombu's Redis transport: the only unguarded window); Redis
# restarted (it may keep nothing on disk); a worker gave up retrying a busy writer.
# `redispatch_lost`, run by Celery beat and `manage.py redispatch_calls`, asks the broker itself:
# a queued call older than a grace (the time between a commit and its publish) whose task is
# neither waiting in a queue nor held unacknowledged by a worker, at two readings
# REDISPATCH_CONFIRM_S apart (a live worker records a message unacknowledged within milliseconds
# of taking it), is handed to a worker again (decisions 0050, 0053).

REDISPATCH_CONFIRM_S = 2.0
# The broker is read whole (one MULTI), so only while it is small: a backed-up queue is left
# alone until it drains (its calls are not lost, just waiting), and Redis is never stalled by a
# reply of many megabytes.
BROKER_READ_MAX_MESSAGES = 10_000
BROKER_READ_TIMEOUT_S = 10.0
# What reading or publishing to the broker raises when Redis is unreachable or refuses.
_BROKER_ERRORS = (redis.RedisError, OSError, kombu.exceptions.OperationalError)


class BrokerBackedUp(Exception):
    """The broker holds more messages than `tasks_in_broker` reads."""


def _task_ids_of(payload: Any) -> list[str]:
    """The Celery task id of a message as kombu stores it (protocol 2 keeps it in the headers),
    and the task ids of the calls a message of several calls carries (`dispatch_many`)."""
    try:
        headers = payload["headers"]
        ids = [headers["id"], *headers.get("tool_calls", ())]
    except (KeyError, TypeError, AttributeError):
        return []
    return [task for task in ids if isinstance(task, str)]


@dataclass(frozen=True)
class _BrokerLayout:
    client: redis.Redis
    lists: list[str]  # every priority list of every queue of the app
    unacked: str


@functools.cache
def _broker_layout() -> _BrokerLayout:
    """Where kombu keeps the app's messages (its Redis layout; fixed for a process's life) and
    a client to read them with, bounded by BROKER_READ_TIMEOUT_S."""
    from project.celery import app

    with app.connection_for_read() as conn:
        channel = conn.default_channel
        prefix = channel.global_keyprefix or ""
        lists = [
            prefix + channel._q_for_pri(queue, priority)
            for queue in list(app.amqp.queues)
            for priority in channel.priority_steps
        ]
        unacked = prefix + channel.unacked_key
    client = redis.Redis.from_url(
        settings.CELERY_BROKER_URL,
        socket_timeout=BROKER_READ_TIMEOUT_S,
        socket_connect_timeout=settings.REDIS_SOCKET_TIMEOUT_S,
    )
    return _BrokerLayout(client, lists, unacked)


def tasks_in_broker() -> set[str]:
    """The ids of every task waiting in one of the app's queues or held unacknowledged by a
    worker (for a message of several calls, each call's own task id too), read in one MULTI:
    one instant of the broker, so a message moving from its queue to a worker's unacknowledged
    set is seen in one of the two. Raises `BrokerBackedUp` past BROKER_READ_MAX_MESSAGES."""
    broker = _broker_layout()
    pipe = broker.client.pipeline(transaction=False)
    for key in broker.lists:
        pipe.llen(key)
    pipe.hlen(broker.unacked)
    held = sum(pipe.execute())
    if held > BROKER_READ_MAX_MESSAGES:
        raise BrokerBackedUp(
            f"the broker holds {held} messages (more than {BROKER_READ_MAX_MESSAGES}); lost "
            "calls are looked for once it drains"
        )
    pipe = broker.client.pipeline(transaction=True)
    for key in broker.lists:
        pipe.lrange(key, 0, -1)
    pipe.hvals(broker.unacked)
    *queued, unacked = pipe.execute()
    found: set[str] = set()
    for raw in (message for messages in queued for message in messages):
        with contextlib.suppress(ValueError):
            found.update(_task_ids_of(json.loads(raw)))
    for raw in unacked:  # kombu keeps [message, exchange, routing key]
        with contextlib.suppress(ValueError, TypeError, IndexError, KeyError):
            found.update(_task_ids_of(json.loads(raw)[0]))
    return found


@dataclass
class Redispatched:
    """What `redispatch_lost` did: active runs read, calls handed on again, runs not read."""

    checked: int = 0
    dispatched: list[tuple[str, int]] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Queued:
    run: Run
    seq: int
    name: str
    attempts: int


def _queued_calls(run: Run, cutoff: Any, seqs: Iterable[int] | None = None) -> list[_Queued]:
    with run_context(run):
        calls = ToolCall.objects.filter(status=ToolCall.Status.QUEUED, created_at__lte=cutoff)
        if seqs is not None:
            calls = calls.filter(seq__in=list(seqs))
        return [
            _Queued(run, seq, name, attempts)
            for seq, name, attempts in calls.values_list("seq", "name", "attempts")
        ]


def redispatch_lost(
    *,
    min_age_s: float | None = None,
    tenant_slug: str | None = None,
    dry_run: bool = False,
    progress: Callable[[Iterable[Run]], Iterable[Run]] = iter,
    confirm_s: float = REDISPATCH_CONFIRM_S,
) -> Redispatched:
    """Hand again every queued call of this node's active runs, recorded at least `min_age_s`
    ago (default TOOL_REDISPATCH_GRACE_S), whose task the broker has neither in a queue nor
    unacknowledged at two readings `confirm_s` apart; `dry_run`: only list them. Needs REDIS_URL
    (embedded, calls live in a process's pool and nothing else can tell them lost)."""
    if not settings.REDIS_URL:
        raise RuntimeError("Lost hand-offs are found through Redis; REDIS_URL is not set.")
    if min_age_s is None:
        min_age_s = settings.TOOL_REDISPATCH_GRACE_S
    cutoff = timezone.now() - timedelta(seconds=min_age_s)
    runs = Run.objects.filter(status=Run.Status.ACTIVE, database__home_node=settings.HOME_NODE)
    if tenant_slug is not None:
        runs = runs.filter(tenant__slug=tenant_slug)
    done = Redispatched()
    candidates: list[_Queued] = []
    for run in progress(
        runs.select_related("tenant", "database").order_by("created_at").iterator()
    ):
        done.checked += 1
        try:
            candidates += _queued_calls(run, cutoff)
        except (ApplicationError, DatabaseError, OSError) as exc:
            logger.warning("run %s: lost hand-offs not checked: %s", run.id, exc)
            done.errors[run.id] = f"{type(exc).__name__}: {exc}"
    if not candidates:
        return done
    try:
        present = tasks_in_broker()
        suspects = [c for c in candidates if task_id(c.run.id, c.seq) not in present]
        if not suspects:
            return done
        time.sleep(confirm_s)  # a message a live worker is taking shows up unacknowledged
        present = tasks_in_broker()
    except BrokerBackedUp as exc:
        logger.warning("lost hand-offs not looked for: %s", exc)
        for call in candidates:
            done.errors[call.run.id] = str(exc)
        return done
    except _BROKER_ERRORS as exc:
        logger.warning("lost hand-offs not looked for: the broker could not be read: %s", exc)
        for call in candidates:
            done.errors[call.run.id] = f"the broker could not be read: {type(exc).__name__}: {exc}"
        return done
    by_run: dict[str, list[_Queued]] = collections.defaultdict(list)
    for call in suspects:
        by_run[call.run.id].append(call)
    for calls in by_run.values():
        try:
            _send_again(calls, cutoff, present, dry_run, done)
        except (ApplicationError, DatabaseError, *_BROKER_ERRORS) as exc:
            logger.warning("run %s: lost hand-offs not sent: %s", calls[0].run.id, exc)
            done.errors[calls[0].run.id] = f"{type(exc).__name__}: {exc}"
    return done


def _send_again(
    suspects: list[_Queued], cutoff: Any, present: set[str], dry_run: bool, done: Redispatched
) -> None:
    """Send again the suspects of one run that are still queued, not claimed meanwhile (same
    attempts) and still nowhere in the broker (`present`, its second reading): lost."""
    run, before = suspects[0].run, {call.seq: call.attempts for call in suspects}
    for call in _queued_calls(run, cutoff, before):
        if call.attempts != before[call.seq] or task_id(run.id, call.seq) in present:
            continue
        if not dry_run:
            dispatch(run=run, seq=call.seq, tool=_registered(call.name))
            logger.warning(
                "tool call %s of run %s had lost its message: sent again", call.seq, run.id
            )
        done.dispatched.append((run.id, call.seq))


def tool_call_wait(*, run: Run, seq: int, wait_s: float) -> ToolCall:
    """Return call `seq` once final, or as it is after `wait_s` seconds (a bounded long poll)."""
    with waiters.hub.waiting(run.id, seq) as event:
        call = selectors.tool_call_get(run=run, seq=seq)
        if event is None or wait_s <= 0 or call.status in ToolCall.TERMINAL:
            return call
        if call.status == ToolCall.Status.PENDING:
            return call  # synchronous: the agent records its outcome; nothing to wait for
        event.wait(wait_s)
        return selectors.tool_call_get(run=run, seq=seq)


# --- Execution (worker side) ---------------------------------------------------------------------


@dataclass
class Execution:
    """What one delivery of a call did; the task's result (chords gather these)."""

    seq: int
    status: str
    result: Any = None
    error: Any = None
    retry_in: float | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("retry_in")
        return out


# Runs by (tenant id, run id), memoised like the API's lookups (`project.memo`): a worker takes
# many calls of one run in a row. A run completed meanwhile still looks active for a few
# seconds here, but its database's triggers refuse the claim (RunClosed): nothing runs.
_runs: Memo[Run] = Memo()


def load_run(*, tenant_id: str, run_id: str) -> Run | None:
    """The run `run_id` of tenant `tenant_id` (both must match), with tenant and database."""
    return _runs.get_or_load(
        (tenant_id, run_id),
        lambda: (
            Run.objects.select_related("tenant", "database")
            .filter(id=run_id, tenant_id=tenant_id)
            .first()
        ),
    )


def execute(*, tenant_id: str, run_id: str, seq: int) -> Execution:
    """Run call `seq` of the run if it is the worker's to run, and record the outcome once.

    A call already finished or cancelled is not run again (a redelivery); one still `running`
    lost its worker (kill -9) and runs again as the next attempt.
    """
    run = load_run(tenant_id=tenant_id, run_id=run_id)
    if run is None:
        logger.warning("tool call %s: no run %s of tenant %s; dropped", seq, run_id, tenant_id)
        return Execution(seq, "missing")
    claims = _claim(run, [seq])
    if not claims:
        return _as_is(run, seq)
    attempt = _Attempt(run, claims[0])
    with _running(run.id, seq, attempt.ctx), run_context(run):
        attempt.run()
    return _record(run, [attempt])[0]


def execute_many(*, tenant_id: str, run_id: str, seqs: list[int]) -> list[Execution]:
    """`execute` for calls of one run handed over in one message (`dispatch_many`).

    On the threads pool the calls are claimed in one write and run at once; each outcome is
    recorded as soon as its call ends (the calls that end together in one write and one
    notification). In a worker's main thread (a prefork child) each call is claimed just before
    it runs, one after the other under SIGALRM: a call cancelled while it waits its turn is not
    run, and one the child never reached stays `queued` (found again by `redispatch_lost` if
    the message is lost). A call that is not the worker's to run (finished, cancelled) is
    skipped: the executions returned are those of the calls it ran. A retryable failure is
    sent again on its own, after its backoff.
    """
    run = load_run(tenant_id=tenant_id, run_id=run_id)
    if run is None:
        logger.warning("tool calls %s: no run %s of tenant %s; dropped", seqs, run_id, tenant_id)
        return []
    if threading.current_thread() is threading.main_thread():
        done: list[Execution] = []
        for seq in seqs:
            for claim in _claim(run, [seq]):
                attempt = _Attempt(run, claim)
                with _running(run.id, seq, attempt.ctx), run_context(run):
                    attempt.run()
                done += _record(run, [attempt], resend=True)
        return done
    ended: SimpleQueue[_Attempt] = SimpleQueue()
    attempts = [_Attempt(run, claim, ended) for claim in _claim(run, seqs)]
    with contextlib.ExitStack() as stack:
        for attempt in attempts:
            stack.enter_context(_running(run.id, attempt.seq, attempt.ctx))
        stack.enter_context(run_context(run))
        return _run_at_once(run, attempts, ended)


def _run_at_once(
    run: Run, attempts: list["_Attempt"], ended: "SimpleQueue[_Attempt]"
) -> list[Execution]:
    """Start every attempt, record each group that ends together as it ends. An outcome the
    writer could not take (busy, Redis down) is tried again with the next group, and last once
    every tool has ended: a retry of the message (what a last failure raises) never runs a
    tool again while it still runs here."""
    for attempt in attempts:
        attempt.start()
    done: list[Execution] = []
    unrecorded: list[_Attempt] = []
    running = set(attempts)
    while running:
        finished = _ended(ended, running)
        for attempt in finished:
            attempt.finish()
        running.difference_update(finished)
        try:
            done += _record(run, unrecorded + finished, resend=True)
            unrecorded = []
        except Unavailable:
            logger.warning("run %s: outcomes not recorded yet; trying again", run.id)
            unrecorded += finished
    if unrecorded:
        done += _record(run, unrecorded, resend=True)
    return done


def _ended(ended: "SimpleQueue[_Attempt]", running: set["_Attempt"]) -> list["_Attempt"]:
    """Wait until some of `running` ended (or were cancelled) or reached their deadline; return
    all of those."""
    found = []
    with contextlib.suppress(Empty):
        found.append(ended.get(timeout=min(attempt.ctx.remaining() for attempt in running)))
    with contextlib.suppress(Empty):
        while True:
            found.append(ended.get_nowait())
    found += [attempt for attempt in running if attempt.ctx.remaining() <= 0]
    return [attempt for attempt in dict.fromkeys(found) if attempt in running]


def _claim(run: Run, seqs: list[int]) -> list[services.Claim]:
    if not run.is_active:
        return []
    try:
        return services.tool_calls_claim(run=run, seqs=seqs)
    except RunClosed:
        return []


class _Ended(threading.Event):
    """A call's `ctx.cancelled` in a message of several: set when its tool ends or the call is
    cancelled, and then reported to the message's `ended` queue (`_ended`)."""

    def __init__(self, ended: "SimpleQueue[_Attempt]", attempt: "_Attempt") -> None:
        super().__init__()
        self._ended, self._attempt = ended, attempt

    def set(self) -> None:
        super().set()
        self._ended.put(self._attempt)


class _Attempt:
    """One claimed attempt of a call, run under its tool's timeout; its outcome once run."""

    def __init__(
        self, run: Run, claim: services.Claim, ended: "SimpleQueue[_Attempt] | None" = None
    ) -> None:
        self.seq, self.call, self.number = claim.call.seq, claim.call, claim.attempt
        self.retryable, self.result = False, None
        self.error: dict[str, Any] | None = None
        self.thread: _ToolThread | None = None
        self.tool: Tool | None
        try:
            self.tool = registry.get(self.call.name)
        except UnknownTool as exc:
            self.tool, self.error = None, _error(exc)
        # Set when the tool ends or the call is cancelled; with `ended`, that also reports it.
        flag = threading.Event() if ended is None else _Ended(ended, self)
        self.ctx = ToolContext(
            tenant=run.tenant, run=run, seq=self.seq, attempt=self.number, deadline=0.0
        )
        self.ctx.cancelled = flag
        if self.tool is None and ended is not None:
            ended.put(self)  # nothing to run: it ends at once
        self._begin()
        self.duration_ms = 0.0

    def _begin(self) -> None:
        """Start the clocks: the timings and the tool's deadline count from here."""
        self.started_at, self.started = timezone.now(), time.monotonic()
        if self.tool is not None:
            self.ctx.deadline = self.started + self.tool.timeout_s

    def run(self) -> None:
        """Run the tool here (SIGALRM in the main thread) or in a thread of its own."""
        self._begin()
        self._outcome(lambda tool: _call(tool, self.call.args, self.ctx))

    def start(self) -> None:
        """Start the tool in a thread of its own; `finish` takes its outcome."""
        self._begin()
        if self.tool is not None:
            self.thread = _ToolThread(self.tool, self.call.args, self.ctx)

    def finish(self) -> None:
        """The outcome of the tool `start` started: at once if it ended or was cancelled,
        else when its deadline passes (a timeout)."""
        thread = self.thread
        if thread is not None:
            self._outcome(lambda tool: thread.outcome())

    def _outcome(self, call: Callable[[Tool], Any]) -> None:
        tool = self.tool
        if tool is not None:
            try:
                self.result = call(tool)
            except RetryableToolError as exc:
                self.error, self.retryable = _error(exc), True
            except (SoftTimeLimitExceeded, ToolTimeout):
                self.error = {
                    "code": ToolTimeout.code,
                    "message": f"Tool {tool.name!r} ran past its timeout of {tool.timeout_s:g} s.",
                }
            except ApplicationError as exc:
                self.error = _error(exc)
            except Exception as exc:
                logger.exception(
                    "tool %s failed (run %s, call %s)", tool.name, self.ctx.run.id, self.seq
                )
                message = f"{type(exc).__name__}: {exc}"[:2000]
                self.error = {"code": "tool_error", "message": message}
        self.duration_ms = (time.monotonic() - self.started) * 1000

    def outcome(self) -> services.Outcome:
        if self.error is None:
            return services.Outcome(
                result=self.result, started_at=self.started_at, duration_ms=self.duration_ms
            )
        return services.Outcome(
            error=self.error,
            is_error=True,
            started_at=self.started_at,
            duration_ms=self.duration_ms,
        )


def _record(run: Run, attempts: list[_Attempt], *, resend: bool = False) -> list[Execution]:
    """Record the attempts' outcomes in one write (a retryable failure within its tool's retries
    goes back to `queued` instead, and with `resend` is sent again at once, due after its
    backoff) and wake their waiters in one notification."""
    done: dict[int, Execution] = {}
    settle: list[_Attempt] = []
    for attempt in attempts:
        tool = attempt.tool
        if (
            attempt.retryable
            and tool is not None
            and attempt.number <= tool.max_retries
            and services.tool_call_requeue(
                run=run, seq=attempt.seq, attempt=attempt.number, error=attempt.error
            )
        ):
            retry_in = backoff_s(attempt.number)
            if resend:
                dispatch_later(run=run, seq=attempt.seq, tool=tool, countdown=retry_in)
            done[attempt.seq] = Execution(
                attempt.seq, ToolCall.Status.QUEUED, error=attempt.error, retry_in=retry_in
            )
        else:
            settle.append(attempt)
    recorded = services.tool_calls_settle(
        run=run, outcomes=[(a.seq, a.number, a.outcome()) for a in settle]
    )
    for attempt, call in zip(settle, recorded, strict=True):
        if call is None:
            done[attempt.seq] = _as_is(run, attempt.seq)
        else:
            done[attempt.seq] = Execution(
                attempt.seq, call.status, result=call.result, error=call.error
            )
    waiters.notify_many(
        run.id, [a.seq for a, call in zip(settle, recorded, strict=True) if call is not None]
    )
    return [done[attempt.seq] for attempt in attempts]


def _as_is(run: Run, seq: int) -> Execution:
    with run_context(run):
        call = ToolCall.objects.filter(seq=seq).first()
    if call is None:
        return Execution(seq, "missing")
    return Execution(seq, call.status, result=call.result, error=call.error)


def _error(exc: ApplicationError) -> dict[str, Any]:
    return {"code": exc.code, "message": exc.message}


class _Alarm(BaseException):
    """Raised by SIGALRM in the tool's frame: a BaseException, so `except Exception` in a tool
    cannot swallow its own timeout."""


def _call(tool: Tool, args: Any, ctx: ToolContext) -> Any:
    """Run the tool, stopping it at `ctx.deadline` (see the module's docstring); a call
    cancelled before its tool starts (while it waited its turn) does not start."""
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        return _call_with_alarm(tool, args, ctx)
    if ctx.cancelled.is_set():
        raise ToolCancelled("The call was cancelled before it ran.")
    return _call_in_thread(tool, args, ctx)


def _call_with_alarm(tool: Tool, args: Any, ctx: ToolContext) -> Any:
    global _in_tool

    def alarm(signum: int, frame: Any) -> None:
        raise _Alarm()

    previous = signal.signal(signal.SIGALRM, alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, max(ctx.remaining(), 0.001))
        try:
            _in_tool = ctx
            if ctx.cancelled.is_set():  # checked once `_in_tool` names it: a cancel signals
                raise ToolCancelled("The call was cancelled before it ran.")
            return tool.function(args, ctx)
        finally:
            _in_tool = None
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Alarm:
        raise ToolTimeout("timeout") from None
    finally:
        signal.signal(signal.SIGALRM, previous)


# SIGUSR1 in a prefork child: Celery's soft time limit, a cancel's revoke, and a cancel of a call
# that came in a message of several (`_cancel_local`, which names its call). billiard raises
# SoftTimeLimitExceeded wherever the child is; raised while the child claims or records calls,
# it would leave the run's lease held (a Redis reply half read) and block every writer of the
# run until the lease's TTL. `_soft_interrupt` raises it only while a tool runs
# (`_call_with_alarm`), and for a named call only while that call's tool runs; elsewhere it is
# ignored (the call's status decides what is recorded, and Celery's hard time limit still ends a
# task stuck outside its tool).
_in_tool: ToolContext | None = None  # the call whose tool a prefork child's main thread runs
_interrupt_for: ToolContext | None = None  # the call a cancel's SIGUSR1 is for


def _soft_interrupt(signum: int, frame: Any) -> None:
    global _interrupt_for
    target, _interrupt_for = _interrupt_for, None
    if _in_tool is not None and (target is None or target is _in_tool):
        raise SoftTimeLimitExceeded()


def _interrupt_main_thread(ctx: ToolContext) -> None:
    """Interrupt the tool of `ctx` if this process's main thread runs it under `_soft_interrupt`
    (a prefork child): a non-cooperative tool stops at once instead of at its timeout."""
    global _interrupt_for
    if _in_tool is ctx and signal.getsignal(signal.SIGUSR1) is _soft_interrupt:
        _interrupt_for = ctx
        signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)  # type: ignore[arg-type]


def _interrupt_only_tools(**_: Any) -> None:
    """Before each task of a prefork child: put `_soft_interrupt` in place of billiard's (which
    billiard installs after `worker_process_init`, so not there)."""
    if signal.getsignal(signal.SIGUSR1) is billiard_soft_timeout:
        signal.signal(signal.SIGUSR1, _soft_interrupt)


@worker_process_init.connect
def _in_a_prefork_child(**_: Any) -> None:
    """Only prefork children take `_interrupt_only_tools` before each task: a receiver of
    `task_prerun` makes Celery send it for every task, on the threads pool too."""
    task_prerun.connect(_interrupt_only_tools, weak=False)


def _call_in_thread(tool: Tool, args: Any, ctx: ToolContext) -> Any:
    return _ToolThread(tool, args, ctx).outcome()


class _ToolThread:
    """A tool running in a thread of its own, with the caller's context (the bound tenant and
    run); `outcome` waits until it ends, its deadline passes or it is cancelled."""

    def __init__(self, tool: Tool, args: Any, ctx: ToolContext) -> None:
        self.tool, self.ctx = tool, ctx
        self.box: dict[str, Any] = {}
        self.finished = threading.Event()
        context = contextvars.copy_context()

        def target() -> None:
            try:
                self.box["result"] = context.run(tool.function, args, ctx)
            except BaseException as exc:
                self.box["error"] = exc
            finally:
                self.finished.set()
                ctx.cancelled.set()  # wakes the watcher in `outcome` if it still waits
                tenant_connections.give_back()  # to the process's pool: this thread ends
                connections.close_all()

        threading.Thread(target=target, name=f"tool-{tool.name}", daemon=True).start()

    def outcome(self) -> Any:
        # Set by the tool's end (above) or by a cancel; else the deadline passes.
        cancelled = self.ctx.cancelled.wait(self.ctx.remaining())
        if not self.finished.is_set():
            self.ctx.cancelled.set()  # a cooperative tool (ctx.wait) stops; any other runs on
            if not cancelled:
                raise ToolTimeout("timeout")
            raise ToolCancelled("The call was cancelled while running.")
        if "error" in self.box:
            error = self.box["error"]
            if isinstance(error, Exception):
                raise error
            # SystemExit and the like end the tool's own thread, not the worker: a tool error.
            raise RuntimeError(f"the tool raised {type(error).__name__}: {error}") from error
        return self.box["result"]


# This process's running calls, for cancel: set their context's event. Embedded, the cancel
# comes from this process; in a Celery worker, from the outcome notifications (`runs.waiters`):
# a call that reached a final status elsewhere (cancelled) is stopped here; a prefork child's
# running tool is interrupted (the revoke, or `_interrupt_main_thread` for a call that came in a
# message of several, whose task id is the message's).
# Notifications of calls not running here are kept for a moment (the last RECENT_DONE), so a
# cancel that landed between a claim and the tool's start still stops it.
RECENT_DONE = 4096
_running_calls: dict[tuple[str, int], ToolContext] = {}
_recent_done: "collections.OrderedDict[tuple[str, int], None]" = collections.OrderedDict()
_running_lock = threading.Lock()
_watching = False


@contextmanager
def _running(run_id: str, seq: int, ctx: ToolContext) -> Iterator[None]:
    key = (run_id, seq)
    if settings.REDIS_URL:
        _watch_cancels()
    with _running_lock:
        _running_calls[key] = ctx
        if key in _recent_done:
            ctx.cancelled.set()
    try:
        yield
    finally:
        with _running_lock:
            _running_calls.pop(key, None)


def _cancel_local(run_id: str, seq: int) -> None:
    key = (run_id, seq)
    with _running_lock:
        ctx = _running_calls.get(key)
        if ctx is None:
            _recent_done[key] = None
            if len(_recent_done) > RECENT_DONE:
                _recent_done.popitem(last=False)
    if ctx is not None:
        ctx.cancelled.set()
        if threading.current_thread() is not threading.main_thread():
            _interrupt_main_thread(ctx)


def _watch_cancels() -> None:
    """Subscribe this process to cancels once, however many threads start calls at once."""
    global _watching
    with _running_lock:
        if _watching:
            return
        _watching = True
    waiters.hub.watch(_cancel_local)


_executor: concurrent.futures.ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:  # created on first use: after gunicorn forked this worker
            _executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=settings.TOOL_EMBEDDED_WORKERS, thread_name_prefix="tool-calls"
            )
        return _executor


def _run_embedded(tenant_id: str, run_id: str, seq: int, retries: int = 0) -> None:
    try:
        done = execute(tenant_id=tenant_id, run_id=run_id, seq=seq)
        retry_in = done.retry_in
    except ApplicationError as exc:  # the writer was busy or unreachable: try again later
        if retries >= 20:
            logger.error("tool call %s of run %s: giving up after %d retries", seq, run_id, retries)
            return
        logger.warning("tool call %s of run %s: %s; retrying", seq, run_id, exc.message)
        retry_in = backoff_s(retries + 1)
    except Exception:
        logger.exception("tool call %s of run %s failed in the embedded pool", seq, run_id)
        return
    finally:
        tenant_connections.give_back()  # as at the end of a Celery task
    if retry_in is not None:
        timer = threading.Timer(
            retry_in, lambda: _pool().submit(_run_embedded, tenant_id, run_id, seq, retries + 1)
        )
        timer.daemon = True
        timer.start()
