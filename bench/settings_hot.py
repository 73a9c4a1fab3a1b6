"""Settings for bench/hot_run.py: the project, with an authenticated no-op URL added."""

from project.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls_hot"
