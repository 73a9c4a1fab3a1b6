"""The hand-off of async calls one group commit committed: messages, and a refused one."""

import pytest
from django import db

from project.exceptions import DependencyUnavailable
from runs import queue, services
from runs.models import ToolCall
from tenancy import connections as tenancy_connections
from tenancy.context import run_context
from tests.runs.test_writer_batch import _queued_behind_a_holder
from tools.registry import registry


@pytest.fixture
def run(tenant):
    return services.run_create(tenant=tenant)


def test_messages_hold_at_most_their_count_and_timeouts_adding_up_to_the_maximum(settings):
    timeout = registry.get("echo").timeout_s
    settings.TOOL_CALLS_PER_MESSAGE = 3
    calls = [ToolCall(seq=seq, name="echo") for seq in range(1, 8)]
    assert [[c.seq for c in m] for m in queue._messages(calls)] == [[1, 2, 3], [4, 5, 6], [7]]
    settings.TOOL_MAX_TIMEOUT_S = timeout * 2.5  # two calls' timeouts fit, not three
    assert [[c.seq for c in m] for m in queue._messages(calls)] == [
        [1, 2], [3, 4], [5, 6], [7],
    ]  # fmt: skip


@pytest.mark.django_db(transaction=True)  # the writers' threads read the registry
def test_a_refused_message_fails_its_calls_and_later_ones_only(run, settings, monkeypatch):
    """Six async calls committed together, two a message; the broker takes the first message
    and refuses the second: its calls and the third message's are answered 503 and recorded
    `failed` (`dispatch_failed`); the first message's stay `queued`, handed on."""
    settings.TOOL_CALLS_PER_MESSAGE = 2
    sent: list[list[int]] = []

    def broker(*, run, calls):  # the broker: takes one message, then refuses (the fault)
        if sent:
            raise ConnectionError("the broker refused the message")
        sent.append([call.seq for call in calls])

    monkeypatch.setattr(queue, "dispatch_many", broker)
    answers: dict[int, str] = {}
    errors: list[BaseException] = []

    def record() -> None:
        try:
            call, _ = services.tool_call_enqueue(run=run, name="echo", args={"x": 1})
            answers[call.seq] = call.status
        except DependencyUnavailable as exc:
            answers[exc.extra["seq"]] = "503"
        except BaseException as exc:
            errors.append(exc)
        finally:
            tenancy_connections.close_all()
            db.connections.close_all()

    _queued_behind_a_holder(run, record, 6)
    assert errors == [] and len(sent) == 1 and len(sent[0]) == 2
    first = set(sent[0])
    assert answers == {seq: "queued" if seq in first else "503" for seq in range(1, 7)}
    with run_context(run):
        stored = {call.seq: call for call in ToolCall.objects.all()}
    for seq, call in stored.items():
        if seq in first:
            assert call.status == ToolCall.Status.QUEUED
        else:
            assert call.status == ToolCall.Status.FAILED
            assert call.error["code"] == "dispatch_failed"
