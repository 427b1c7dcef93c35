"""Schemathesis fuzzing of every operation in frontends/openapi.yaml against real servers with auth on.

Each generated case goes out with a full token, without a token and with a token lacking the
scope. Checks: schemathesis' own (no server error, documented status, content type, headers and
response schema, negative data rejected, auth enforced), the error contract of docs/api.md's
table (tests/fuzz/contract.py), and that protected operations refuse missing or weak tokens.
test_openapi.py checks that the server serves this same document.
"""

from __future__ import annotations

import os

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from frontends.openapi import DOCUMENT_PATH
from tests.fuzz.generation import mix_in_real_requests

# Generated inputs per operation (schemathesis adds its coverage cases): about 700 inputs and 2,000
# requests in `make test`; `make fuzz` sets 300.
EXAMPLES = int(os.environ.get("RTSERVE_FUZZ_EXAMPLES", "8"))
FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))

# 503 and 504 are answers docs/api.md documents (backpressure, X-Request-Timeout-Ms), not server errors;
# the error contract check still holds them to their documented codes.
CONFIG = SchemathesisConfig.from_dict({"checks": {"not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503", "504"]}}})
SCHEMA = schemathesis.openapi.from_path(DOCUMENT_PATH, config=CONFIG)
mix_in_real_requests(SCHEMA)


@SCHEMA.exclude(path_regex="^/(admin|v2/repository)").parametrize()
@FUZZ_SETTINGS
def test_inference_api(case, oip_fuzzer):
    oip_fuzzer.run(case)


@SCHEMA.include(path_regex="^/(admin|v2/repository)").parametrize()
@FUZZ_SETTINGS
def test_admin_api(case, admin_fuzzer, routing_reset):
    routing_reset.ensure_initial()
    admin_fuzzer.run(case)
