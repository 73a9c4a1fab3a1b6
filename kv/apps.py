from django.apps import AppConfig


class KvConfig(AppConfig):
    name = "kv"
    verbose_name = "Key/value cache"
