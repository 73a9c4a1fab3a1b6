"""Run a test's step in another thread, as another request of the same process would."""

import threading
from collections.abc import Callable

from django.db import connections

from tenancy import connections as tenant_connections


def in_another_thread(step: Callable[[], object]) -> BaseException | None:
    """Run `step` in a new thread; return what it raised (None if nothing). The thread gives
    its tenant/run connections back to the pool and closes its control-plane one, as the end
    of a request does."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            step()
        except BaseException as exc:
            raised.append(exc)
        finally:
            tenant_connections.give_back()
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return raised[0] if raised else None
