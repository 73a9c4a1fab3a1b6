"""A writer process for single-writer tests: `python -m tests.runs.writer_proc MODE RUN_ID ...`.

Runs with the environment of `tests.processes.project_env` (its own DATA_DIR and control plane,
REDIS_URL set or not). Every acknowledged write is appended to a log file with `os.write`, which
the kernel keeps even if this process is killed with SIGKILL the next instant.

Modes:
- `write RUN_ID N THREADS LOG`: N tool calls from THREADS threads; each acknowledged seq logged.
- `stall RUN_ID WHERE READY GO LOG`: one tool call that stops, after taking the lease
  (WHERE=lease) or inside its transaction (WHERE=transaction), until the file GO exists; READY is
  created when it stops there. Logs `ok SEQ` or `error CODE`.
"""

import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _log(fd: int, line: str) -> None:
    os.write(fd, (line + "\n").encode())


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} never appeared")
        time.sleep(0.01)


def main(argv: list[str]) -> None:
    import django

    django.setup()
    from project.exceptions import ApplicationError
    from runs import services, writer
    from runs.models import Run

    mode, run_id = argv[0], argv[1]
    run = Run.objects.select_related("tenant", "database").get(id=run_id)

    if mode == "write":
        count, threads, log_path = int(argv[2]), int(argv[3]), argv[4]
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

        def one(i: int) -> None:
            try:
                call, _ = services.tool_call_record(
                    run=run, name="load", args={"i": i, "pid": os.getpid()}
                )
            except ApplicationError as exc:
                _log(fd, f"error {exc.code}")
                return
            _log(fd, str(call.seq))

        with ThreadPoolExecutor(threads) as pool:
            for future in [pool.submit(one, i) for i in range(count)]:
                future.result()
        return

    if mode == "stall":
        where, ready, go, log_path = argv[2], Path(argv[3]), Path(argv[4]), argv[5]
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

        def stop_here() -> None:
            ready.touch()
            _wait_for(go)

        if where == "lease":
            real = writer.leases

            class Stalling:
                def __init__(self, backend: Any):
                    self._backend = backend

                @contextmanager
                def hold(self, *args: Any, **kwargs: Any) -> Any:
                    with self._backend.hold(*args, **kwargs) as lease:
                        stop_here()
                        yield lease

                def raise_fence(self, *args: Any, **kwargs: Any) -> int:
                    return self._backend.raise_fence(*args, **kwargs)

            writer.leases = lambda: Stalling(real())  # type: ignore[assignment]
            work_hook = None
        else:
            work_hook = stop_here

        from runs.models import ToolCall

        def work() -> int:
            call = ToolCall.objects.create(name="stalled", args={}, digest="-")
            if work_hook is not None:
                work_hook()
            return call.seq

        try:
            seq = writer.write(run, work)
            _log(fd, f"ok {seq}")
        except Exception as exc:  # the test reads the code
            _log(fd, f"error {getattr(exc, 'code', type(exc).__name__)}")
        return

    raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    threading.current_thread().name = "writer-proc"
    main(sys.argv[1:])
