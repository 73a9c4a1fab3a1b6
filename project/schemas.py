"""Schemas every API router shares."""

from ninja import Schema

PAGE_RULE = (
    "A page ends after `limit` items or before its items pass API_MAX_PAGE_BYTES of JSON "
    "(4 MiB by default; a single larger item still comes alone), whichever comes first."
)


class ErrorBody(Schema):
    code: str
    message: str


class ErrorOut(Schema):
    error: ErrorBody
