"""Signals of agent runs, so later apps react without `runs` importing them."""

from django.dispatch import Signal

# Sent after a run finished (completed, failed or expired) and its registry row says so;
# `run_id` is its id. The `audit` app archives the run on it.
run_finished = Signal()
