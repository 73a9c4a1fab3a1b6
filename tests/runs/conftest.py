import pytest


@pytest.fixture
def post(api):
    """POST JSON with the tenant's key (the shared ApiClient has get/put/delete)."""
    import json

    def _post(path: str, data=None, method: str = "post", **headers):
        send = getattr(api.client, method)
        return send(
            path,
            json.dumps(data) if data is not None else "",
            content_type="application/json",
            headers={"Authorization": f"Bearer {api.key}", **headers},
        )

    return _post


@pytest.fixture
def run_id(post) -> str:
    response = post("/api/v1/runs", {"metadata": {"agent": "planner"}, "labels": ["env:test"]})
    assert response.status_code == 201, response.content
    return response.json()["id"]
