import os
from typing import Any

from django.core.management.base import BaseCommand

from tenants.models import Tenant
from tenants.services import api_key_create, tenant_create


class Command(BaseCommand):
    help = "Ensure a tenant `demo` with an API key exists; print the key (once) and the URLs."

    def handle(self, *args: Any, **options: Any) -> None:
        base = f"http://127.0.0.1:{os.environ.get('PORT', '8000')}"
        tenant = Tenant.objects.filter(slug="demo").first()
        if tenant is None:
            tenant = tenant_create(slug="demo", name="Demo")
            _, raw = api_key_create(tenant=tenant, name="make run")
            self.stdout.write(
                f"Created tenant demo. Its API key (shown only now, keep it):\n\n    {raw}\n\n"
                f"Try: curl -H 'Authorization: Bearer {raw}' {base}/api/v1/memory"
            )
        else:
            self.stdout.write(
                "Tenant demo exists; its key was printed when it was created. "
                "New key: .venv/bin/python manage.py create_api_key demo"
            )
        self.stdout.write(
            f"API {base}/api/v1/  docs {base}/api/docs  health {base}/healthz  admin {base}/admin/ "
            "(.venv/bin/python manage.py createsuperuser)"
        )
