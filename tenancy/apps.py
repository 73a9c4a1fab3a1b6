from django.apps import AppConfig


class TenancyConfig(AppConfig):
    """The database engine: connections, routing, templates, provisioning, fleet migrations."""

    name = "tenancy"
    verbose_name = "Database engine"
