"""django-tenants as its documentation sets it up: schema per tenant, routed by Host.

`TenantMainMiddleware` first; the public schema holds `customers` (tenants and their domains),
every tenant schema holds `toolcalls` (runs and tool calls). Each tenant has the domain
`<slug>.peers.test`; the benchmark client sends it as the Host header over loopback.
"""

from bench.peers.common import BASE_SETTINGS, database

globals().update(BASE_SETTINGS)

SHARED_APPS = ["django_tenants", "django.contrib.contenttypes", "bench.peers.dt.customers"]
TENANT_APPS = ["bench.peers.dt.toolcalls"]
INSTALLED_APPS = SHARED_APPS + [app for app in TENANT_APPS if app not in SHARED_APPS]

TENANT_MODEL = "customers.Client"
TENANT_DOMAIN_MODEL = "customers.Domain"

DATABASES = {"default": database("bench_dt", "django_tenants.postgresql_backend")}
DATABASE_ROUTERS = ["django_tenants.routers.TenantSyncRouter"]

MIDDLEWARE = [
    "django_tenants.middleware.main.TenantMainMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "bench.peers.dt.urls"
WSGI_APPLICATION = "bench.peers.dt.wsgi.application"
