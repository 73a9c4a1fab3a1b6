"""The tenant KV (`/api/v1/kv/{key}`): cached, eventually consistent, not durable (see
kv/services.py). The middleware has bound the API key's tenant."""

from django.http import HttpRequest, HttpResponse
from ninja import Path, Router

from kv import services
from kv.schemas import KvIn, KvOut
from kv.services import KV_KEY_RULE
from project.schemas import ErrorOut
from tenancy.context import current_tenant

router = Router(tags=["kv"])

KEY = Path(..., description=f"KV key: {KV_KEY_RULE}.")
ERRORS = {400: ErrorOut, 401: ErrorOut, 404: ErrorOut, 413: ErrorOut, 422: ErrorOut, 503: ErrorOut}


@router.get("/kv/{path:key}", response={200: KvOut, **ERRORS}, summary="Read a cached value")
def kv_get(request: HttpRequest, key: str = KEY) -> KvOut:
    return KvOut(**services.kv_get(tenant=current_tenant(), key=key))


@router.put(
    "/kv/{path:key}",
    response={200: KvOut, **ERRORS},
    summary="Cache a value with a TTL (eventually consistent, not durable)",
)
def kv_put(request: HttpRequest, body: KvIn, key: str = KEY) -> KvOut:
    entry = services.kv_put(tenant=current_tenant(), key=key, value=body.value, ttl_s=body.ttl_s)
    return KvOut(**entry)


@router.delete("/kv/{path:key}", response={204: None, **ERRORS}, summary="Drop a cached value")
def kv_delete(request: HttpRequest, key: str = KEY) -> HttpResponse:
    services.kv_delete(tenant=current_tenant(), key=key)
    return HttpResponse(status=204)
