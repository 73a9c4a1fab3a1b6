"""Append to the hash-chained audit trails (decision 0034). A leaf module: it imports nothing of
the apps but `tenancy.rows` (the bottom layer), so `runs` and `tenants` call it from inside
their own transactions.

An entry's hash is SHA-256 over `seq, kind, created_at, prev_hash` (separated by 0x1f) and then
its body, the canonical JSON of what the write changed (compact, UTF-8, as `pydantic_core`
encodes it; the text stored is the text hashed). The first entry's `prev_hash` is `GENESIS`.

Run entries record rows as the database stores them (JSON columns as their text), so replaying
the log rebuilds the very rows and `audit.verify` compares them byte for byte:
- `{"table", "pk", "row": {column: value}}`: the row now reads so (insert or update);
- `{"table", "pk", "columns", "rows": [[...], ...]}`: these rows were inserted (event batches);
- other kinds (`fork`) carry facts about the log itself.
"""

import hashlib
from datetime import datetime
from typing import Any

import pydantic_core
from django.conf import settings
from django.db import connections, router, transaction
from django.utils import timezone

from tenancy.rows import raw_connection, stored_datetime

GENESIS = "0" * 64
RUN_TABLE = "audit_runentry"
TENANT_TABLE = "audit_tenantentry"


def entry_hash(*, seq: int, kind: str, created_at: str, prev_hash: str, body: str) -> str:
    """Return the hash of one entry (its canonical encoding, chained to `prev_hash`)."""
    digest = hashlib.sha256(f"{seq}\x1f{kind}\x1f{created_at}\x1f{prev_hash}\x1f".encode())
    digest.update(body.encode())
    return digest.hexdigest()


def encode(value: Any) -> str:
    """Return the canonical JSON of an entry body."""
    return pydantic_core.to_json(value).decode()


def _append(alias: str, table: str, kind: str, body: str) -> str:
    created_at = stored_datetime(timezone.now(), connections[alias])
    # The raw connection (two statements on the writer's hot path), with Django's errors.
    with raw_connection(alias) as raw:
        # Inside the writer's transaction (BEGIN IMMEDIATE): the head cannot move under us.
        head = raw.execute(f"SELECT seq, hash FROM {table} ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (head[0] + 1, head[1]) if head else (1, GENESIS)
        digest = entry_hash(seq=seq, kind=kind, created_at=created_at, prev_hash=prev, body=body)
        raw.execute(
            f"INSERT INTO {table} (seq, kind, body, created_at, prev_hash, hash) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [seq, kind, body, created_at, prev, digest],
        )
    return digest


def run_alias() -> str:
    from audit.models import RunEntry

    return router.db_for_write(RunEntry)


def run_append(kind: str, body: str) -> None:
    """Append an entry to the bound run's trail (call it inside the run's writer)."""
    if settings.AUDIT_RUNS:
        _append(run_alias(), RUN_TABLE, kind, body)


def run_append_row(kind: str, table: str, pk: str, value: Any) -> None:
    """Append an entry holding the row `table.pk = value` as the database now stores it."""
    if not settings.AUDIT_RUNS:
        return
    alias = run_alias()
    with connections[alias].cursor() as cursor:
        cursor.execute(f'SELECT * FROM "{table}" WHERE "{pk}" = %s', [value])
        names = [column[0] for column in cursor.description]
        # Django's SQLite connection parses datetime columns; str() gives back the stored text.
        values = [str(v) if isinstance(v, datetime) else v for v in cursor.fetchone()]
        row = dict(zip(names, values, strict=True))
    _append(alias, RUN_TABLE, kind, encode({"table": table, "pk": pk, "row": row}))


def run_append_stored(kind: str, table: str, pk: str, row: dict[str, Any]) -> None:
    """`run_append_row` for a row its writer has just inserted and knows as stored
    (`tenancy.rows.insert_stored`), without reading it back."""
    if settings.AUDIT_RUNS:
        _append(run_alias(), RUN_TABLE, kind, encode({"table": table, "pk": pk, "row": row}))


def rows_body(table: str, pk: str, columns: list[str], rows: list[tuple[Any, ...]]) -> str:
    """The body of an entry recording a batch of inserted rows; append it with `run_append`
    (one hash for the whole batch)."""
    return encode({"table": table, "pk": pk, "columns": columns, "rows": rows})


def tenant_append(kind: str, facts: dict[str, Any]) -> str:
    """Append an entry to the bound tenant's trail in its own transaction; return its hash."""
    from audit.models import TenantEntry

    alias = router.db_for_write(TenantEntry)
    with transaction.atomic(using=alias):
        return _append(alias, TENANT_TABLE, kind, encode(facts))
