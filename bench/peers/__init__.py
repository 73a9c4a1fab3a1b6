"""Peer servers for bench/peers.py: the same tool-call endpoints, built as their users would.

- `dt`: django-tenants, a PostgreSQL schema per tenant, routed by `TenantMainMiddleware`
  (the request's Host names the tenant's domain).
- `pgshared`: one shared PostgreSQL database, one `tool_call` table keyed by (`run_id`, `seq`),
  the next seq allocated under a row lock on the run.

Both are plain Django views over the ORM behind gunicorn sync workers, with persistent
connections (`CONN_MAX_AGE = None`). Neither is part of the product.
"""
