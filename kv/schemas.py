"""Request and response schemas of the KV API."""

from datetime import datetime
from typing import Any

from ninja import Schema
from pydantic import ConfigDict, Field


class KvIn(Schema):
    model_config = ConfigDict(extra="forbid", strict=True)

    value: Any = Field(..., description="Any JSON value; at most KV_MAX_VALUE_BYTES encoded.")
    ttl_s: int | None = Field(
        None,
        ge=1,
        description="Seconds to keep it: default KV_DEFAULT_TTL_S, at most KV_MAX_TTL_S.",
    )


class KvOut(Schema):
    key: str
    value: Any
    size_bytes: int
    updated_at: datetime
    expires_at: datetime = Field(..., description="At the latest; it may be evicted before.")
