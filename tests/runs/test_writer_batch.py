"""One group-commit batch, in-process: a job that fails on its own rolls back alone."""

import time

import pytest
from django.utils import timezone

from runs import services, writer
from runs.exceptions import RunClosed, StaleVersion
from runs.models import RunInfo, ToolCall
from tenancy.context import run_context

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(tenant):
    return services.run_create(tenant=tenant)


def insert(name: str):
    return lambda: ToolCall.objects.create(name=name, args={}, digest="-").seq


def batch_of(run, *works):
    """Let one leader write `works` as one batch (one transaction), as concurrent callers would."""
    jobs = [writer._Job(work) for work in works]
    writer._commit(run, jobs, time.monotonic() + 5)
    return jobs


def test_a_close_and_a_later_insert_in_one_batch_close_the_run_and_refuse_only_the_insert(run):
    now = timezone.now()
    before, close, after = batch_of(
        run, insert("before"), lambda: services._close(now, "succeeded"), insert("after")
    )
    assert before.committed and before.error is None
    assert close.committed and close.error is None  # the close is not rolled back
    assert isinstance(after.error, RunClosed) and not after.committed
    with run_context(run):
        assert list(ToolCall.objects.values_list("name", flat=True)) == ["before"]
        assert RunInfo.objects.get(id=1).closed_at is not None


def test_a_conflict_in_one_job_keeps_the_others(run):

    def stale():
        raise StaleVersion("stale", current_version=0)

    first, conflict, last = batch_of(run, insert("a"), stale, insert("b"))
    assert isinstance(conflict.error, StaleVersion) and not conflict.committed
    assert first.committed and last.committed
    assert (first.result, last.result) == (1, 2)  # gapless: the failed job took no seq


def test_an_error_with_keyword_only_arguments_reaches_the_caller_intact(run):
    from tenancy.exceptions import SchemaMigrating

    def migrating():
        raise SchemaMigrating("migrating", retry_after_s=7)

    with pytest.raises(SchemaMigrating) as raised:
        writer.write(run, migrating)
    assert raised.value.headers["Retry-After"] == "7"
