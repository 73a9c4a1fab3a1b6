"""Revocation reaches every gunicorn worker within a second, with Redis and embedded.

An operator revokes a key, suspends or deletes a tenant in the admin (served by one of two
workers); from one second after the admin answered, every request with that key, on either
worker, is refused. API lookups are memoised for a minute here, so only the revocation
generation (`tenants.revocation`) can make that happen in time. The access log records each
answering worker's pid, which shows both workers refused.
"""

import json
import re
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import requests
from django.contrib.admin.utils import quote

from tests.conftest import TEST_REDIS_URL
from tests.processes import free_port, manage, project_env, start_gunicorn, stop_gunicorn, wait_http

pytestmark = pytest.mark.processes

WITHIN_S = 1.0
WATCH_S = 2.0  # keep asking this long after the admin answered
PASSWORD = "revoke-it-now"
TENANTS = ("revoke", "suspend", "delete")


@dataclass
class Served:
    base: str
    keys: dict[str, str]
    data_dir: Path
    log: Path


@pytest.fixture(scope="module", params=["embedded", "redis"])
def served(request, tmp_path_factory) -> Iterator[Served]:
    data_dir = tmp_path_factory.mktemp(f"revocation-{request.param}")
    port = free_port()
    extra = {
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "WEB_THREADS": "4",
        "ACCESS_LOG": "-",
        # The pid of the worker that answered, then the status and the request line.
        "GUNICORN_CMD_ARGS": "--access-logformat 'pid=%(p)s status=%(s)s %(r)s'",
        "API_LOOKUP_CACHE_SECONDS": "60",
    }
    if request.param == "redis":
        conn = redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=2)
        try:
            conn.flushdb()
        except redis.RedisError as exc:
            pytest.fail(f"Redis is unreachable at {TEST_REDIS_URL} ({exc}); start it or set it.")
        extra["REDIS_URL"] = TEST_REDIS_URL
    env = project_env(data_dir, **extra)
    manage(env, "migrate", "--no-input", "-v", "0")
    setup = (  # one process instead of seven: an operator, then a tenant and a key each
        "import json\n"
        "from django.contrib.auth.models import User\n"
        "from tenants.services import api_key_create, tenant_create\n"
        f"User.objects.create_superuser('ops', 'o@example.com', {PASSWORD!r})\n"
        f"keys = {{s: api_key_create(tenant=tenant_create(slug=s))[1] for s in {TENANTS!r}}}\n"
        "print(json.dumps(keys))"
    )
    keys = json.loads(manage(env, "shell", "-c", setup).stdout.strip().splitlines()[-1])
    log = data_dir / "gunicorn.log"
    proc = start_gunicorn(env, log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/healthz")
        yield Served(base=base, keys=keys, data_dir=data_dir, log=log)
    finally:
        stop_gunicorn(proc)


def admin_session(served: Served) -> requests.Session:
    session = requests.Session()
    session.get(f"{served.base}/admin/login/", timeout=10)
    response = session.post(
        f"{served.base}/admin/login/",
        data={
            "username": "ops",
            "password": PASSWORD,
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
            "next": "/admin/",
        },
        timeout=10,
    )
    assert response.status_code == 200 and "Log out" in response.text, response.text[:500]
    return session


def admin_post(session: requests.Session, url: str, data: dict) -> None:
    data = {**data, "csrfmiddlewaretoken": session.cookies["csrftoken"]}
    response = session.post(url, data=data, allow_redirects=False, timeout=30)
    assert response.status_code == 302, response.text[:2000]


def control_row(served: Served, sql: str, *args: str) -> tuple:
    with sqlite3.connect(served.data_dir / "control.sqlite3") as conn:
        return conn.execute(sql, args).fetchone()


def call(served: Served, slug: str, tag: str, i: int) -> tuple[float, int]:
    """One API request on a fresh connection (so either worker may take it): (start, status)."""
    headers = {"Authorization": f"Bearer {served.keys[slug]}"}
    started = time.monotonic()
    if i % 2:
        url = f"{served.base}/api/v1/memory/{tag}-{i}"
        status = requests.put(url, json={"value": i}, headers=headers, timeout=10).status_code
    else:
        url = f"{served.base}/api/v1/memory?prefix={tag}"
        status = requests.get(url, headers=headers, timeout=10).status_code
    return started, status


def revoke(served: Served, session: requests.Session, slug: str) -> None:
    (tenant_id,) = control_row(served, "SELECT id FROM tenants_tenant WHERE slug = ?", slug)
    admin = f"{served.base}/admin/tenants"
    quoted = quote(tenant_id)  # the admin unquotes ids: a raw "ten_23..." would be "ten#..."
    if slug == "revoke":
        (key_id,) = control_row(
            served, "SELECT k.id FROM tenants_apikey k WHERE k.tenant_id = ?", tenant_id
        )
        admin_post(session, f"{admin}/apikey/", {"action": "revoke", "_selected_action": key_id})
    elif slug == "suspend":
        admin_post(session, f"{admin}/tenant/{quoted}/change/", {"name": "", "status": "suspended"})
    else:
        admin_post(session, f"{admin}/tenant/{quoted}/delete/", {"post": "yes"})


def pids(served: Served, tag: str, status: int) -> set[str]:
    pattern = re.compile(rf"pid=<?(\d+)>? status={status} \S+ /api/v1/memory\S*{tag}")
    return set(pattern.findall(served.log.read_text()))


@pytest.mark.parametrize("slug", TENANTS)
def test_revocation_in_admin_is_refused_by_every_worker_within_a_second(served, slug):
    session = admin_session(served)
    with ThreadPoolExecutor(16) as pool:
        # Both workers answer (and memoise the key) before the revocation.
        warm = list(pool.map(lambda i: call(served, slug, "warm", i), range(96)))
        assert {status for _, status in warm} <= {200, 201}
        assert len(pids(served, "warm", 200)) == 2, "both workers must have served the key"

        revoke(served, session, slug)
        revoked_at = time.monotonic()
        answers: list[tuple[float, int]] = []
        i = 0
        while time.monotonic() < revoked_at + WATCH_S:  # poll until the deadline
            answers += pool.map(lambda n: call(served, slug, "after", n), range(i, i + 16))
            i += 16

    late = [(t - revoked_at, s) for t, s in answers if t >= revoked_at + WITHIN_S]
    assert len(late) >= 16, "too few requests after the deadline to tell"
    accepted = [(round(t, 3), s) for t, s in late if s != 401]
    assert not accepted, f"accepted more than {WITHIN_S}s after revocation: {accepted[:10]}"
    assert len(pids(served, "after", 401)) == 2, "both workers must have refused the key"
