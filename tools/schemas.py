"""Response schemas of the tools API."""

from typing import Any

from ninja import Schema
from pydantic import Field


class ToolOut(Schema):
    name: str
    description: str
    args_schema: dict[str, Any] = Field(..., description="JSON Schema the call's args must match.")
    timeout_s: float = Field(..., description="A call running longer fails with `timeout`.")
    max_retries: int = Field(..., description="Retries (with backoff) of retryable failures.")


class ToolPage(Schema):
    items: list[ToolOut]
    next: None = Field(None, description="Always null: the registry is listed whole.")
