"""project/gunicorn.conf.py's worker hooks, run as gunicorn runs them after a worker loaded."""

import gc
import resource
import runpy
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

CONF = Path(__file__).resolve().parent.parent / "project" / "gunicorn.conf.py"


@pytest.fixture
def load_conf(monkeypatch) -> Iterator[Callable[[], dict]]:
    """Read the config as gunicorn does, with this process's RLIMIT and GC left as they were."""
    monkeypatch.setattr(resource, "setrlimit", lambda *args: None)
    threshold = gc.get_threshold()
    gc.unfreeze()
    yield lambda: runpy.run_path(str(CONF))
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_a_worker_freezes_its_start_up_heap_and_collects_less_often(load_conf, monkeypatch):
    monkeypatch.delenv("WEB_GC_THRESHOLD", raising=False)
    load_conf()["post_worker_init"](object())
    assert gc.get_freeze_count() > 10_000  # Django and the project, loaded by this process
    assert gc.get_threshold() == (50_000, 20, 100)


def test_an_empty_threshold_keeps_pythons_defaults(load_conf, monkeypatch):
    monkeypatch.setenv("WEB_GC_THRESHOLD", "")
    before = gc.get_threshold()
    load_conf()["post_worker_init"](object())
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == before


@pytest.mark.parametrize("value", ["fast", "1,2,3,4", "-5", "0", "50000,,100", "9" * 12])
def test_a_bad_threshold_stops_gunicorn_with_a_clear_message(load_conf, monkeypatch, value):
    monkeypatch.setenv("WEB_GC_THRESHOLD", value)
    with pytest.raises(SystemExit, match="WEB_GC_THRESHOLD must be one to three positive"):
        load_conf()
