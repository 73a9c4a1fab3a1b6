"""What the OpenAPI schema says beyond the operations: every limit and every error code.

`/api/openapi.json` carries both as extensions (`info.x-limits`, `info.x-error-codes`) and as
tables in `info.description`; values are read from settings when the schema is built.
"""

from typing import Any

from django.conf import settings

# Environment variable → (setting, what happens beyond it).
LIMITS: dict[str, tuple[str, str]] = {
    "API_MAX_BODY_BYTES": (
        "DATA_UPLOAD_MAX_MEMORY_SIZE",
        "bytes of request body, declared or chunked (413 `too_large`)",
    ),
    "API_MAX_PAGE_BYTES": (
        "API_MAX_PAGE_BYTES",
        "bytes of items in one list page; `next` continues after the last item sent",
    ),
    "API_MAX_REQUEST_LINE": (
        "API_MAX_REQUEST_LINE",
        "bytes of method, path and query, enforced by gunicorn (414 `uri_too_long`)",
    ),
    "MEMORY_MAX_VALUE_BYTES": ("MEMORY_MAX_VALUE_BYTES", "bytes of one memory value (413)"),
    "RUN_METADATA_MAX_BYTES": (
        "RUN_METADATA_MAX_BYTES",
        "bytes of a run's metadata or summary (413)",
    ),
    "TOOL_ARGS_MAX_BYTES": ("TOOL_ARGS_MAX_BYTES", "bytes of a tool call's args (413)"),
    "TOOL_RESULT_MAX_BYTES": (
        "TOOL_RESULT_MAX_BYTES",
        "bytes of a tool call's result or error (413)",
    ),
    "EVENT_PAYLOAD_MAX_BYTES": ("EVENT_PAYLOAD_MAX_BYTES", "bytes of one event's payload (413)"),
    "EVENTS_MAX_BATCH": ("EVENTS_MAX_BATCH", "events in one POST /events batch (413)"),
    "STATE_MAX_BYTES": ("STATE_MAX_BYTES", "bytes of one state checkpoint (413)"),
    "ARTIFACT_MAX_BYTES": ("ARTIFACT_MAX_BYTES", "bytes of one artifact (413)"),
    "TENANT_MAX_ACTIVE_RUNS": (
        "TENANT_MAX_ACTIVE_RUNS",
        "active runs per tenant, unless the tenant overrides it (429 `too_many_active_runs`)",
    ),
    "RUN_MAX_DB_BYTES": (
        "RUN_MAX_DB_BYTES",
        "bytes of one run's database, unless the tenant overrides it (413 `run_database_full`)",
    ),
    "KV_MAX_VALUE_BYTES": ("KV_MAX_VALUE_BYTES", "bytes of one KV value (413)"),
    "KV_MAX_TTL_S": ("KV_MAX_TTL_S", "seconds a KV value may be kept (422 beyond)"),
    "TOOL_CALL_WAIT_MAX_S": (
        "TOOL_CALL_WAIT_MAX_S",
        "seconds of `?wait=` on GET .../tool-calls/{seq} (422 beyond)",
    ),
}
# Fixed by the JSON parser (project/strictjson.py), not configurable.
JSON_RULES = (
    "Bodies are strict UTF-8 JSON: no NaN or Infinity, no number beyond a 64-bit float "
    "(1e400), no lone surrogate (\\udfff), at most 200 levels of nesting (400 `bad_request`); "
    'no type coercion (`"1"` or `true` for an integer is 422 `invalid`). '
    "`Transfer-Encoding: chunked` bodies are accepted within API_MAX_BODY_BYTES."
)

# Error code → (HTTP status, meaning).
ERROR_CODES: dict[str, tuple[int, str]] = {
    "bad_request": (400, "unparsable body (not strict JSON), malformed header or request"),
    "unauthorized": (401, "missing, unknown or revoked API key"),
    "forbidden": (403, "refused before the API (for example a failed CSRF check)"),
    "not_found": (404, "no such endpoint, or no such item for this tenant"),
    "method_not_allowed": (405, "the path exists, not with this method (`Allow` lists them)"),
    "conflict": (409, "the request conflicts with the current state"),
    "run_closed": (409, "the run is finished and takes no writes"),
    "stale_version": (409, "the state version is not the current one (`current_version`)"),
    "already_completed": (409, "the tool call already has its outcome"),
    "idempotency_mismatch": (409, "the idempotency key was used with another call (`seq`)"),
    "artifact_exists": (409, "an artifact of that name exists with other bytes"),
    "not_archived": (409, "the run has no archive yet (it is active or being archived)"),
    "run_not_finished": (409, "the run is active: complete it first"),
    "not_cancellable": (409, "the tool call is not a queued or running async call"),
    "too_large": (413, "a body, value or batch over its limit"),
    "run_database_full": (413, "the run's database reached RUN_MAX_DB_BYTES"),
    "uri_too_long": (414, "request line over API_MAX_REQUEST_LINE"),
    "invalid": (422, "well-formed JSON that breaks the schema (`details` locates it)"),
    "invalid_args": (422, "async call args that break the tool's JSON schema (`details`)"),
    "unknown_tool": (422, "an async call of a tool that is not registered (GET /tools)"),
    "too_many_active_runs": (429, "the tenant has TENANT_MAX_ACTIVE_RUNS active runs"),
    "headers_too_large": (431, "too many or too large request headers"),
    "internal_error": (500, "a bug: logged, never caused by client bytes"),
    "unavailable": (503, "a database or Redis is busy or unreachable; retry"),
    "archive_unavailable": (503, "an archived run's file could not be fetched; retry"),
    "archive_damaged": (503, "an archive does not match its recorded SHA-256 (`verify_run`)"),
    "archive_failed": (503, "archiving the run failed; `archive_runs` retries it"),
    "database_quarantined": (503, "the database failed a migration or a check; an operator acts"),
    "database_unavailable": (503, "the tenant's or run's file is missing, damaged or read-only"),
    "schema_migrating": (503, "the database is being migrated to the code's schema (Retry-After)"),
    "run_busy": (503, "the run's writer did not take the write in RUN_WRITE_WAIT_S; not written"),
    "lease_lost": (503, "this writer's lease expired before commit (fenced off); not written"),
    "dependency_unavailable": (503, "Redis or the task queue is unreachable; nothing written"),
}


def limits() -> dict[str, dict[str, Any]]:
    """Return each limit's current value and meaning, keyed by its environment variable."""
    return {
        env: {"value": getattr(settings, setting), "meaning": meaning}
        for env, (setting, meaning) in LIMITS.items()
    }


def extend(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the limits and error codes to an OpenAPI schema's `info`, as data and as text."""
    info = schema.setdefault("info", {})
    current = limits()
    info["x-limits"] = current
    info["x-error-codes"] = {
        code: {"status": status, "meaning": meaning}
        for code, (status, meaning) in ERROR_CODES.items()
    }
    rows = [f"| `{env}` | {item['value']:,} | {item['meaning']} |" for env, item in current.items()]
    codes = [f"| {s} | `{code}` | {meaning} |" for code, (s, meaning) in ERROR_CODES.items()]
    info["description"] = "\n".join(
        [
            info.get("description", ""),
            "",
            "## Limits",
            "",
            "| environment variable | value | limit on |",
            "| --- | --- | --- |",
            *rows,
            "",
            JSON_RULES,
            "",
            "## Error codes",
            "",
            "| status | code | meaning |",
            "| --- | --- | --- |",
            *codes,
        ]
    )
    return schema
