"""The django-tenants peer: a PostgreSQL schema per tenant, chosen from the request's Host."""
