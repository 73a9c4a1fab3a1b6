"""Shared fixtures: a fresh DATA_DIR per test, tenants, API clients, Redis, a gunicorn server.

Tenant and run connections are not Django-registered aliases (see tenants/connections.py), so
tests use the ordinary `django_db` mark: the control plane is pytest-django's test database and
tenant files live in the test's own DATA_DIR (decision 0003).
"""

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tenancy import connections as tenant_connections
from tenancy.scopes import Scope
from tests.processes import (
    free_port,
    migrate_with_tenants,
    project_env,
    start_gunicorn,
    stop_gunicorn,
    wait_http,
)

TEST_REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/15"


@pytest.fixture(scope="session")
def template_cache(tmp_path_factory: pytest.TempPathFactory, django_db_blocker) -> Path:
    """Build the tenant template once per session; each test's DATA_DIR gets a copy."""
    from django.conf import settings

    from tenancy.templates import ensure_template

    cache = tmp_path_factory.mktemp("templates-cache")
    original = settings.DATA_DIR
    settings.DATA_DIR = cache
    try:
        with django_db_blocker.unblock():
            ensure_template(Scope.TENANT)
    finally:
        settings.DATA_DIR = original
        tenant_connections.close_all()
    return cache / "templates"


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, settings, template_cache: Path) -> Iterator[Path]:
    directory = tmp_path / "data"
    shutil.copytree(template_cache, directory / "templates")
    settings.DATA_DIR = directory
    settings.STORAGES = {
        **settings.STORAGES,
        **{
            kind: {
                "BACKEND": "django.core.files.storage.FileSystemStorage",
                "OPTIONS": {"location": str(directory / kind)},
            }
            for kind in ("archives", "artifacts")
        },
    }
    # Archiving on completion removes the live file; tests/audit turns it on where it matters.
    settings.ARCHIVE_ON_COMPLETE = False
    # In-process tests change rows under the API's feet; memo tests turn it back on.
    settings.API_LOOKUP_CACHE_SECONDS = 0
    # Keys' last use written by the request, not by a thread writing the test database behind
    # the tests' backs; tests/tenants/test_usage.py turns the thread on.
    settings.API_KEY_USAGE_FLUSH_S = 0
    yield directory
    tenant_connections.close_all()


@pytest.fixture
def tenant(db):
    from tenants.services import tenant_create

    return tenant_create(slug="acme", name="Acme")


@pytest.fixture
def other_tenant(db):
    from tenants.services import tenant_create

    return tenant_create(slug="globex", name="Globex")


@pytest.fixture
def client(client):
    """pytest-django's client, with /api/ served by the API's lean middleware as in production
    (project/wsgi.py)."""
    from django.test.client import ClientHandler

    from project.wsgi import ApiMiddlewareMixin, is_api

    class ApiClientHandler(ApiMiddlewareMixin, ClientHandler):
        pass

    site, api = client.handler, ApiClientHandler(enforce_csrf_checks=False)

    class ByPath:
        def __call__(self, environ):
            return (api if is_api(environ) else site)(environ)

        def __getattr__(self, name):
            return getattr(site, name)

    client.handler = ByPath()
    return client


@dataclass
class ApiClient:
    """Django's test client with a tenant's bearer key on every request."""

    client: object
    key: str

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def get(self, path: str, **kw):
        return self.client.get(path, headers=self._headers(), **kw)

    def delete(self, path: str, **kw):
        return self.client.delete(path, headers=self._headers(), **kw)

    def put(self, path: str, data=None, raw: str | bytes | None = None, **kw):
        import json

        body = raw if raw is not None else json.dumps(data)
        return self.client.put(
            path, body, content_type="application/json", headers=self._headers(), **kw
        )


@pytest.fixture
def api(client, tenant) -> ApiClient:
    from tenants.services import api_key_create

    _, raw = api_key_create(tenant=tenant)
    return ApiClient(client, raw)


@pytest.fixture
def other_api(client, other_tenant) -> ApiClient:
    from tenants.services import api_key_create

    _, raw = api_key_create(tenant=other_tenant)
    return ApiClient(client, raw)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A real Redis on a separate db number, flushed around the test."""
    conn = redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=2)
    try:
        conn.ping()
    except redis.RedisError as exc:
        pytest.fail(
            f"Redis is unreachable at {TEST_REDIS_URL} ({exc}). Start it with: redis-server "
            '--daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no '
            "(or set REDIS_URL)."
        )
    conn.flushdb()
    yield TEST_REDIS_URL
    conn.flushdb()


@dataclass
class Server:
    base: str
    keys: dict[str, str]
    data_dir: Path
    env: dict[str, str]


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """gunicorn serving the project on a free loopback port, with tenants acme and globex."""
    data_dir = tmp_path_factory.mktemp("server-data")
    port = free_port()
    env = project_env(data_dir, PORT=str(port), WEB_CONCURRENCY="2", WEB_THREADS="4", ACCESS_LOG="")
    keys = migrate_with_tenants(env, "acme", "globex", "fuzz")
    proc = start_gunicorn(env, data_dir / "gunicorn.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/healthz")
        yield Server(base=base, keys=keys, data_dir=data_dir, env=env)
    finally:
        stop_gunicorn(proc)
