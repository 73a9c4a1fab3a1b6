"""Starting this project's own processes (manage.py, gunicorn) for tests and benchmarks."""

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def project_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for a subprocess of this project with its own DATA_DIR and control plane."""
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "CONTROL_DATABASE_URL"}}
    env.update(
        DATA_DIR=str(data_dir),
        CONTROL_DATABASE_URL=f"sqlite:///{data_dir / 'control.sqlite3'}",
        DJANGO_SETTINGS_MODULE="project.settings",
        LOG_LEVEL="WARNING",
        # This checkout first; an inherited PYTHONPATH stays after it.
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    env.update(extra)
    return env


def manage(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [PYTHON, str(ROOT / "manage.py"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        )
    return result


def wait_http(url: str, deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException as exc:
            last = exc
            time.sleep(0.05)
    raise AssertionError(f"{url} did not answer within {deadline_s}s: {last}")


def migrate_with_tenants(env: dict[str, str], *slugs: str) -> dict[str, str]:
    """Migrate the control plane of `env`, create `slugs` as tenants; return an API key each."""
    manage(env, "migrate", "--no-input", "-v", "0")
    keys = {}
    for slug in slugs:
        manage(env, "create_tenant", slug)
        keys[slug] = manage(env, "create_api_key", slug).stdout.strip().splitlines()[-1]
    return keys


def start_gunicorn(
    env: dict[str, str], log_path: Path, *, nofile: int | None = None
) -> subprocess.Popen:
    """Start gunicorn as `make run` does; its log goes to `log_path`.

    Never to an unread pipe: once the pipe is full the server's workers block on logging.
    `nofile` starts it under `ulimit -n nofile` (soft and hard).
    """

    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    with log_path.open("wb") as log:
        return subprocess.Popen(
            [
                str(Path(PYTHON).parent / "gunicorn"),
                "project.wsgi:application",
                "-c",
                "project/gunicorn.conf.py",
            ],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: master and workers stop together
            preexec_fn=None if nofile is None else limit,
        )


def stop_gunicorn(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        kill_gunicorn(proc)


def kill_gunicorn(proc: subprocess.Popen) -> None:
    """SIGKILL the master and every worker at once, as a crash or an OOM kill would."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@dataclass
class Live:
    root: str
    keys: dict[str, str]
    data_dir: Path
    env: dict[str, str]
    proc: subprocess.Popen

    def url(self, path: str) -> str:
        return f"{self.root}/api/v1{path}"

    def headers(self, slug: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[slug]}"}

    def call(self, slug: str, method: str, path: str, body=None) -> requests.Response:
        return requests.request(
            method, self.url(path), json=body, headers=self.headers(slug), timeout=30
        )

    def registry(self) -> dict[str, tuple[str, str]]:
        """Return {relative path: (state, last_error)} from the control plane's registry."""
        with sqlite3.connect(self.data_dir / "control.sqlite3") as conn:
            rows = conn.execute("SELECT path, state, last_error FROM tenants_database")
            return {path: (state, error) for path, state, error in rows}


def serve(tmp_path: Path, slugs: list[str], *, nofile: int | None = None, **env: str) -> Live:
    """Start gunicorn on a fresh DATA_DIR under `tmp_path` with tenants `slugs` (one key each)
    and `env` on top of `project_env`; return once it answers. The caller stops it."""
    data_dir = tmp_path / "data"
    port = free_port()
    environment = project_env(data_dir, PORT=str(port), ACCESS_LOG="", **env)
    keys = migrate_with_tenants(environment, *slugs)
    proc = start_gunicorn(environment, data_dir / "gunicorn.log", nofile=nofile)
    live = Live(f"http://127.0.0.1:{port}", keys, data_dir, environment, proc)
    wait_http(f"{live.root}/healthz")
    return live
