FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    DATA_DIR=/data STATIC_ROOT=/app/staticfiles HOST=0.0.0.0 PORT=8000
WORKDIR /app
COPY pyproject.toml README.md ./
COPY project ./project
COPY tenancy ./tenancy
COPY tenants ./tenants
COPY memory ./memory
COPY runs ./runs
COPY audit ./audit
COPY manage.py ./
RUN pip install --no-cache-dir ".[postgres]" \
 && DJANGO_SECRET_KEY=build python manage.py collectstatic --no-input -v 0
VOLUME /data
EXPOSE 8000
# Only serves: migrations are one-shot jobs of their own (docker-compose.yml `migrate`,
# `migrate-tenants`; docs/deploying.md). A database the rollout has not reached yet is migrated
# when first opened, or answers 503 schema_migrating while a rollout holds the lock.
CMD ["gunicorn", "project.wsgi:application", "-c", "project/gunicorn.conf.py"]
