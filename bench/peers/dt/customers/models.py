from django.db import models
from django_tenants.models import DomainMixin, TenantMixin


class Client(TenantMixin):
    name = models.CharField(max_length=100)
    key_hash = models.CharField(max_length=64, help_text="SHA-256 of the tenant's bearer key.")

    auto_create_schema = True


class Domain(DomainMixin):
    pass
