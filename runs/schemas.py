"""Request and response schemas of the runs API. Every limit here is in the OpenAPI schema."""

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, NotRequired

from ninja import Schema
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    FiniteFloat,
    model_validator,
)
from pydantic import (
    Strict as StrictType,
)
from typing_extensions import TypedDict  # pydantic needs it below Python 3.12

from project.schemas import PAGE_RULE
from runs.models import LABEL_RULE, MAX_LABELS, NAME_PATTERN, NAME_RULE

KEY_PATTERN = r"^[!-~]{1,200}$"  # printable ASCII, no spaces
MAX_INT = 2_147_483_647
MAX_SEQ = 9_223_372_036_854_775_807


class Strict(BaseModel):
    """A request body: unknown fields and every type coercion (`"1"` or `true` for 1) are 422.

    A plain pydantic model: ninja's `Schema` adds a wrap validator per instance for reading ORM
    attributes, which request bodies never need and which cost ~90 us per event of a batch.
    """

    model_config = ConfigDict(extra="forbid", strict=True)


def _iso_string(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("send an ISO 8601 date-time string with a time zone")
    return value


# JSON has no date-time type: parse the string (strict mode would refuse any), nothing else;
# held in UTC from then on, as the database reads it back (an answer then matches a later GET).
IsoDatetime = Annotated[
    AwareDatetime,
    StrictType(False),
    BeforeValidator(_iso_string),
    AfterValidator(lambda moment: moment.astimezone(UTC)),
]


class RunIn(Strict):
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Free-form JSON object, at most RUN_METADATA_MAX_BYTES."
    )
    labels: list[str] = Field(
        default_factory=list,
        max_length=MAX_LABELS,
        description=f"Up to {MAX_LABELS} labels of {LABEL_RULE}.",
    )


class RunCountsOut(Schema):
    tool_calls: int
    events: int
    state_version: int
    db_bytes: int


class RunOut(Schema):
    id: str
    status: Literal["active", "succeeded", "failed", "expired"]
    metadata: dict[str, Any]
    labels: list[str]
    created_at: datetime
    finished_at: datetime | None
    duration_s: float | None
    summary: Any = None
    counts: RunCountsOut | None = Field(
        None,
        description="Live for GET /runs/{id}; in lists, only for finished runs; null for a "
        "run that failed without its database.",
    )
    database_state: str = Field(
        "ready", description="The run database's registry state: ready, damaged, missing, ..."
    )
    database_error: str | None = Field(
        None, description="The last fault recorded for the run's database, if any."
    )


class RunPage(Schema):
    items: list[RunOut]
    next: str | None = Field(None, description=f"Pass as `cursor` for the next page. {PAGE_RULE}")


class ToolCallIn(Strict):
    name: str = Field(..., pattern=NAME_PATTERN, description=f"Tool name: {NAME_RULE}.")
    args: Any = Field(default_factory=dict, description="JSON, at most TOOL_ARGS_MAX_BYTES.")
    idempotency_key: str | None = Field(
        None,
        pattern=KEY_PATTERN,
        description="Retries with the same key and body return the first call (200); "
        "the same key with another name or args is a 409.",
    )
    run_async: bool = Field(
        False,
        alias="async",
        description="Run the registered tool `name` on a worker: 202 `queued`, args checked "
        "against the tool's schema (GET /api/v1/tools).",
    )


class ToolCallOut(Schema):
    seq: int
    name: str
    args: Any
    status: Literal["pending", "queued", "running", "succeeded", "failed", "cancelled"]
    attempts: int = Field(0, description="Async calls: how many times a worker started it.")
    result: Any = None
    error: Any = None
    idempotency_key: str | None
    created_at: datetime
    completed_at: datetime | None
    started_at: datetime | None
    duration_ms: float | None
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None


class ToolCallOutcomeIn(Strict):
    result: Any = Field(None, description="Set exactly one of `result` and `error`.")
    error: Any = Field(None, description="Set exactly one of `result` and `error`.")
    started_at: IsoDatetime | None = None
    duration_ms: FiniteFloat | None = Field(None, ge=0)
    input_tokens: int | None = Field(None, ge=0, le=MAX_INT)
    output_tokens: int | None = Field(None, ge=0, le=MAX_INT)
    cost_usd: FiniteFloat | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _one_outcome(self) -> "ToolCallOutcomeIn":
        given = {"result", "error"} & self.model_fields_set
        if len(given) != 1:
            raise ValueError("send exactly one of `result` and `error`")
        return self


class ToolCallPage(Schema):
    items: list[ToolCallOut]
    next: int | None = Field(None, description=f"Pass as `after` for the next page. {PAGE_RULE}")


# A TypedDict, not a model: validated about 3x faster per event (a 1,000-event batch: ~0.5
# against ~1.4 ms, spent in C holding the GIL that the run's writer waits for; decision 0048).
class EventIn(TypedDict):
    """One event of a batch."""

    __pydantic_config__ = ConfigDict(extra="forbid", strict=True)  # type: ignore[misc]

    kind: Annotated[str, Field(pattern=NAME_PATTERN, description=f"Event kind: {NAME_RULE}.")]
    payload: NotRequired[
        Annotated[Any, Field(description="JSON, at most EVENT_PAYLOAD_MAX_BYTES.")]
    ]


class EventsIn(Strict):
    events: list[EventIn] = Field(
        ..., min_length=1, description="1 to EVENTS_MAX_BATCH (1,000) events; more is a 413."
    )


class EventsOut(Schema):
    seqs: list[int]


class EventOut(Schema):
    seq: int
    kind: str
    payload: Any = None
    created_at: datetime


class EventPage(Schema):
    items: list[EventOut]
    next: int | None = Field(None, description=f"Pass as `after` for the next page. {PAGE_RULE}")


class StateIn(Strict):
    state: Any = Field(..., description="JSON, at most STATE_MAX_BYTES.")
    version: int | None = Field(
        None, ge=0, le=MAX_INT, description="The version this update replaces (or If-Match)."
    )


class StateOut(Schema):
    version: int = Field(..., description="0 before the first checkpoint.")
    state: Any = None
    updated_at: datetime | None = None


class CompleteIn(Strict):
    status: Literal["succeeded", "failed"]
    summary: Any = Field(None, description="JSON, at most RUN_METADATA_MAX_BYTES.")
