"""A tenant-scoped endpoint over `Note`: the ORM selects every column the code's model has."""

from typing import Any

from django.http import HttpRequest
from ninja import Router

from tests.fleetapp.models import Note

router = Router(tags=["fleet test"])


@router.get("/notes")
def notes(request: HttpRequest) -> dict[str, Any]:
    rows = list(Note.objects.order_by("id").values("id", "text", "pinned")[:5])
    return {"items": rows, "count": Note.objects.count()}
