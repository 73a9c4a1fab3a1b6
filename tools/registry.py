"""The tool registry: Python callables agents may run as async tool calls.

Register with the decorator, from a module your AppConfig's `ready()` imports (or one listed in
`TOOL_MODULES`):

    @tool("weather.today", schema={"type": "object", "properties": {...}}, timeout_s=10)
    def weather_today(args: dict, ctx: ToolContext) -> Any: ...

A tool receives its arguments (already validated against `schema`, a JSON Schema) and a
`ToolContext`; the tenant and run of the call are bound (`tenancy.context`), so tenant- and
run-scoped models reach the caller's own databases. It returns any JSON value, or raises a
`ToolError` (recorded as the call's error), a `RetryableToolError` (retried with backoff) or
anything else (recorded as `tool_error`). Every change to the registry moves its `digest`,
which names the cached `GET /api/v1/tools` listing (`tools.selectors`).
"""

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jsonschema_rs

from runs.models import NAME_PATTERN, NAME_RULE
from tools.exceptions import InvalidArgs, UnknownTool

if TYPE_CHECKING:
    from runs.models import Run
    from tenants.models import Tenant

_NAME_RE = re.compile(NAME_PATTERN)
MAX_ARG_ERRORS = 10


@dataclass
class ToolContext:
    """What a running tool knows about its call. `wait()` is the cancellable, deadline-aware
    sleep tools should use instead of `time.sleep`."""

    tenant: "Tenant"
    run: "Run"
    seq: int
    attempt: int
    deadline: float  # time.monotonic() when the tool's timeout strikes
    cancelled: threading.Event = field(default_factory=threading.Event)

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; return False at once if the call was cancelled meanwhile."""
        return not self.cancelled.wait(seconds)


ToolFunction = Callable[[Any, ToolContext], Any]


@dataclass(frozen=True)
class Tool:
    name: str
    function: ToolFunction = field(repr=False)
    schema: dict[str, Any]
    timeout_s: float
    max_retries: int
    description: str
    validator: Any = field(repr=False, compare=False)

    def check_args(self, args: Any) -> None:
        """Raise `InvalidArgs` (422) naming the problems of `args` against the schema."""
        details = []
        for error in self.validator.iter_errors(args):
            details.append({"loc": ["body", "args", *error.instance_path], "msg": error.message})
            if len(details) >= MAX_ARG_ERRORS:
                break
        if details:
            problems = "; ".join(
                ".".join(str(part) for part in d["loc"]) + f": {d['msg']}" for d in details
            )
            raise InvalidArgs(
                f"Arguments of tool {self.name!r} do not match its schema: {problems}.",
                details=details,
            )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "args_schema": self.schema,
            "timeout_s": self.timeout_s,
            "max_retries": self.max_retries,
        }


class Registry:
    """Tools by name. Thread-safe; `digest` changes with every registration or removal."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tools: dict[str, Tool] = {}
        self._digest: str | None = None

    def register(
        self,
        name: str,
        function: ToolFunction,
        *,
        schema: dict[str, Any] | None = None,
        timeout_s: float | None = None,
        max_retries: int = 3,
        description: str = "",
        replace: bool = False,
    ) -> Tool:
        """Add a tool; an existing name is a `ValueError` unless `replace`."""
        from django.conf import settings

        if not _NAME_RE.match(name):
            raise ValueError(f"Tool name {name!r} is invalid: {NAME_RULE}.")
        schema = schema if schema is not None else {"type": "object"}
        try:
            validator = jsonschema_rs.validator_for(schema)
        except (ValueError, jsonschema_rs.ValidationError) as exc:
            raise ValueError(
                f"Tool {name!r}: its schema is not a valid JSON Schema: {exc}"
            ) from exc
        timeout = float(timeout_s if timeout_s is not None else settings.TOOL_DEFAULT_TIMEOUT_S)
        if not 0 < timeout <= settings.TOOL_MAX_TIMEOUT_S:
            raise ValueError(
                f"Tool {name!r}: timeout_s={timeout:g} must be above 0 and at most "
                f"TOOL_MAX_TIMEOUT_S ({settings.TOOL_MAX_TIMEOUT_S:g})."
            )
        description = description or (function.__doc__ or "").strip().split("\n\n")[0]
        entry = Tool(name, function, schema, timeout, max_retries, description, validator)
        with self._lock:
            if name in self._tools and not replace and self._tools[name].function is not function:
                raise ValueError(f"Tool {name!r} is already registered; pass replace=True.")
            self._tools[name] = entry
            self._digest = None
        return entry

    def unregister(self, name: str) -> None:
        with self._lock:
            self._tools.pop(name, None)
            self._digest = None

    def get(self, name: str) -> Tool:
        tool = self._tools.get(name)
        if tool is None:
            raise UnknownTool(
                f"No tool {name[:140]!r} is registered; GET /api/v1/tools lists them."
            )
        return tool

    def all(self) -> list[Tool]:
        with self._lock:
            return sorted(self._tools.values(), key=lambda t: t.name)

    @property
    def digest(self) -> str:
        """A hash of every tool's description: it names this registry's cached listing."""
        with self._lock:
            if self._digest is None:
                listing = [t.describe() for t in sorted(self._tools.values(), key=lambda t: t.name)]
                encoded = json.dumps(listing, sort_keys=True, default=str).encode()
                self._digest = hashlib.sha256(encoded).hexdigest()[:32]
            return self._digest


registry = Registry()


def tool(
    name: str,
    *,
    schema: dict[str, Any] | None = None,
    timeout_s: float | None = None,
    max_retries: int = 3,
    description: str = "",
) -> Callable[[ToolFunction], ToolFunction]:
    """Register the decorated function as the tool `name` (see the module's docstring)."""

    def decorate(function: ToolFunction) -> ToolFunction:
        registry.register(
            name,
            function,
            schema=schema,
            timeout_s=timeout_s,
            max_retries=max_retries,
            description=description,
        )
        return function

    return decorate
