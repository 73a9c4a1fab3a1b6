"""`GET /api/v1/tools`: the registered tools with their argument schemas."""

from django.http import HttpRequest
from ninja import Router

from project.schemas import ErrorOut
from tools import selectors
from tools.schemas import ToolOut, ToolPage

router = Router(tags=["tools"])


@router.get(
    "/tools",
    response={200: ToolPage, 401: ErrorOut},
    summary="List the tools async tool calls may name (from the cache)",
)
def tools_list(request: HttpRequest) -> ToolPage:
    return ToolPage(items=[ToolOut(**tool) for tool in selectors.tools_list()], next=None)
