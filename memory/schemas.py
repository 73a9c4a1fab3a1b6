"""Request and response schemas of the memory API."""

from datetime import datetime
from typing import Any

from ninja import Schema
from pydantic import ConfigDict, Field

from project.schemas import PAGE_RULE


class MemoryIn(Schema):
    model_config = ConfigDict(extra="forbid", strict=True)

    value: Any = Field(..., description="Any JSON value; at most MEMORY_MAX_VALUE_BYTES encoded.")


class MemoryOut(Schema):
    key: str
    value: Any
    version: int = Field(..., description="1 on creation, +1 on every replacement.")
    size_bytes: int
    created_at: datetime
    updated_at: datetime


class MemoryPage(Schema):
    items: list[MemoryOut]
    next: str | None = Field(
        None, description=f"Pass as `cursor` for the next page; null at the end. {PAGE_RULE}"
    )
