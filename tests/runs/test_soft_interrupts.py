"""SIGUSR1 in a prefork child (Celery's soft time limit, a cancel's revoke) interrupts a running
tool only: raised while the child claims or records calls, it could leave the run's lease held."""

import os
import signal
import threading
import time

import pytest
from billiard.pool import soft_timeout_sighandler
from celery.exceptions import SoftTimeLimitExceeded

from runs import queue
from tools.registry import Tool, ToolContext


@pytest.fixture
def prefork_child_handler():
    """SIGUSR1 handled as billiard's pool child handles it, then as each task starts."""
    previous = signal.signal(signal.SIGUSR1, soft_timeout_sighandler)
    try:
        queue._interrupt_only_tools()
        yield
    finally:
        signal.signal(signal.SIGUSR1, previous)


def _signalled(seconds: float) -> None:
    """SIGUSR1 to this process in `seconds`, from another thread."""
    timer = threading.Timer(seconds, os.kill, args=(os.getpid(), signal.SIGUSR1))
    timer.daemon = True
    timer.start()


def test_outside_a_tool_sigusr1_is_ignored(prefork_child_handler):
    """billiard's own handler raises wherever the child is (the hazard); ours does not."""
    assert signal.getsignal(signal.SIGUSR1) is not soft_timeout_sighandler
    os.kill(os.getpid(), signal.SIGUSR1)
    time.sleep(0.05)  # the handler runs here, in the main thread: it must not raise


def test_inside_a_tool_sigusr1_interrupts_it(prefork_child_handler):
    def sleeper(args, ctx: ToolContext):
        time.sleep(5)  # not cooperative: only the signal ends it early
        return "slept"

    tool = Tool("test.sleeper", sleeper, {}, 10, 0, "", None)
    ctx = ToolContext(tenant=None, run=None, seq=1, attempt=1, deadline=time.monotonic() + 10)
    _signalled(0.2)
    with pytest.raises(SoftTimeLimitExceeded):  # a tool that slept its 5 s would return
        queue._call_with_alarm(tool, {}, ctx)
    os.kill(os.getpid(), signal.SIGUSR1)  # after the tool: ignored again
    time.sleep(0.05)


def test_a_cancel_interrupts_the_tool_of_its_own_call_only(prefork_child_handler):
    """What a cancel does in a prefork child for a call that came in a message of several: the
    listener thread interrupts the main thread's tool, if it is that call's."""

    def sleeper(args, ctx: ToolContext):
        time.sleep(args["seconds"])  # not cooperative: only the signal ends it early
        return "slept"

    tool = Tool("test.sleeper", sleeper, {}, 10, 0, "", None)
    running = ToolContext(tenant=None, run=None, seq=1, attempt=1, deadline=time.monotonic() + 10)
    other = ToolContext(tenant=None, run=None, seq=2, attempt=1, deadline=time.monotonic() + 10)
    threading.Timer(0.1, queue._interrupt_main_thread, args=(other,)).start()
    assert queue._call_with_alarm(tool, {"seconds": 0.5}, running) == "slept"  # not its call
    threading.Timer(0.2, queue._interrupt_main_thread, args=(running,)).start()
    with pytest.raises(SoftTimeLimitExceeded):  # its call: it would have slept 5 s
        queue._call_with_alarm(tool, {"seconds": 5}, running)
