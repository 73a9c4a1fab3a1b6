"""Shared by the in-process benches (bench/archive.py, bench/audit_cost.py): Django set up in
this process, embedded mode (no Redis), on a fresh DATA_DIR and SQLite control plane."""

import os
import tempfile
from pathlib import Path


def setup_embedded(prefix: str) -> Path:
    """Set Django up on a new temporary folder, migrated; return the folder (caller removes it)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ.update(
        DATA_DIR=str(tmp / "data"),
        CONTROL_DATABASE_URL=f"sqlite:///{tmp / 'control.sqlite3'}",
        DJANGO_SETTINGS_MODULE="project.settings",
        LOG_LEVEL="ERROR",
        ARCHIVE_ON_COMPLETE="0",
    )
    os.environ.pop("REDIS_URL", None)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", "--no-input", "-v", "0")
    return tmp
