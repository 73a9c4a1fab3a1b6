"""Check a run database against its audit trail (decision 0034).

Two passes over one SQLite file, through plain `sqlite3` (a live file, a restored copy or any
archive on disk):
1. the chain: seqs gapless from 1, each `prev_hash` the previous entry's `hash`, each `hash`
   recomputed from the entry (any changed byte of an entry breaks it); with `expected_head`
   (the control plane's, for archives), the last hash must be that one (a dropped tail);
2. the rows: replaying the entries rebuilds every audited table (`rebuild`); each row of the
   file must equal its rebuilt row, column for column, and no row may be missing or extra.

The first problem in that order is "the first bad record", named like `event 17` or
`audit entry 5`.
"""

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.chain import GENESIS, RUN_TABLE, entry_hash

# The tables the trail covers, their primary key and how a record of each is named.
AUDITED = {
    "runs_toolcall": ("seq", "tool call"),
    "runs_event": ("seq", "event"),
    "runs_statecheckpoint": ("version", "state version"),
    "runs_artifact": ("name", "artifact"),
    "runs_runinfo": ("id", "run info"),
}


@dataclass(frozen=True)
class Entry:
    seq: int
    kind: str
    body: str
    created_at: str
    prev_hash: str
    hash: str

    def data(self) -> Any:
        return json.loads(self.body)


@dataclass
class Report:
    entries: int = 0
    head: str = GENESIS
    problems: list[tuple[str, str]] = field(default_factory=list)  # (record, what is wrong)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> str | None:
        return None if self.ok else f"{self.problems[0][0]}: {self.problems[0][1]}"


def open_read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


def entries(conn: sqlite3.Connection) -> Iterator[Entry]:
    rows = conn.execute(
        f"SELECT seq, kind, body, created_at, prev_hash, hash FROM {RUN_TABLE} ORDER BY seq"
    )
    for row in rows:
        yield Entry(*row)


Tables = dict[str, dict[Any, dict[str, Any]]]


def apply(tables: Tables, entry: Entry) -> None:
    """Apply one entry's rows to `tables` ({table: {pk: row}})."""
    data = entry.data()
    if not isinstance(data, dict) or "table" not in data:
        return
    rows = tables.setdefault(data["table"], {})
    pk = data["pk"]
    if "row" in data:
        row = data["row"]
        rows[row[pk]] = {**rows.get(row[pk], {}), **row}
    else:
        columns = data["columns"]
        at = columns.index(pk)
        for values in data["rows"]:
            rows[values[at]] = dict(zip(columns, values, strict=True))


def empty_tables() -> Tables:
    tables: Tables = {name: {} for name in AUDITED}
    tables["runs_runinfo"] = {1: {"id": 1, "closed_at": None}}
    return tables


def verify_file(path: Path, *, expected_head: str | None = None) -> Report:
    """Return the report of checking the run database at `path` (see the module)."""
    report = Report()
    conn = open_read_only(path)
    try:
        tables = empty_tables()
        prev = GENESIS
        for number, entry in enumerate(entries(conn), start=1):
            name = f"audit entry {entry.seq}"
            if entry.seq != number:
                report.problems.append((f"audit entry {number}", f"missing (next is {entry.seq})"))
                return report
            if entry.prev_hash != prev:
                report.problems.append((name, "prev_hash is not the previous entry's hash"))
                return report
            recomputed = entry_hash(
                seq=entry.seq,
                kind=entry.kind,
                created_at=entry.created_at,
                prev_hash=entry.prev_hash,
                body=entry.body,
            )
            if recomputed != entry.hash:
                report.problems.append((name, "its hash does not match its content (changed)"))
                return report
            try:
                apply(tables, entry)
            except (ValueError, KeyError, TypeError) as exc:
                report.problems.append((name, f"its body cannot be replayed ({exc})"))
                return report
            prev = entry.hash
            report.entries = number
        report.head = prev
        if expected_head is not None and expected_head and prev != expected_head:
            report.problems.append(
                (f"audit entry {report.entries + 1}", "missing: the log ends early (dropped)")
            )
            return report
        for table, expected in tables.items():
            _compare(conn, table, expected, report)
            if not report.ok:
                return report
    finally:
        conn.close()
    return report


def _compare(
    conn: sqlite3.Connection, table: str, expected: dict[Any, dict[str, Any]], report: Report
) -> None:
    pk, noun = AUDITED.get(table, ("rowid", table))
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [table]
    ).fetchone()
    if not exists:
        if expected:
            report.problems.append((table, "the table is missing"))
        return
    cursor = conn.execute(f'SELECT * FROM "{table}" ORDER BY "{pk}"')
    names = [column[0] for column in cursor.description]
    found: dict[Any, dict[str, Any]] = {}
    for values in cursor:
        row = dict(zip(names, values, strict=True))
        found[row[pk]] = row
    for key in sorted(set(expected) | set(found), key=_order):
        want, have = expected.get(key), found.get(key)
        if have is None:
            report.problems.append((f"{noun} {key}", "missing from the table (the log has it)"))
        elif want is None:
            report.problems.append((f"{noun} {key}", "not in the audit log (added)"))
        else:
            changed = [c for c, v in want.items() if c not in have or not _same(have[c], v)]
            if changed:
                report.problems.append((f"{noun} {key}", f"differs from the log in {changed}"))
        if not report.ok:
            return


def _same(a: Any, b: Any) -> bool:
    return bool(a == b and type(a) is type(b)) or (
        isinstance(a, int | float) and isinstance(b, int | float) and a == b
    )


def _order(key: Any) -> tuple[int, Any]:
    return (0, key) if isinstance(key, int) else (1, str(key))
