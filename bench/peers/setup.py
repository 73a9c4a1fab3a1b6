"""Set up the peers' data: `python -m bench.peers.setup {dt,pgshared} TENANTS RUNS`.

Runs inside the peer's Django (DJANGO_SETTINGS_MODULE set by the caller) on a freshly created,
migrated database; prints one JSON list of [host, key, run] targets, one per run.
"""

import json
import secrets
import sys

import django


def setup_dt(tenants: int, runs: int) -> list[list[str]]:
    from django_tenants.utils import schema_context

    from bench.peers.common import key_digest
    from bench.peers.dt.customers.models import Client, Domain
    from bench.peers.dt.toolcalls.models import Run

    public = Client(schema_name="public", name="public", key_hash="")
    public.save()
    Domain.objects.create(domain="public.peers.test", tenant=public, is_primary=True)
    targets = []
    for i in range(tenants):
        key = secrets.token_urlsafe(32)
        # Saving a tenant creates its schema and runs the tenant apps' migrations in it.
        client = Client(schema_name=f"t{i}", name=f"tenant {i}", key_hash=key_digest(key))
        client.save()
        host = f"t{i}.peers.test"
        Domain.objects.create(domain=host, tenant=client, is_primary=True)
        with schema_context(client.schema_name):
            targets += [[host, key, str(Run.objects.create().id)] for _ in range(runs)]
    return targets


def setup_pgshared(tenants: int, runs: int) -> list[list[str]]:
    from bench.peers.common import key_digest
    from bench.peers.pgshared.models import Run, Tenant

    targets = []
    for i in range(tenants):
        key = secrets.token_urlsafe(32)
        tenant = Tenant.objects.create(slug=f"t{i}", key_hash=key_digest(key))
        targets += [
            ["127.0.0.1", key, str(Run.objects.create(tenant=tenant).id)] for _ in range(runs)
        ]
    return targets


def main() -> None:
    peer, tenants, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    django.setup()
    setup = {"dt": setup_dt, "pgshared": setup_pgshared}[peer]
    print(json.dumps(setup(tenants, runs)))


if __name__ == "__main__":
    main()
