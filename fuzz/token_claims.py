"""atheris target: the claims of a correctly signed token, through `Authenticator.authenticate`.

The input is the token's payload (JSON, any bytes): the harness signs it with the key the
authenticator trusts, so every input reaches the claim checks, not the signature check. A 401 is
an answer; an accepted token must name a caller whose every field can be written out (JSON, a
log line, a routing key), else it is a crash: what a lone surrogate in `sub` once was."""

from __future__ import annotations

import base64
import hashlib
import hmac

import atheris
import jwt  # noqa: F401 - imported before instrumentation: only the project's code is instrumented
import orjson
import pydantic_settings  # noqa: F401

with atheris.instrument_imports():
    from gateway.auth import Authenticator, AuthSettings

from fuzz.common import main

SECRET = b"fuzz-" + b"k" * 59
AUTH = Authenticator(AuthSettings(enabled=True, hs256_secret=SECRET.decode(), cache_size=0))
HEADER = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")


def bearer(payload: bytes) -> bytes:
    signing_input = HEADER + b"." + base64.urlsafe_b64encode(payload).rstrip(b"=")
    signature = base64.urlsafe_b64encode(hmac.new(SECRET, signing_input, hashlib.sha256).digest()).rstrip(b"=")
    return b"Bearer " + signing_input + b"." + signature


def target(data: bytes) -> None:
    principal = AUTH.authenticate(bearer(data))
    orjson.dumps([principal.subject, principal.tenant, sorted(principal.scopes), sorted(principal.models or ())])
    principal.subject.encode("utf-8")
    if principal.expires_at != principal.expires_at or principal.expires_at > 2.0**53:
        raise ValueError(f"expiry {principal.expires_at} accepted")


if __name__ == "__main__":
    main(target)
