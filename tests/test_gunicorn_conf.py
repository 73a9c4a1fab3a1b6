"""project/gunicorn.conf.py's worker hooks, run as gunicorn runs them after a worker loaded."""

import gc
import resource
import runpy
from pathlib import Path

import pytest

CONF = Path(__file__).resolve().parent.parent / "project" / "gunicorn.conf.py"


@pytest.fixture
def restore_gc(monkeypatch):
    monkeypatch.setattr(resource, "setrlimit", lambda *args: None)  # this process keeps its own
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_a_worker_freezes_its_start_up_heap_and_collects_less_often(restore_gc, monkeypatch):
    monkeypatch.delenv("WEB_GC_THRESHOLD", raising=False)
    gc.unfreeze()
    runpy.run_path(str(CONF))["post_worker_init"](object())
    assert gc.get_freeze_count() > 10_000  # Django and the project, loaded by this process
    assert gc.get_threshold() == (50_000, 20, 100)


def test_an_empty_threshold_keeps_pythons_defaults(restore_gc, monkeypatch):
    monkeypatch.setenv("WEB_GC_THRESHOLD", "")
    gc.unfreeze()
    before = gc.get_threshold()
    runpy.run_path(str(CONF))["post_worker_init"](object())
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == before


@pytest.mark.parametrize("value", ["fast", "1,2,3,4", "-5", "0", "50000,,100", "9" * 12])
def test_a_bad_threshold_stops_gunicorn_with_a_clear_message(monkeypatch, value):
    monkeypatch.setattr(resource, "setrlimit", lambda *args: None)
    monkeypatch.setenv("WEB_GC_THRESHOLD", value)
    with pytest.raises(SystemExit, match="WEB_GC_THRESHOLD must be one to three positive"):
        runpy.run_path(str(CONF))
