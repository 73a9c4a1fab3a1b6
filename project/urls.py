from django.contrib import admin
from django.urls import path

from project.api import api
from project.views import healthz

urlpatterns = [
    path("api/", api.urls),
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
]

handler400 = "project.views.bad_request"
handler404 = "project.views.not_found"
