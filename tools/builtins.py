"""The built-in tools: tenant memory, read-only SQL on the tenant database, sleep and echo."""

import sqlite3
import time
from typing import Any

from django.conf import settings

from memory import selectors as memory_selectors
from memory import services as memory_services
from project.exceptions import NotFound
from tenancy.context import current_tenant
from tenancy.paths import absolute
from tools.exceptions import SqlNotAllowed, ToolCancelled, ToolError, ToolTimeout
from tools.registry import ToolContext, tool

MEMORY_KEY = {"type": "string", "minLength": 1, "maxLength": 200}


@tool(
    "memory.get",
    schema={
        "type": "object",
        "properties": {"key": MEMORY_KEY},
        "required": ["key"],
        "additionalProperties": False,
    },
    timeout_s=10,
)
def memory_get(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """Read one entry of the tenant's memory: `{key, found, value, version}`."""
    try:
        entry = memory_selectors.memory_get(key=args["key"])
    except NotFound:
        return {"key": args["key"], "found": False, "value": None, "version": None}
    return {"key": entry.key, "found": True, "value": entry.value, "version": entry.version}


@tool(
    "memory.put",
    schema={
        "type": "object",
        "properties": {"key": MEMORY_KEY, "value": {}},
        "required": ["key", "value"],
        "additionalProperties": False,
    },
    timeout_s=10,
)
def memory_put(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """Store a value in the tenant's memory: `{key, version, created}`."""
    entry, created = memory_services.memory_put(key=args["key"], value=args["value"])
    return {"key": entry.key, "version": entry.version, "created": created}


@tool(
    "echo",
    schema={"type": "object"},
    timeout_s=5,
    max_retries=0,
)
def echo(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """Return the arguments as they are (for tests, benchmarks and plumbing checks)."""
    return args


@tool(
    "sleep",
    schema={
        "type": "object",
        "properties": {"seconds": {"type": "number", "minimum": 0, "maximum": 3600}},
        "required": ["seconds"],
        "additionalProperties": False,
    },
    timeout_s=60,
    max_retries=0,
)
def sleep(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """Wait `seconds` (cancellable; past the tool's timeout the call fails with `timeout`)."""
    started = time.monotonic()
    if not ctx.wait(float(args["seconds"])):
        raise ToolCancelled("The call was cancelled while sleeping.")
    return {"slept_s": round(time.monotonic() - started, 3)}


# --- sql.query ------------------------------------------------------------------------------------
# A fresh read-only connection per call (`mode=ro`, `query_only`), and an authorizer that allows
# reading and nothing else: no write, no ATTACH/DETACH, no PRAGMA but a few introspection reads,
# no transaction control. One statement only (sqlite3 refuses more). A progress handler stops a
# query at the tool's deadline or when the call is cancelled.
_ALLOWED = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    sqlite3.SQLITE_RECURSIVE,
}
_READ_PRAGMAS = {"table_info", "table_xinfo", "index_list", "index_info", "foreign_key_list"}


class _Authorizer:
    """Allow reads only, and remember a denial: SQLite does not always report one as
    SQLITE_AUTH (a denied CREATE on a connection that has not read the schema yet fails
    with SQLITE_SCHEMA, "not authorized")."""

    def __init__(self) -> None:
        self.denied = False

    def __call__(self, action: int, arg1: str | None, arg2: str | None, *_: Any) -> int:
        if action in _ALLOWED:
            return sqlite3.SQLITE_OK
        # These pragmas only read; their argument (arg2) is a table or index name.
        if action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() in _READ_PRAGMAS:
            return sqlite3.SQLITE_OK
        self.denied = True
        return sqlite3.SQLITE_DENY


def _json_cell(value: Any) -> Any:
    return value.hex() if isinstance(value, bytes) else value


@tool(
    "sql.query",
    schema={
        "type": "object",
        "properties": {
            "sql": {"type": "string", "minLength": 1, "maxLength": 20000},
            "params": {
                "type": "array",
                "maxItems": 100,
                "items": {"type": ["string", "number", "integer", "boolean", "null"]},
            },
            "limit": {"type": "integer", "minimum": 1, "maximum": 100000},
        },
        "required": ["sql"],
        "additionalProperties": False,
    },
    timeout_s=10,
    max_retries=0,
)
def sql_query(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """Run one read-only SELECT on the tenant's database: `{columns, rows, truncated}`.

    At most `limit` rows (capped by SQL_QUERY_MAX_ROWS); writes, ATTACH, PRAGMA (but
    table_info and friends) and transaction control are refused with `sql_not_allowed`.
    """
    limit = min(int(args.get("limit", settings.SQL_QUERY_MAX_ROWS)), settings.SQL_QUERY_MAX_ROWS)
    path = absolute(current_tenant().database.path)
    connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, isolation_level=None)
    try:
        connection.execute("PRAGMA query_only = 1")
        authorizer = _Authorizer()
        connection.set_authorizer(authorizer)
        connection.set_progress_handler(
            lambda: int(ctx.cancelled.is_set() or time.monotonic() > ctx.deadline), 10000
        )
        try:
            cursor = connection.execute(args["sql"], args.get("params", []))
            rows = cursor.fetchmany(limit + 1)
        except sqlite3.ProgrammingError as exc:  # more than one statement, wrong params
            raise SqlNotAllowed(f"Send one SELECT statement with matching params: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            code = getattr(exc, "sqlite_errorcode", None)
            if authorizer.denied or code == sqlite3.SQLITE_AUTH:
                raise SqlNotAllowed(
                    "sql.query runs read-only SELECTs only: writes, ATTACH, PRAGMA and "
                    "transaction control are refused."
                ) from exc
            if code == sqlite3.SQLITE_INTERRUPT:
                if ctx.cancelled.is_set():
                    raise ToolCancelled("The query was cancelled.") from exc
                raise ToolTimeout("The query ran past the tool's timeout.") from exc
            if code == sqlite3.SQLITE_READONLY:
                raise SqlNotAllowed(f"The statement was refused: {exc}") from exc
            raise ToolError(f"The query failed: {exc}", code="sql_error") from exc
        if cursor.description is None:
            raise SqlNotAllowed("sql.query runs SELECT statements only.")
        columns = [column[0] for column in cursor.description]
    finally:
        connection.close()
    return {
        "columns": columns,
        "rows": [[_json_cell(v) for v in row] for row in rows[:limit]],
        "truncated": len(rows) > limit,
    }
