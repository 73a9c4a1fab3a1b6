"""A log filter that stamps the bound tenant and run on every record."""

import logging

from tenancy.context import bound_run_id, bound_tenant_id


class ScopeFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.tenant = bound_tenant_id() or "-"
        record.run = bound_run_id() or "-"
        return True
