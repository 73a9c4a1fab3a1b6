"""Schemas every API router shares."""

from ninja import Schema


class ErrorBody(Schema):
    code: str
    message: str


class ErrorOut(Schema):
    error: ErrorBody
