"""Every run template must keep the closed-run triggers: a migration that drops one stops the
deploy at the template build, before any run database is touched."""

import sqlite3

import pytest
from django.core.exceptions import ImproperlyConfigured

from runs.invariants import CLOSED_RUN_TRIGGERS, closed_run_triggers_present
from tenancy import templates
from tenancy.scopes import Scope

pytestmark = pytest.mark.django_db


def test_the_run_template_has_every_closed_run_trigger():
    path, _ = templates.ensure_template(Scope.RUN)
    with sqlite3.connect(path) as conn:
        assert closed_run_triggers_present(conn) == []


def test_a_template_without_a_closed_run_trigger_is_refused(tmp_path):
    path, _ = templates.ensure_template(Scope.RUN)
    broken = tmp_path / "broken.sqlite3"
    broken.write_bytes(path.read_bytes())
    with sqlite3.connect(broken) as conn:
        conn.execute(f'DROP TRIGGER "{CLOSED_RUN_TRIGGERS[0]}"')
    with pytest.raises(ImproperlyConfigured, match=CLOSED_RUN_TRIGGERS[0]):
        templates._check_template(broken, Scope.RUN)
