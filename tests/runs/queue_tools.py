"""Tools only the queue tests register (TOOL_MODULES=tests.runs.queue_tools in their processes)."""

import time
from typing import Any

from memory import services as memory_services
from tools.exceptions import RetryableToolError, ToolError
from tools.registry import ToolContext, tool


@tool("test.fail", max_retries=0)
def fail(args: Any, ctx: ToolContext) -> Any:
    raise ToolError("the tool failed on purpose", code="boom")


@tool(
    "test.flaky",
    schema={"type": "object", "properties": {"succeed_on": {"type": "integer"}}},
    max_retries=3,
)
def flaky(args: Any, ctx: ToolContext) -> Any:
    if ctx.attempt < args["succeed_on"]:
        raise RetryableToolError(f"attempt {ctx.attempt} failed (transient)")
    return {"attempt": ctx.attempt}


@tool("test.stuck", timeout_s=1, max_retries=0)
def stuck(args: Any, ctx: ToolContext) -> Any:
    time.sleep(60)  # not cooperative: only the timeout stops it


@tool(
    "test.count",
    schema={"type": "object", "properties": {"seconds": {"type": "number"}}},
    timeout_s=30,
    max_retries=0,
)
def count(args: Any, ctx: ToolContext) -> Any:
    """Count its own executions in tenant memory, then wait."""
    entry, _ = memory_services.memory_put(key=f"runs/{ctx.run.id}/{ctx.seq}", value=ctx.attempt)
    ctx.wait(args.get("seconds", 0))
    return {"executions": entry.version}


@tool(
    "test.block",
    schema={"type": "object", "properties": {"seconds": {"type": "number"}}},
    timeout_s=120,
    max_retries=0,
)
def block(args: Any, ctx: ToolContext) -> Any:
    """Sleep, deaf to `ctx.wait` and cancels: only a signal stops it before its end."""
    time.sleep(args.get("seconds", 60))
    return {"slept": args.get("seconds", 60)}
