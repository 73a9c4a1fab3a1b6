"""Rebuild a run from its audit trail alone: its timeline, its state as of any tool call, forks.

A cut "at tool call N" is every entry before the one recording tool call N + 1 (all of it when
there is none): what the run looked like when its agent was about to make call N + 1. Replay
and fork use the same cut, so `replay_run --until N` shows the history a fork at N holds.
"""

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import connections

from audit import chain
from audit.exceptions import ForkOutOfRange
from audit.verify import AUDITED, Entry, apply, empty_tables, entries, open_read_only
from runs import writer
from runs.models import Run
from runs.services import run_create
from tenancy.context import run_context


def file_entries(path: Path) -> list[Entry]:
    conn = open_read_only(path)
    try:
        return list(entries(conn))
    finally:
        conn.close()


def run_entries(run: Run) -> list[Entry]:
    """Return the run's audit entries (live database, or its restored archive)."""
    from audit.models import RunEntry

    with run_context(run):
        rows = RunEntry.objects.order_by("seq").values_list(
            "seq", "kind", "body", "created_at", "prev_hash", "hash"
        )
        return [Entry(*row) for row in rows]


def _records_call(entry: Entry) -> int | None:
    if entry.kind != "tool_call":
        return None
    return int(entry.data()["row"]["seq"])


def cut(history: Iterable[Entry], at_seq: int | None) -> Iterator[Entry]:
    """Yield the entries before the one recording tool call `at_seq + 1` (all if None)."""
    for entry in history:
        call = _records_call(entry)
        if at_seq is not None and call is not None and call > at_seq:
            return
        yield entry


@dataclass(frozen=True)
class Replayed:
    timeline: list[str]
    tool_calls: int
    events: int
    state_version: int
    state: Any


def replay(history: Iterable[Entry], *, until: int | None = None) -> Replayed:
    """Return the timeline and the state rebuilt from the entries cut at tool call `until`."""
    tables = empty_tables()
    timeline = []
    for entry in cut(history, until):
        apply(tables, entry)
        timeline.append(f"{entry.seq:>6}  {entry.created_at}  {entry.kind:<10} {_summary(entry)}")
    states = tables["runs_statecheckpoint"]
    version = max(states, default=0)
    state = json.loads(states[version]["state"]) if version and states[version]["state"] else None
    return Replayed(
        timeline=timeline,
        tool_calls=len(tables["runs_toolcall"]),
        events=len(tables["runs_event"]),
        state_version=version,
        state=state,
    )


def _summary(entry: Entry) -> str:
    data = entry.data()
    if entry.kind in ("tool_call", "outcome", "claim", "requeue", "cancel"):
        row = data["row"]
        return f"#{row['seq']} {row['name']} {row['status']}"
    if entry.kind == "events":
        seqs = [values[0] for values in data["rows"]]
        return f"{len(seqs)} event(s) {seqs[0]}..{seqs[-1]}"
    if entry.kind == "state":
        return f"version {data['row']['version']}"
    if entry.kind == "artifact":
        return f"{data['row']['name']} ({data['row']['size']} bytes)"
    if entry.kind == "close":
        return str(data.get("status", ""))
    return entry.body[:120]


def run_fork(*, run: Run, at_seq: int) -> Run:
    """Create a new run holding the source run's history up to tool call `at_seq`.

    The new run's tables are rebuilt from the source's audit entries (no tool is called again)
    and its own trail starts with a `fork` entry naming the source, then one entry per copied
    entry, so its chain is its own and valid.
    """
    history = run_entries(run)
    calls = sum(1 for e in history if e.kind == "tool_call")
    if not 0 <= at_seq <= calls:
        raise ForkOutOfRange(f"Run {run.id} has tool calls 1 to {calls}; fork at 0 to {calls}.")
    kept = [e for e in cut(history, at_seq) if e.kind != "close"]
    fork = run_create(
        tenant=run.tenant,
        metadata={**run.metadata, "forked_from": run.id, "forked_at_seq": at_seq},
        labels=run.labels,
    )

    def work() -> None:
        alias = chain.run_alias()
        with connections[alias].cursor() as cursor:
            for entry in kept:
                _write_rows(cursor, entry.data())
        chain.run_append("fork", chain.encode({"from_run": run.id, "at_seq": at_seq}))
        for entry in kept:
            chain.run_append(entry.kind, entry.body)

    writer.write(fork, work)
    return fork


_COLUMN = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _write_rows(cursor: Any, data: Any) -> None:
    if not isinstance(data, dict) or "table" not in data or data["table"] == "runs_runinfo":
        return
    table = data["table"]
    if table not in AUDITED:
        raise ValueError(f"an audit entry names table {table!r}, which the trail does not cover")
    if "row" in data:
        columns, rows = list(data["row"]), [list(data["row"].values())]
    else:
        columns, rows = data["columns"], data["rows"]
    if not all(_COLUMN.match(c) for c in columns):
        raise ValueError(f"an audit entry names columns {columns!r}")
    names = ", ".join(f'"{c}"' for c in columns)
    marks = ", ".join(["%s"] * len(columns))
    cursor.executemany(f'INSERT OR REPLACE INTO "{table}" ({names}) VALUES ({marks})', rows)
