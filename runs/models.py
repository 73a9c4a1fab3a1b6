"""Run-scoped models arrive with the runs issue."""
