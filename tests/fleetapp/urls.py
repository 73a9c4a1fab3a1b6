"""The project's URLs plus the fleet app's endpoint (mounted before the API's URLs are built)."""

from project.api import api
from tests.fleetapp.api import router

api.add_router("/v1/fleet/", router)

from project.urls import handler404, urlpatterns  # noqa: E402

__all__ = ["handler404", "urlpatterns"]
