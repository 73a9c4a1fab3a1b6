"""Artifacts, forks, replay, tenant exports and deletion."""

import io
import json
import sqlite3
import tarfile

import pytest
from django.core.management import call_command

from audit.verify import verify_file
from runs.models import Run
from tenancy.paths import absolute
from tests.audit.conftest import s3_keys

pytestmark = pytest.mark.django_db


def test_artifacts_round_trip_on_the_filesystem(busy_run, put_bytes, api, data_dir, settings):
    base = f"/api/v1/runs/{busy_run}/artifacts"
    blob = bytes(range(256)) * 4096 + b"\x00tail"
    first = put_bytes(f"{base}/report.pdf", blob, "application/pdf")
    assert first.status_code == 201, first.content
    out = first.json()
    assert out["size"] == len(blob) and out["content_type"] == "application/pdf"
    got = api.get(f"{base}/report.pdf")
    assert got.status_code == 200 and b"".join(got.streaming_content) == blob
    assert put_bytes(f"{base}/report.pdf", blob).status_code == 200  # same bytes: the same
    clash = put_bytes(f"{base}/report.pdf", b"other")
    assert clash.status_code == 409 and clash.json()["error"]["code"] == "artifact_exists"
    assert [a["name"] for a in api.get(base).json()["items"]] == ["report.pdf"]
    assert len(list((data_dir / "artifacts").rglob("*"))) == 3  # tenant/run/object, no leftovers
    settings.ARTIFACT_MAX_BYTES = 10
    assert put_bytes(f"{base}/big", b"x" * 11).status_code == 413
    assert api.get(f"{base}/nope").status_code == 404
    run = Run.objects.select_related("database").get(pk=busy_run)
    assert verify_file(absolute(run.database.path)).ok


def test_fork_holds_history_up_to_seq(busy_run, post, api):
    response = post(f"/api/v1/runs/{busy_run}/fork", {"at_seq": 2})
    assert response.status_code == 201, response.content
    fork = response.json()
    assert fork["counts"]["tool_calls"] == 2
    calls = api.get(f"/api/v1/runs/{fork['id']}/tool-calls").json()["items"]
    original = api.get(f"/api/v1/runs/{busy_run}/tool-calls").json()["items"][:2]
    assert calls == original
    assert fork["counts"]["events"] == 6  # the two batches before tool call 3
    run = Run.objects.select_related("database").get(pk=fork["id"])
    report = verify_file(absolute(run.database.path))
    assert report.ok, report.first
    # The fork goes on from there with gapless seqs.
    more = post(f"/api/v1/runs/{fork['id']}/tool-calls", {"name": "search", "args": {}})
    assert more.json()["seq"] == 3
    assert post(f"/api/v1/runs/{busy_run}/fork", {"at_seq": 4}).status_code == 422


def test_replay_run_rebuilds_state(busy_run, capsys):
    call_command("replay_run", busy_run)
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary == {"tool_calls": 3, "events": 9, "state_version": 2, "state": {"step": 1}}
    assert "tool_call" in lines[0]
    call_command("replay_run", busy_run, "--until", "1")
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["tool_calls"] == 1 and summary["events"] == 3 and summary["state"] is None


def test_export_is_a_sound_sqlite_file(api, tenant, tmp_path):
    api.put("/api/v1/memory/plans/a", {"value": {"x": 1}})
    response = api.get("/api/v1/export")
    assert response.status_code == 200
    path = tmp_path / "export.sqlite3"
    path.write_bytes(b"".join(response.streaming_content))
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert conn.execute("SELECT key FROM tenants_memoryentry").fetchall() == [("plans/a",)]
    kinds = [k for (k,) in conn.execute("SELECT kind FROM audit_tenantentry ORDER BY seq")]
    assert kinds[0] == "api_key_created"
    conn.close()


def test_export_tenant_with_runs(archiving, busy_run, post, tmp_path):
    post(f"/api/v1/runs/{busy_run}/complete", {"status": "succeeded"})
    live = post("/api/v1/runs", {}).json()["id"]
    target = tmp_path / "acme.tar"
    call_command("export_tenant", "acme", "--runs", "-o", str(target))
    with tarfile.open(target) as tar:
        names = sorted(tar.getnames())
        manifest = json.load(tar.extractfile("manifest.json"))
        archived = tar.extractfile(f"runs/{busy_run}.sqlite3").read()
    assert names == sorted(
        ["tenant.sqlite3", "manifest.json", f"runs/{busy_run}.sqlite3", f"runs/{live}.sqlite3"]
    )
    run = Run.objects.get(pk=busy_run)
    assert manifest["sha256"][f"runs/{busy_run}.sqlite3"] == run.archive_sha256
    assert len(archived) == run.archive_bytes


def _delete_leaves_nothing(api, data_dir, tenant_id: str) -> None:
    assert not (data_dir / "tenants" / tenant_id).exists()
    for kind in ("archives", "artifacts"):
        assert not (data_dir / kind / tenant_id).exists()
    assert not list((data_dir / "restored").glob("*.sqlite3"))
    assert api.get("/api/v1/runs").status_code == 401


def test_delete_tenant_removes_files_objects_and_keys(
    archiving, busy_run, post, put_bytes, api, data_dir, tenant, tmp_path
):
    put_bytes(f"/api/v1/runs/{busy_run}/artifacts/a.txt", b"hello")
    post(f"/api/v1/runs/{busy_run}/complete", {"status": "succeeded"})
    assert list((data_dir / "archives" / tenant.id).rglob("*.sqlite3"))
    assert api.get(f"/api/v1/runs/{busy_run}/tool-calls").status_code == 200  # a restored copy
    assert list((data_dir / "restored").glob("*.sqlite3"))
    export = tmp_path / "final.tar"
    call_command("delete_tenant", "acme", "--yes", "--archive", str(export))
    _delete_leaves_nothing(api, data_dir, tenant.id)
    with tarfile.open(export) as tar:
        assert f"runs/{busy_run}.sqlite3" in tar.getnames()


def test_delete_tenant_on_s3(archiving, s3, busy_run, post, put_bytes, api, data_dir, tenant):
    put_bytes(f"/api/v1/runs/{busy_run}/artifacts/a.txt", b"hello")
    post(f"/api/v1/runs/{busy_run}/complete", {"status": "succeeded"})
    assert len(s3_keys(s3)) == 2
    call_command("delete_tenant", "acme", "--yes")
    assert s3_keys(s3) == []
    _delete_leaves_nothing(api, data_dir, tenant.id)


def test_artifacts_round_trip_on_s3(s3, busy_run, put_bytes, api):
    blob = io.BytesIO(bytes(range(256)) * 3000).getvalue()
    assert put_bytes(f"/api/v1/runs/{busy_run}/artifacts/x.bin", blob).status_code == 201
    got = api.get(f"/api/v1/runs/{busy_run}/artifacts/x.bin")
    assert b"".join(got.streaming_content) == blob
    assert len(s3_keys(s3)) == 1
