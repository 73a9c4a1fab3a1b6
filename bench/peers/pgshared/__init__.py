"""The one-shared-PostgreSQL peer: every tenant's runs and tool calls in the same tables."""
