"""Archiving finished runs: filesystem and S3 storages, crash recovery, reads after archiving."""

import base64
import hashlib
import sqlite3

import pytest
from django.core.files.storage import storages
from django.core.management import CommandError, call_command

from audit import archive
from runs.models import Run
from tenancy.paths import absolute
from tests.audit.conftest import s3_keys, sql

pytestmark = pytest.mark.django_db


def _reads(api, run_id: str) -> dict:
    base = f"/api/v1/runs/{run_id}"
    return {
        path: api.get(base + path).json()
        for path in ("/tool-calls", "/tool-calls/2", "/events?limit=4", "/state", "/artifacts")
    }


def _archived(run_id: str) -> Run:
    return Run.objects.select_related("database").get(pk=run_id)


def test_complete_archives_to_the_filesystem(archiving, busy_run, post, api, data_dir):
    live = absolute(_archived(busy_run).database.path)
    before = _reads(api, busy_run)
    done = post(f"/api/v1/runs/{busy_run}/complete", {"status": "succeeded"})
    assert done.status_code == 200, done.content
    run = _archived(busy_run)
    assert run.archived_at is not None and run.archive_key.endswith(".sqlite3")
    stored = data_dir / "archives" / run.archive_key
    data = stored.read_bytes()
    assert hashlib.sha256(data).hexdigest() == run.archive_sha256
    assert len(data) == run.archive_bytes
    assert run.archive_schema_version == run.database.schema_version
    assert not live.exists() and not live.with_name(live.name + "-wal").exists()
    # Written straight into its folder of the storage: nothing else there, nothing in DATA_DIR/tmp.
    assert list(stored.parent.iterdir()) == [stored]
    assert not any((data_dir / "tmp").glob("*"))
    assert stored.read_bytes()[18:20] == b"\x01\x01"  # rollback journal, not WAL
    # The archive opens alone (no -wal needed) and is sound.
    conn = sqlite3.connect(f"file:{stored}?mode=ro", uri=True)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    call_command("verify_run", busy_run)
    # Reads of the archived run (a restored read-only copy) match the reads before.
    assert _reads(api, busy_run) == before
    assert api.get(f"/api/v1/runs/{busy_run}").json()["counts"]["tool_calls"] == 3
    # The archive streams with its checksum.
    response = api.get(f"/api/v1/runs/{busy_run}/archive")
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    assert body == data
    digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert response["Repr-Digest"] == f"sha-256=:{digest}:"
    assert response["Digest"] == f"sha-256={digest}"
    # Writes are refused as for any finished run.
    again = post(f"/api/v1/runs/{busy_run}/events", {"events": [{"kind": "x"}]})
    assert again.status_code == 409


def test_archive_of_an_active_run_is_a_conflict(run_id_active, api):
    response = api.get(f"/api/v1/runs/{run_id_active}/archive")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "not_archived"


@pytest.fixture
def run_id_active(post) -> str:
    return post("/api/v1/runs", {}).json()["id"]


def test_verify_run_fails_on_a_changed_archive(archiving, busy_run, post, data_dir):
    post(f"/api/v1/runs/{busy_run}/complete", {"status": "succeeded"})
    run = _archived(busy_run)
    stored = data_dir / "archives" / run.archive_key
    (payload,) = sql(stored, "SELECT payload FROM runs_event WHERE seq = 2")[0]
    sql(stored, "UPDATE runs_event SET payload = ? WHERE seq = 2", payload.replace("1", "7", 1))
    with pytest.raises(CommandError, match="event 2"):
        call_command("verify_run", busy_run)


def test_verify_run_fails_on_a_dropped_tail(archiving, busy_run, post, data_dir):
    post(f"/api/v1/runs/{busy_run}/complete", {"status": "succeeded"})
    stored = data_dir / "archives" / _archived(busy_run).archive_key
    sql(stored, "DELETE FROM audit_runentry WHERE seq = (SELECT max(seq) FROM audit_runentry)")
    with pytest.raises(CommandError, match="audit entry 11"):
        call_command("verify_run", busy_run)


def test_a_crash_between_upload_and_record_is_recovered(busy_run, post, monkeypatch, data_dir):
    post(f"/api/v1/runs/{busy_run}/complete", {"status": "succeeded"})  # archiving is off

    def crash(*args, **kwargs):
        raise SystemExit("killed between upload and control-plane update")

    monkeypatch.setattr(archive, "_record", crash)
    with pytest.raises(SystemExit):
        archive.run_archive(run_id=busy_run)
    run = _archived(busy_run)
    assert run.archived_at is None
    assert absolute(run.database.path).exists()  # the live database is still there
    uploaded = list((data_dir / "archives").rglob("*.sqlite3"))
    assert len(uploaded) == 1
    monkeypatch.undo()
    call_command("archive_runs")
    run = _archived(busy_run)
    assert run.archived_at is not None
    assert [data_dir / "archives" / run.archive_key] == list(
        (data_dir / "archives").rglob("*.sqlite3")
    )
    assert not absolute(run.database.path).exists()
    call_command("verify_run", busy_run)
    call_command("archive_runs")  # nothing left to do, no error
    assert archive.run_archive(run_id=busy_run).action == "done"


def test_a_crash_between_the_hashed_copy_and_the_rename_is_recovered(
    busy_run, post, monkeypatch, data_dir
):
    post(f"/api/v1/runs/{busy_run}/complete", {"status": "succeeded"})  # archiving is off
    staged = []

    def crash(final, shot):
        staged.append(shot.path)
        assert shot.path.parent == final.parent and shot.path.exists()  # hashed, fsynced, beside
        raise SystemExit("killed between the hashed copy and the rename")

    monkeypatch.setattr(archive, "_rename", crash)
    with pytest.raises(SystemExit):
        archive.run_archive(run_id=busy_run)
    run = _archived(busy_run)
    assert run.archived_at is None
    assert absolute(run.database.path).exists()  # the live database is still there
    assert not list((data_dir / "archives").rglob("*.sqlite3"))  # and no archive
    assert not staged[0].exists()  # an exception cleans up its copy
    monkeypatch.undo()
    # A killed process leaves its copy (no `finally` runs): one is there when archive_runs runs.
    from audit.snapshot import snapshot

    leftover = snapshot(absolute(run.database.path), staged[0])
    call_command("archive_runs")
    run = _archived(busy_run)
    assert run.archived_at is not None
    stored = data_dir / "archives" / run.archive_key
    assert list(stored.parent.iterdir()) == [stored]  # the leftover went with step 4
    assert not leftover.path.exists()
    assert not absolute(run.database.path).exists()
    call_command("verify_run", busy_run)


def test_a_damaged_archive_is_not_restored(archiving, busy_run, post, data_dir):
    from tenancy.exceptions import DatabaseUnavailable
    from tenancy.paths import restored_dir
    from tenancy.restored import restored_copy

    post(f"/api/v1/runs/{busy_run}/complete", {"status": "succeeded"})
    run = _archived(busy_run)
    stored = data_dir / "archives" / run.archive_key
    damaged = bytearray(stored.read_bytes())
    damaged[-1] ^= 0xFF
    stored.write_bytes(damaged)
    with pytest.raises(DatabaseUnavailable) as refused:
        restored_copy(key=run.archive_key, sha256=run.archive_sha256)
    assert refused.value.code == "archive_damaged"
    assert list(restored_dir().iterdir()) == []  # neither the copy nor its partial file


def test_archive_runs_filters_by_tenant_and_age(busy_run, post):
    post(f"/api/v1/runs/{busy_run}/complete", {"status": "failed"})
    call_command("archive_runs", "--tenant", "nobody")
    assert _archived(busy_run).archived_at is None
    call_command("archive_runs", "--older-than", "3600")
    assert _archived(busy_run).archived_at is None
    call_command("archive_runs", "--tenant", "acme")
    assert _archived(busy_run).archived_at is not None


def test_expired_runs_are_archived(archiving, busy_run, settings):
    from datetime import timedelta

    from django.utils import timezone

    from runs.services import runs_expire_idle

    settings.RUN_IDLE_TIMEOUT = 1
    result = runs_expire_idle(now=timezone.now() + timedelta(hours=1))
    assert result.expired == [busy_run]
    run = _archived(busy_run)
    assert run.status == "expired" and run.archived_at is not None
    call_command("verify_run", busy_run)


def test_restore_run_and_the_restore_cache(archiving, busy_run, post, api, settings, tmp_path):
    from tenancy import connections
    from tenancy.restored import evict

    post(f"/api/v1/runs/{busy_run}/complete", {"status": "succeeded"})
    target = tmp_path / "copy.sqlite3"
    call_command("restore_run", busy_run, "--to", str(target))
    call_command("verify_run", str(target))
    connections.close_all()
    settings.ARCHIVE_CACHE_MAX_BYTES = 0
    assert evict() == 1  # the cached copy goes when the cache is over its size
    assert api.get(f"/api/v1/runs/{busy_run}/tool-calls/1").status_code == 200  # fetched again


def test_s3_archive_and_artifacts(archiving, s3, busy_run, post, put_bytes, api):
    blob = bytes(range(256)) * 1000
    put = put_bytes(f"/api/v1/runs/{busy_run}/artifacts/blob.bin", blob, "image/png")
    assert put.status_code == 201, put.content
    before = _reads(api, busy_run)
    got = api.get(f"/api/v1/runs/{busy_run}/artifacts/blob.bin")
    assert b"".join(got.streaming_content) == blob and got["Content-Type"] == "image/png"
    assert post(f"/api/v1/runs/{busy_run}/complete", {"status": "succeeded"}).status_code == 200
    run = _archived(busy_run)
    assert run.archived_at is not None
    keys = s3_keys(s3)
    assert f"archives/{run.archive_key}" in keys
    with storages["archives"].open(run.archive_key, "rb") as handle:
        assert hashlib.sha256(handle.read()).hexdigest() == run.archive_sha256
    assert not absolute(run.database.path).exists()
    call_command("verify_run", busy_run)
    assert _reads(api, busy_run) == before
    got = api.get(f"/api/v1/runs/{busy_run}/artifacts/blob.bin")
    assert b"".join(got.streaming_content) == blob
