"""Endpoints of archives, artifacts, forks and exports. Runs are looked up within the API key's
tenant (another tenant's run is the same 404 as an unknown one)."""

import base64
import os

from django.core.files.storage import storages
from django.http import FileResponse, HttpRequest
from ninja import Path, Query, Router, Schema, Status
from pydantic import Field

from audit.exceptions import NotArchived
from audit.export import tenant_export
from audit.replay import run_fork
from project.schemas import ErrorOut
from runs import artifacts, selectors
from runs.api import RUN_ID, WRITE, _run, _run_out
from runs.models import ARTIFACT_NAME_PATTERN, Artifact
from runs.schemas import MAX_INT, RunOut, Strict
from tenancy.context import current_tenant
from tenancy.ids import new_id
from tenancy.paths import scratch_dir

router = Router(tags=["archives"])
COMMON = {401: ErrorOut, 404: ErrorOut, 422: ErrorOut, 503: ErrorOut}
NAME = Path(..., pattern=ARTIFACT_NAME_PATTERN, description="1-128 of A-Z a-z 0-9 _ . : -")


class ArtifactOut(Schema):
    name: str
    size: int
    sha256: str
    content_type: str
    created_at: str = Field(..., description="ISO 8601")


class ArtifactPage(Schema):
    items: list[ArtifactOut]
    next: None = None


class ForkIn(Strict):
    at_seq: int = Field(..., ge=0, le=MAX_INT, description="Keep tool calls 1 to at_seq.")


def _artifact_out(artifact: Artifact) -> ArtifactOut:
    return ArtifactOut(
        name=artifact.name,
        size=artifact.size,
        sha256=artifact.sha256,
        content_type=artifact.content_type,
        created_at=artifact.created_at.isoformat(),
    )


def _digest_headers(response: FileResponse, sha256: str) -> FileResponse:
    b64 = base64.b64encode(bytes.fromhex(sha256)).decode()
    response["Repr-Digest"] = f"sha-256=:{b64}:"
    response["Digest"] = f"sha-256={b64}"
    response["ETag"] = f'"{sha256}"'
    return response


@router.put(
    "/runs/{run_id}/artifacts/{name}",
    response={201: ArtifactOut, 200: ArtifactOut, **WRITE},
    summary="Store an artifact (raw body, streamed; 200 if the same bytes are there already)",
)
def artifact_put(request: HttpRequest, run_id: str = RUN_ID, name: str = NAME) -> Status:
    length = request.META.get("CONTENT_LENGTH")
    upload = artifacts.Upload(
        stream=request,  # type: ignore[arg-type]  # HttpRequest.read streams the body
        length=int(length) if length and length.isdigit() else None,
        content_type=request.META.get("CONTENT_TYPE") or "application/octet-stream",
    )
    artifact, created = artifacts.artifact_put(run=_run(run_id), name=name, upload=upload)
    return Status(201 if created else 200, _artifact_out(artifact))


@router.get("/runs/{run_id}/artifacts", response={200: ArtifactPage, **COMMON})
def artifacts_list(request: HttpRequest, run_id: str = RUN_ID) -> ArtifactPage:
    items = artifacts.artifacts_list(run=_run(run_id))
    return ArtifactPage(items=[_artifact_out(a) for a in items])


@router.get(
    "/runs/{run_id}/artifacts/{name}",
    response={200: None, **COMMON},
    summary="Stream an artifact's bytes (Content-Type as stored, Repr-Digest: sha-256)",
)
def artifact_get(request: HttpRequest, run_id: str = RUN_ID, name: str = NAME) -> FileResponse:
    artifact = artifacts.artifact_get(run=_run(run_id), name=name)
    response = FileResponse(artifacts.artifact_open(artifact), content_type=artifact.content_type)
    response["Content-Length"] = str(artifact.size)
    return _digest_headers(response, artifact.sha256)


@router.get(
    "/runs/{run_id}/archive",
    response={200: None, **COMMON, 409: ErrorOut},
    summary="Stream the archived run's .sqlite file (Digest / Repr-Digest: sha-256)",
)
def run_archive_get(request: HttpRequest, run_id: str = RUN_ID) -> FileResponse:
    run = _run(run_id, fresh=True)
    if run.archived_at is None:
        raise NotArchived(
            f"Run {run.id} is {run.status} and not archived yet; completing a run archives it."
        )
    handle = storages["archives"].open(run.archive_key, "rb")
    response = FileResponse(
        handle, content_type="application/vnd.sqlite3", filename=f"{run.id}.sqlite3"
    )
    response["Content-Length"] = str(run.archive_bytes)
    return _digest_headers(response, run.archive_sha256)


@router.post(
    "/runs/{run_id}/fork",
    response={201: RunOut, **WRITE, 429: ErrorOut},
    summary="A new run holding this run's history up to tool call at_seq",
)
def run_fork_post(request: HttpRequest, body: ForkIn, run_id: str = RUN_ID) -> Status:
    fork = run_fork(run=_run(run_id, fresh=True), at_seq=body.at_seq)
    return Status(
        201, _run_out(selectors.run_get(tenant=current_tenant(), run_id=fork.id), live=True)
    )


@router.get(
    "/export",
    response={200: None, **COMMON},
    summary="The tenant's database as one consistent .sqlite file (runs=true: a tarball with runs)",
)
def export_get(request: HttpRequest, runs: bool = Query(False)) -> FileResponse:
    tenant = current_tenant()
    suffix = "tar" if runs else "sqlite3"
    destination = scratch_dir() / f"{new_id('export')}.{suffix}"
    tenant_export(tenant=tenant, destination=destination, with_runs=runs)
    handle = destination.open("rb")
    os.unlink(destination)  # the open handle keeps the bytes until the response is sent
    content_type = "application/x-tar" if runs else "application/vnd.sqlite3"
    return FileResponse(handle, content_type=content_type, filename=f"{tenant.slug}.{suffix}")
