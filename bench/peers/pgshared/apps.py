from django.apps import AppConfig


class PgSharedConfig(AppConfig):
    name = "bench.peers.pgshared"
    label = "pgshared"
