"""The HTTP contract with the front door off (`RTSERVE_FRONT_DOOR_ENABLED=false`): the same app served through
BentoML's supported `mount_asgi_app`, behind BentoML's middleware. A subset of the HTTP tests, run unchanged
against such a server (auth on: each request carries a token; tests/app/test_front_door_off_auth.py checks auth)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import tritonclient.http as triton

from tests.app.test_head_limit import (  # noqa: F401 - collected here, against this module's server
    test_a_header_past_the_limit_is_answered_431_at_once,
    test_a_header_within_the_limit_is_served,
    test_a_huge_unterminated_header_leaves_other_requests_unaffected,
    test_refused_heads_are_counted,
)
from tests.test_service import (  # noqa: F401
    test_client_mistakes_get_a_clear_json_error,
    test_model_metadata_lists_typeable_versions,
    test_oversized_body_is_413,
    test_request_id_is_echoed_or_made,
    test_served_predictions_equal_direct_predictions,
    test_server_metadata_and_health,
    test_simple_predict_endpoint,
    test_simple_predict_errors,
    test_tritonclient_infer,
    test_tritonclient_metadata_and_health,
)


@pytest.fixture(scope="module")
def server(behind_bentoml):
    return behind_bentoml.server


@pytest.fixture(scope="module")
def http(behind_bentoml):
    with httpx.Client(base_url=behind_bentoml.url, timeout=30, headers=behind_bentoml.headers(ttl=3600)) as client:
        yield client


class WithToken:
    """tritonclient's HTTP client, sending the token with every call (in a dict of the call's own: `infer`
    adds its Inference-Header-Content-Length to the dict it is given)."""

    def __init__(self, client: triton.InferenceServerClient, headers: dict[str, str]) -> None:
        self.client = client
        self.headers = headers

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)
        return lambda *args, **kwargs: method(*args, headers=dict(self.headers), **kwargs)


@pytest.fixture(scope="module")
def tc(behind_bentoml):
    return WithToken(triton.InferenceServerClient(behind_bentoml.url.removeprefix("http://")), behind_bentoml.headers(ttl=3600))


def test_bentomls_stack_serves_in_front(behind_bentoml):
    """BentoML's router comes first here: a path it cannot match (a newline) gets its plain-text 404, which the
    front door's own routing answers in JSON (tests/app/test_front_door.py)."""
    r = httpx.get(behind_bentoml.url + "/v2/models/a%0Ab/ready")
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/plain"), r.text
