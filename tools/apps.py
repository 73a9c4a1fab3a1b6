import importlib

from django.apps import AppConfig
from django.conf import settings


class ToolsConfig(AppConfig):
    name = "tools"
    verbose_name = "Tools"

    def ready(self) -> None:
        """Register the built-in tools, then every module named in `TOOL_MODULES`.

        Applications register their own from their AppConfig's `ready()` (import the module
        holding the `@tool` functions) or by listing it in `TOOL_MODULES`.
        """
        importlib.import_module("tools.builtins")
        for module in settings.TOOL_MODULES:
            importlib.import_module(module)
