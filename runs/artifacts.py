"""Artifacts: files a run produces. Bytes in STORAGES["artifacts"], a row in the run database.

The body is streamed to a scratch file (hashed on the way, never held in memory, refused past
`ARTIFACT_MAX_BYTES`), stored under a key made of server ids only
(`<tenant>/<run>/<artifact id>`), then recorded through the run's writer with its audit entry.
A name is written once: the same bytes again answer the existing artifact, other bytes 409.
"""

import hashlib
import re
from dataclasses import dataclass
from typing import IO, Any

from django.conf import settings
from django.core.files import File
from django.core.files.storage import storages
from django.db import router

from audit import chain as audit
from project.exceptions import Conflict, InvalidInput, NotFound, TooLarge
from runs import writer
from runs.exceptions import RunClosed
from runs.models import ARTIFACT_NAME_PATTERN, ARTIFACT_NAME_RULE, Artifact, Run
from tenancy.context import run_context
from tenancy.ids import new_id
from tenancy.paths import scratch_dir
from tenancy.rows import insert_row

CHUNK = 1024 * 1024
NAME_RE = re.compile(ARTIFACT_NAME_PATTERN)
CONTENT_TYPE_RE = re.compile(r"^[!-~][ -~]{0,254}$")


@dataclass(frozen=True)
class Upload:
    stream: IO[bytes]
    length: int | None  # Content-Length, when the client sent one
    content_type: str


def artifact_put(*, run: Run, name: str, upload: Upload) -> tuple[Artifact, bool]:
    """Store an artifact's bytes and record it; return it and whether it was created."""
    if not NAME_RE.match(name):
        raise InvalidInput(f"Artifact name {name[:140]!r} is invalid: {ARTIFACT_NAME_RULE}.")
    if not CONTENT_TYPE_RE.match(upload.content_type):
        raise InvalidInput("Content-Type must be 1-255 printable ASCII characters.")
    if not run.is_active:
        raise RunClosed(f"Run {run.id} is {run.status}; it takes no more artifacts.")
    limit = settings.ARTIFACT_MAX_BYTES
    if upload.length is not None and upload.length > limit:
        raise TooLarge(f"An artifact holds at most {limit} bytes; this one has {upload.length}.")
    scratch = scratch_dir() / f"{run.id}.{new_id('up')}"
    scratch.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    try:
        with scratch.open("xb") as target:
            remaining = upload.length
            while remaining is None or remaining > 0:
                chunk = upload.stream.read(CHUNK if remaining is None else min(CHUNK, remaining))
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"An artifact holds at most {limit} bytes.")
                digest.update(chunk)
                target.write(chunk)
                if remaining is not None:
                    remaining -= len(chunk)
        sha256 = digest.hexdigest()
        key = f"{run.tenant_id}/{run.id}/{new_id('art')}"
        storage = storages["artifacts"]
        with scratch.open("rb") as handle:
            stored = storage.save(key, File(handle, name=key))
    finally:
        scratch.unlink(missing_ok=True)

    def work() -> tuple[Artifact, bool]:
        existing = Artifact.objects.filter(name=name).first()
        if existing is not None:
            if existing.sha256 != sha256:
                raise Conflict(
                    f"Artifact {name!r} exists with other bytes; artifacts are written once.",
                    code="artifact_exists",
                )
            return existing, False
        artifact = insert_row(
            Artifact,
            using=router.db_for_write(Artifact),
            name=name,
            size=size,
            sha256=sha256,
            key=stored,
            content_type=upload.content_type,
        )
        audit.run_append_row("artifact", "runs_artifact", "name", name)
        return artifact, True

    try:
        artifact, created = writer.write(run, work)
    except BaseException:
        storage.delete(stored)
        raise
    if not created:
        storage.delete(stored)
    return artifact, created


def artifact_get(*, run: Run, name: str) -> Artifact:
    with run_context(run):
        artifact = Artifact.objects.filter(name=name).first()
    if artifact is None:
        raise NotFound(f"Run {run.id} has no artifact {name[:140]!r}.")
    return artifact


def artifacts_list(*, run: Run) -> list[Artifact]:
    with run_context(run):
        return list(Artifact.objects.order_by("name"))


def artifact_open(artifact: Artifact) -> Any:
    return storages["artifacts"].open(artifact.key, "rb")
