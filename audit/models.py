"""Hash-chained audit events arrive with the archives issue."""
