"""The only settings module: every value comes from the environment, with an embedded default.

Nothing external is needed to start: without `REDIS_URL` the process runs embedded (inline
Celery tasks, local-memory cache, OS file locks); without `CONTROL_DATABASE_URL` the control plane
is a SQLite file under `DATA_DIR`. See README.md, "Configuration".
"""

import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return default if raw is None or raw == "" else int(raw)


# --- Data directory: tenant and run SQLite files, templates, the default control plane -----------
DATA_DIR = Path(os.environ.get("DATA_DIR") or BASE_DIR / "var").resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)

# --- Core ---------------------------------------------------------------------------------------
# https://docs.djangoproject.com/en/5.2/ref/settings/#secret-key
# Without DJANGO_SECRET_KEY a random key is generated once and kept in DATA_DIR, so sessions
# survive restarts and two instances with different DATA_DIRs never share one.
_secret_file = DATA_DIR / ".secret_key"
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not _secret_file.exists():
        _secret_file.write_text(secrets.token_urlsafe(50))
        _secret_file.chmod(0o600)
    SECRET_KEY = _secret_file.read_text().strip()

DEBUG = _env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = os.environ.get("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "ninja",
    "tenancy",
    "tenants",
    "memory",
    "runs",
    "audit",
    "tools",
    "kv",
]

MIDDLEWARE = [
    # First: it sees every answer under /api/, errors of the middleware below included.
    "project.middleware.ApiResponsesMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "tenants.middleware.ApiKeyTenantMiddleware",
    "project.middleware.FailSafeMiddleware",
]
# What the API does not use: static files, sessions, CSRF (the API takes API keys, never
# cookies), users, messages, frames. `project.wsgi` serves /api/ without them (decision 0043).
SITE_ONLY_MIDDLEWARE = (
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
)
API_MIDDLEWARE = [m for m in MIDDLEWARE if m not in SITE_ONLY_MIDDLEWARE]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"
ASGI_APPLICATION = "project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Databases ----------------------------------------------------------------------------------
# https://docs.djangoproject.com/en/5.2/ref/databases/#sqlite-notes
# Every SQLite connection (control plane, tenant, run): WAL, synchronous=NORMAL (configurable),
# busy timeout, foreign keys on (Django sets it), BEGIN IMMEDIATE for writers.
SQLITE_SYNCHRONOUS = os.environ.get("SQLITE_SYNCHRONOUS", "NORMAL").upper()
SQLITE_BUSY_TIMEOUT_S = float(os.environ.get("SQLITE_BUSY_TIMEOUT_S", "5"))
SQLITE_OPTIONS = {
    "transaction_mode": "IMMEDIATE",
    "timeout": SQLITE_BUSY_TIMEOUT_S,
    "init_command": f"PRAGMA journal_mode=WAL; PRAGMA synchronous={SQLITE_SYNCHRONOUS};",
}

CONTROL_DATABASE_URL = os.environ.get(
    "CONTROL_DATABASE_URL", f"sqlite:///{DATA_DIR / 'control.sqlite3'}"
)
_control = dj_database_url.parse(CONTROL_DATABASE_URL, conn_max_age=600, conn_health_checks=True)
if _control["ENGINE"] == "django.db.backends.sqlite3":
    _control["OPTIONS"] = {**SQLITE_OPTIONS, **_control.get("OPTIONS", {})}
DATABASES = {"default": _control}
DATABASE_ROUTERS = ["tenancy.router.ScopeRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# How many tenant/run connections one thread holds at once (each WAL connection counts 4 fds);
# past it, its least recently used are closed (decision 0052).
TENANCY_CONNECTIONS_PER_THREAD = _env_int("TENANCY_CONNECTIONS_PER_THREAD", 64)
# Budgets per process (decision 0018): at most this many tenant/run connections open at once,
# fewer if RLIMIT_NOFILE leaves less room (4 fds each, after TENANCY_FD_RESERVE, by default
# 32 + 8 x WEB_THREADS + a quarter of the limit for sockets); a thread holds at most its share
# (this / WEB_THREADS). Each connection's SQLite page cache is at most SQLITE_CACHE_KIB.
TENANCY_MAX_OPEN_DATABASES = _env_int("TENANCY_MAX_OPEN_DATABASES", 512)
# Idle connections a process keeps for the next request to the same database (decision 0052).
TENANCY_IDLE_CONNECTIONS = _env_int("TENANCY_IDLE_CONNECTIONS", 128)
_fd_reserve = _env_int("TENANCY_FD_RESERVE", -1)
TENANCY_FD_RESERVE: int | None = None if _fd_reserve < 0 else _fd_reserve
SQLITE_CACHE_KIB = _env_int("SQLITE_CACHE_KIB", 256)
# Threads per gunicorn worker (read by project/gunicorn.conf.py too).
WEB_THREADS = _env_int("WEB_THREADS", 8)
# Recorded on every database this node creates; see docs/scaling.md.
HOME_NODE = os.environ.get("HOME_NODE", "local")
# Schema rollouts (docs/deploying.md): one at a time per node; a database behind the code's
# schema is migrated when first opened (waiting at most this long for the rollout lock) or answers
# 503 `schema_migrating` with Retry-After; busy databases are retried this long, never quarantined.
TENANCY_MIGRATE_ON_OPEN = _env_bool("TENANCY_MIGRATE_ON_OPEN", True)
TENANCY_MIGRATE_ON_OPEN_WAIT_S = float(os.environ.get("TENANCY_MIGRATE_ON_OPEN_WAIT_S", "2"))
TENANCY_SCHEMA_RETRY_AFTER_S = _env_int("TENANCY_SCHEMA_RETRY_AFTER_S", 5)
TENANCY_ROLLOUT_LOCK_TTL_S = _env_int("TENANCY_ROLLOUT_LOCK_TTL_S", 300)
TENANCY_ROLLOUT_BUSY_RETRY_S = float(os.environ.get("TENANCY_ROLLOUT_BUSY_RETRY_S", "120"))

# --- Redis: leases, Celery broker, cache (unset = embedded mode) --------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
# Every Redis call of a request gives up after this long (503 `dependency_unavailable`).
REDIS_SOCKET_TIMEOUT_S = float(os.environ.get("REDIS_SOCKET_TIMEOUT_S", "1"))

# --- The run's single writer (runs/writer.py, runs/leases.py) -----------------------------------
# A lease outlives a stalled holder by at most this long; then another may take over.
RUN_LEASE_TTL_S = float(os.environ.get("RUN_LEASE_TTL_S", "5"))
# A write waits at most this long for its run's writer (and the writer for the lease): 503 after.
RUN_WRITE_WAIT_S = float(os.environ.get("RUN_WRITE_WAIT_S", "3"))
# Writes of one run coalesced into one transaction, at most; and how long a leader lingers for more.
RUN_WRITE_BATCH_MAX = _env_int("RUN_WRITE_BATCH_MAX", 256)
RUN_WRITE_LINGER_MS = float(os.environ.get("RUN_WRITE_LINGER_MS", "0"))
# Run databases: FULL makes a 2xx survive power loss (one fsync per group commit).
RUN_SQLITE_SYNCHRONOUS = os.environ.get("RUN_SQLITE_SYNCHRONOUS", "FULL").upper()

# https://docs.djangoproject.com/en/5.2/topics/cache/
if REDIS_URL:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# https://docs.celeryq.dev/en/stable/userguide/configuration.html
CELERY_BROKER_URL = REDIS_URL or "memory://"
# kombu's Redis transport, reusing one client per channel (project/broker.py, decision 0046);
# for redis:// only: an explicit transport would skip kombu's TLS set-up for rediss://.
CELERY_BROKER_TRANSPORT = (
    "project.broker:Transport" if urlsplit(REDIS_URL).scheme == "redis" else None
)
CELERY_RESULT_BACKEND = REDIS_URL or None
CELERY_RESULT_EXPIRES = 3600
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
# A worker killed mid-task (kill -9, OOM): the parent requeues what its child was running; a
# whole worker lost: Redis hands its unacknowledged tasks to another worker after this long.
# Keep it above TOOL_MAX_TIMEOUT_S: a task still running past it is delivered a second time
# (harmless, the call is recorded once, but it runs twice). A message of several calls holds
# calls whose timeouts add up to at most TOOL_MAX_TIMEOUT_S (a prefork child runs them in turn).
CELERY_TASK_REJECT_ON_WORKER_LOST = True
TASK_VISIBILITY_TIMEOUT_S = _env_int("TASK_VISIBILITY_TIMEOUT_S", 3600)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": TASK_VISIBILITY_TIMEOUT_S,
    # Look for tasks of lost workers every few seconds rather than every 100 s (kombu's default).
    "unacked_restore_interval": max(1, min(10, TASK_VISIBILITY_TIMEOUT_S // 4)),
    "unacked_restore_throttle": 1,
    # The mutex a worker takes while it puts lost tasks back: a worker killed while holding it
    # stopped every other worker from restoring anything for kombu's default 300 s.
    "unacked_mutex_expire": 10,
}
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A worker process runs TOOL_WORKER_THREADS messages at once on Celery's threads pool (each of
# up to TOOL_CALLS_PER_MESSAGE calls, run at once): the calls of one run then share its
# writer's transactions (group commit) instead of one each (decisions 0039, 0056).
# TOOL_WORKER_POOL=prefork runs one message per child process instead (its calls in turn,
# SIGALRM timeouts, Celery's hard time limit). It is a setting because Celery's `-P prefork`
# cannot override a configured pool: it reads as "no pool given" (celery/bin/worker.py).
TOOL_WORKER_POOL = os.environ.get("TOOL_WORKER_POOL") or "threads"
if TOOL_WORKER_POOL not in ("threads", "prefork", "solo"):
    raise ValueError(f"TOOL_WORKER_POOL={TOOL_WORKER_POOL!r}: use threads, prefork or solo.")
CELERY_WORKER_POOL = TOOL_WORKER_POOL
TOOL_WORKER_THREADS = _env_int("TOOL_WORKER_THREADS", 16)
if TOOL_WORKER_POOL == "threads":
    CELERY_WORKER_CONCURRENCY = TOOL_WORKER_THREADS

# --- Async tool calls and the tool registry (runs/queue.py, tools/) ------------------------------
# Extra modules registering tools (comma-separated), imported when Django starts.
TOOL_MODULES = [m for m in os.environ.get("TOOL_MODULES", "").split(",") if m.strip()]
# A tool without its own timeout gets this; none may have more than the maximum.
TOOL_DEFAULT_TIMEOUT_S = float(os.environ.get("TOOL_DEFAULT_TIMEOUT_S", "30"))
TOOL_MAX_TIMEOUT_S = float(os.environ.get("TOOL_MAX_TIMEOUT_S", "900"))
# A worker stuck past its tool's timeout (a tool that ignores the soft limit) is killed this
# much later.
TOOL_KILL_GRACE_S = float(os.environ.get("TOOL_KILL_GRACE_S", "5"))
# Async calls of one run committed in one batch travel to a worker in one message, up to this
# many; the worker runs a message's calls at once (decision 0056). 1: a message per call.
TOOL_CALLS_PER_MESSAGE = _env_int("TOOL_CALLS_PER_MESSAGE", 8)
if TOOL_CALLS_PER_MESSAGE < 1:
    raise ValueError(f"TOOL_CALLS_PER_MESSAGE={TOOL_CALLS_PER_MESSAGE}: use 1 or more.")
# Retries of retryable failures wait TOOL_RETRY_BACKOFF_S x 2^(attempt-1), at most the maximum,
# with jitter.
TOOL_RETRY_BACKOFF_S = float(os.environ.get("TOOL_RETRY_BACKOFF_S", "1"))
TOOL_RETRY_BACKOFF_MAX_S = float(os.environ.get("TOOL_RETRY_BACKOFF_MAX_S", "60"))
# Embedded mode (no REDIS_URL): async calls run on a thread pool of this size in each process.
TOOL_EMBEDDED_WORKERS = _env_int("TOOL_EMBEDDED_WORKERS", 4)
# `GET .../tool-calls/{seq}?wait=N` waits at most this long; at most this many requests of a
# process wait at once (the others answer at once), so long polls never take every thread.
TOOL_CALL_WAIT_MAX_S = float(os.environ.get("TOOL_CALL_WAIT_MAX_S", "30"))
TOOL_CALL_WAITERS_PER_PROCESS = _env_int("TOOL_CALL_WAITERS_PER_PROCESS", 4)
# `sql.query` returns at most this many rows.
SQL_QUERY_MAX_ROWS = _env_int("SQL_QUERY_MAX_ROWS", 1000)
# `GET /api/v1/tools` is cached this long (and re-keyed whenever the registry changes).
TOOLS_CACHE_SECONDS = _env_int("TOOLS_CACHE_SECONDS", 300)
# The tenant KV (`/api/v1/kv/{key}`).
KV_DEFAULT_TTL_S = _env_int("KV_DEFAULT_TTL_S", 300)
KV_MAX_TTL_S = _env_int("KV_MAX_TTL_S", 86400)
KV_MAX_VALUE_BYTES = _env_int("KV_MAX_VALUE_BYTES", 65536)

# --- Archives (django-storages) -----------------------------------------------------------------
# --- Archives and artifacts (django-storages) ---------------------------------------------------
# https://django-storages.readthedocs.io/en/latest/backends/amazon-S3.html
# Finished runs' databases go to STORAGES["archives"], artifacts' bytes to STORAGES["artifacts"]:
# folders under DATA_DIR by default, or one S3 bucket (two prefixes) with ARCHIVE_STORAGE=s3.
ARCHIVE_STORAGE = os.environ.get("ARCHIVE_STORAGE", "filesystem")


def _storage(kind: str) -> dict[str, object]:
    if ARCHIVE_STORAGE == "s3":
        return {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": os.environ.get("AWS_STORAGE_BUCKET_NAME", "agentdb-archives"),
                "endpoint_url": os.environ.get("AWS_S3_ENDPOINT_URL") or None,
                "region_name": os.environ.get("AWS_S3_REGION_NAME") or None,
                "access_key": os.environ.get("AWS_ACCESS_KEY_ID") or None,
                "secret_key": os.environ.get("AWS_SECRET_ACCESS_KEY") or None,
                "location": kind,
                "file_overwrite": False,
            },
        }
    if ARCHIVE_STORAGE == "filesystem":
        return {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(DATA_DIR / kind)},
        }
    raise ValueError(f"ARCHIVE_STORAGE={ARCHIVE_STORAGE!r}: use 'filesystem' (default) or 's3'.")


STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
    "archives": _storage("archives"),
    "artifacts": _storage("artifacts"),
}
# Completing or expiring a run archives it (a Celery task; inline when embedded).
ARCHIVE_ON_COMPLETE = _env_bool("ARCHIVE_ON_COMPLETE", True)
# Archived runs are read from read-only copies restored under DATA_DIR/restored, at most this
# many bytes of them (least recently opened evicted first).
ARCHIVE_CACHE_MAX_BYTES = _env_int("ARCHIVE_CACHE_MAX_BYTES", 1024 * 1024 * 1024)
# One artifact's bytes (PUT /runs/{id}/artifacts/{name}): 413 beyond.
ARTIFACT_MAX_BYTES = _env_int("ARTIFACT_MAX_BYTES", 100 * 1024 * 1024)
# The hash-chained audit trail of run databases (docs/decisions/0034); off only in benchmarks.
AUDIT_RUNS = _env_bool("AUDIT_RUNS", True)

# --- API limits (each also documented in the OpenAPI schema) -------------------------------------
# Bodies larger than this answer 413 before they are parsed.
DATA_UPLOAD_MAX_MEMORY_SIZE = _env_int("API_MAX_BODY_BYTES", 2 * 1024 * 1024)
MEMORY_MAX_VALUE_BYTES = _env_int("MEMORY_MAX_VALUE_BYTES", 256 * 1024)
# Method + path + query; gunicorn enforces it (project/gunicorn.conf.py reads the same variable).
API_MAX_REQUEST_LINE = _env_int("API_MAX_REQUEST_LINE", 4094)
# A list page stops before its items' JSON passes this (and at `limit`); `next` goes on from there.
API_MAX_PAGE_BYTES = _env_int("API_MAX_PAGE_BYTES", 4 * 1024 * 1024)
# API keys and runs are memoised per process this long (project/memo.py); 0 turns it off.
API_LOOKUP_CACHE_SECONDS = float(os.environ.get("API_LOOKUP_CACHE_SECONDS", "5"))
# API keys' last use is written to the control plane in batches this often (tenants/usage.py;
# 0: by the request itself).
API_KEY_USAGE_FLUSH_S = float(os.environ.get("API_KEY_USAGE_FLUSH_S", "10"))
# Each process reads the revocation generation (Redis, or the control plane when embedded) at
# most this often and drops its memos when it moved: revocation reaches every process within
# about this long (tenants/revocation.py, decision 0025).
REVOCATION_CHECK_SECONDS = float(os.environ.get("REVOCATION_CHECK_SECONDS", "0.5"))
# Per tenant, unless the tenant row overrides them: 429 / 413 beyond.
TENANT_MAX_ACTIVE_RUNS = _env_int("TENANT_MAX_ACTIVE_RUNS", 1000)
RUN_MAX_DB_BYTES = _env_int("RUN_MAX_DB_BYTES", 1024 * 1024 * 1024)
# A run with no write for this many seconds expires (0: never); `expire_runs` or Celery beat
# every RUN_EXPIRE_EVERY_S seconds finds them (decision 0027).
RUN_IDLE_TIMEOUT = _env_int("RUN_IDLE_TIMEOUT", 24 * 60 * 60)
RUN_EXPIRE_EVERY_S = _env_int("RUN_EXPIRE_EVERY_S", 300)
# https://docs.celeryq.dev/en/stable/userguide/periodic-tasks.html (`make beat`)
# Queued calls whose broker message was lost (a crash between commit and publish, a worker killed
# while taking it, Redis restarted) are sent again, looked for this often, once recorded at least
# the grace ago (the longest between a commit and its publish; decisions 0050, 0053).
TOOL_REDISPATCH_EVERY_S = _env_int("TOOL_REDISPATCH_EVERY_S", 60)
TOOL_REDISPATCH_GRACE_S = float(os.environ.get("TOOL_REDISPATCH_GRACE_S", "30"))
CELERY_BEAT_SCHEDULE = {
    "expire-idle-runs": {"task": "runs.expire_idle", "schedule": float(RUN_EXPIRE_EVERY_S)},
    "redispatch-lost-calls": {
        "task": "runs.redispatch_lost",
        "schedule": float(TOOL_REDISPATCH_EVERY_S),
    },
}
# Encoded JSON sizes: 413 beyond.
RUN_METADATA_MAX_BYTES = _env_int("RUN_METADATA_MAX_BYTES", 16 * 1024)
TOOL_ARGS_MAX_BYTES = _env_int("TOOL_ARGS_MAX_BYTES", 256 * 1024)
TOOL_RESULT_MAX_BYTES = _env_int("TOOL_RESULT_MAX_BYTES", 1024 * 1024)
EVENT_PAYLOAD_MAX_BYTES = _env_int("EVENT_PAYLOAD_MAX_BYTES", 64 * 1024)
EVENTS_MAX_BATCH = _env_int("EVENTS_MAX_BATCH", 1000)
STATE_MAX_BYTES = _env_int("STATE_MAX_BYTES", 1024 * 1024)

# --- Static files (admin) -----------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = os.environ.get("STATIC_ROOT") or None  # set where collectstatic runs (Docker)
# Serve app static files straight from the installed apps: no collectstatic step (decision 0004).
WHITENOISE_USE_FINDERS = True

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

# --- Logging: every record carries the bound tenant and run -------------------------------------
LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"scope": {"()": "tenancy.logging.ScopeFilter"}},
    "formatters": {
        "plain": {
            "format": "%(asctime)s %(levelname)s %(name)s [tenant=%(tenant)s run=%(run)s] "
            "%(message)s"
        }
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "filters": ["scope"], "formatter": "plain"}
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
}
