"""Redis run leases (runs.leases) against the real Redis: a waiter is woken by the release."""

import threading
from pathlib import Path

import pytest
import redis

from runs import leases as leases_module
from runs.exceptions import RunBusy
from runs.leases import RedisLeases


@pytest.fixture
def leases(redis_url: str, settings) -> RedisLeases:
    settings.RUN_LEASE_TTL_S = 5
    settings.REDIS_SOCKET_TIMEOUT_S = 60  # lets a waiter block long below (test 1)
    return RedisLeases(redis_url)


def test_a_waiter_takes_the_lease_when_it_is_released(leases, monkeypatch):
    # With the retry interval far beyond the wait bound, only the release's wake-up can hand
    # the lease over in time: polling alone would give up (RunBusy) after wait_s.
    monkeypatch.setattr(leases_module, "WAKE_S", 3600)
    holding, got = threading.Event(), []

    def holder() -> None:
        with leases.hold("run1", path=Path("/nonexistent"), wait_s=1) as lease:
            got.append(("holder", lease.token))
            holding.set()
            release.wait(10)

    release = threading.Event()
    first = threading.Thread(target=holder)
    first.start()
    assert holding.wait(10)

    def waiter() -> None:
        with leases.hold("run1", path=Path("/nonexistent"), wait_s=20) as lease:
            got.append(("waiter", lease.token))

    second = threading.Thread(target=waiter)
    second.start()
    release.set()
    first.join(10)
    second.join(30)
    assert [who for who, _ in got] == ["holder", "waiter"]
    assert got[1][1] > got[0][1]  # the next holder has a higher fencing token


def test_the_wait_is_bounded_while_the_holder_keeps_it(leases):
    with leases.hold("run2", path=Path("/nonexistent"), wait_s=1):
        busy = leases.hold("run2", path=Path("/nonexistent"), wait_s=0.2)
        with pytest.raises(RunBusy):
            busy.__enter__()


def test_wake_ups_do_not_pile_up(leases, redis_url):
    for _ in range(20):  # releases with nobody waiting
        with leases.hold("run3", path=Path("/nonexistent"), wait_s=1):
            pass
    client = redis.Redis.from_url(redis_url)
    assert client.llen("agentdb:wake:run3") == 1
    assert 0 < client.pttl("agentdb:wake:run3") <= 5000  # gone with the lease's TTL
    assert client.get("agentdb:lease:run3") is None  # released
