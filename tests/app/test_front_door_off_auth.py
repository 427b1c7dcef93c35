"""Authentication and the error statuses with the front door off, against the server of test_front_door_off.py."""

from __future__ import annotations

import pytest

from tests.gateway.test_gateway_http import (  # noqa: F401 - collected here, against this module's gateway
    http,
    test_error_statuses,
    test_every_response_has_a_request_id,
    test_expired_token_is_401,
    test_health_and_readiness_stay_open,
    test_inference_needs_a_token,
    test_missing_scope_is_403,
    test_model_metadata_needs_a_token,
    test_model_readiness_needs_a_token,
    test_simple_predict_needs_a_token,
)


@pytest.fixture(scope="module")
def gateway(behind_bentoml):
    return behind_bentoml
