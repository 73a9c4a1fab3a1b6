"""One shared PostgreSQL database for every tenant: plain Django, a `tenant_id` on each run."""

from bench.peers.common import BASE_SETTINGS, database

globals().update(BASE_SETTINGS)

INSTALLED_APPS = ["django.contrib.contenttypes", "bench.peers.pgshared.apps.PgSharedConfig"]
DATABASES = {"default": database("bench_pgshared", "django.db.backends.postgresql")}
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "bench.peers.pgshared.urls"
WSGI_APPLICATION = "bench.peers.pgshared.wsgi.application"
