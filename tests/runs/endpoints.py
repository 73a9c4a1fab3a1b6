"""Every run endpoint with a valid body, for tests that must reach all of them."""


def run_endpoints(run_id: str) -> list[tuple[str, str, dict | None]]:
    """Return (method, path under /api/v1, JSON body) for each of the ten run endpoints."""
    return [
        ("GET", f"/runs/{run_id}", None),
        ("GET", f"/runs/{run_id}/tool-calls", None),
        ("GET", f"/runs/{run_id}/tool-calls/1", None),
        ("POST", f"/runs/{run_id}/tool-calls", {"name": "x"}),
        ("PATCH", f"/runs/{run_id}/tool-calls/1", {"result": 1}),
        ("POST", f"/runs/{run_id}/events", {"events": [{"kind": "x"}]}),
        ("GET", f"/runs/{run_id}/events", None),
        ("GET", f"/runs/{run_id}/state", None),
        ("PUT", f"/runs/{run_id}/state", {"state": 1, "version": 0}),
        ("POST", f"/runs/{run_id}/complete", {"status": "failed"}),
    ]
