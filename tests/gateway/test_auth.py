"""Attacks on the JWT layer, with real PyJWT and real keys made here with `cryptography`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from core.errors import Forbidden, Unauthorized
from gateway.auth import FAILURE_REASONS, Authenticator, AuthSettings, Principal, combine_credentials, require_scope
from gateway.tokens import ensure_dev_secret, mint

SECRET = secrets.token_hex(32)
BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@pytest.fixture(autouse=True, scope="module")
def _no_auth_env() -> Iterator[None]:
    """Settings come from each test, never from the environment the suite runs in."""
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("RTSERVE_AUTH_"):
                mp.delenv(name)
        yield


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_keys() -> dict[str, ec.EllipticCurvePrivateKey]:
    return {name: ec.generate_private_key(ec.SECP256R1()) for name in ("ec-old", "ec-new", "ec-stranger")}


@pytest.fixture(scope="module")
def uncached(_no_auth_env) -> Authenticator:
    """One authenticator for the fuzz tests; no cache, so every example takes the full path."""
    return Authenticator(AuthSettings(enabled=True, hs256_secret=SECRET, cache_size=0))


def private_pem(key: Any) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def public_pem(key: Any) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture
def keys_dir(tmp_path: Path, rsa_key, ec_keys) -> Path:
    """rsa-1.pem, ec-old.pem, ec-new.pem: public keys only, as a deployment would hold them."""
    directory = tmp_path / "keys"
    directory.mkdir()
    (directory / "rsa-1.pem").write_bytes(public_pem(rsa_key))
    for name in ("ec-old", "ec-new"):
        (directory / f"{name}.pem").write_bytes(public_pem(ec_keys[name]))
    return directory


def claims(**changes: Any) -> dict[str, Any]:
    """A valid claim set; a change to None drops that claim."""
    now = int(time.time())
    doc: dict[str, Any] = {"sub": "alice", "iat": now, "exp": now + 600, "scope": "predict"}
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not None}


def hs256(doc: dict[str, Any], secret: str | bytes = SECRET, **headers: Any) -> str:
    return jwt.encode(doc, secret, algorithm="HS256", headers=headers or None)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], doc: dict[str, Any], key: bytes | None = None, digest: Any = hashlib.sha256) -> str:
    """A token built by hand, for what PyJWT refuses to sign (alg none, a PEM as HMAC key)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(doc).encode())}"
    signature = b64(hmac.new(key, signing_input.encode(), digest).digest()) if key is not None else ""
    return f"{signing_input}.{signature}"


def signed(payload: bytes) -> str:
    """Correctly signed, so what fails is the payload itself, not the signature."""
    signing_input = f"{b64(json.dumps({'alg': 'HS256'}).encode())}.{b64(payload)}"
    return f"{signing_input}.{b64(hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest())}"


def authenticator(**overrides: Any) -> Authenticator:
    return Authenticator(AuthSettings(**{"enabled": True, "hs256_secret": SECRET, **overrides}))


def reject(authn: Authenticator, header: bytes | str | None, reason: str) -> Unauthorized:
    """Asserts a 401 for exactly `reason`, with an RFC 6750 challenge and nothing internal in it."""
    before = dict(authn.stats.failures)
    with pytest.raises(Unauthorized) as info:
        authn.authenticate(header)
    exc = info.value
    after = authn.stats.failures
    assert {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)} == {reason: 1}
    assert exc.status == 401 and exc.body()["code"] == "unauthorized"
    challenge = exc.headers["WWW-Authenticate"]
    if reason == "missing":
        assert challenge == 'Bearer realm="rtserve"'
    else:
        assert challenge == f'Bearer realm="rtserve", error="invalid_token", error_description="{exc.message}"'
    assert '"' not in exc.message and "\\" not in exc.message
    assert "Traceback" not in exc.message and "Error" not in exc.message
    assert exc.__cause__ is None and exc.__suppress_context__
    return exc


# --- accepted tokens -------------------------------------------------------------------


def test_hs256_token_is_accepted_in_every_header_spelling():
    authn = authenticator()
    doc = claims(scope="predict admin", tenant="acme")
    token = hs256(doc)
    expected = Principal("alice", "acme", frozenset({"predict", "admin"}), float(doc["exp"]))
    for header in (f"Bearer {token}", f"bearer  {token} ", f"Bearer {token}".encode()):
        assert authn.authenticate(header) == expected


@pytest.mark.parametrize(("kid", "algorithm"), [("rsa-1", "RS256"), ("ec-new", "ES256")])
def test_rs256_and_es256_tokens_are_accepted_by_kid(keys_dir, rsa_key, ec_keys, kid, algorithm):
    settings = AuthSettings(enabled=True, algorithms=["RS256", "ES256"], public_keys_dir=keys_dir)
    key = rsa_key if kid == "rsa-1" else ec_keys[kid]
    token = mint(settings, subject="svc", scopes="predict", tenant=None, ttl_s=60, kid=kid,
                 private_key_pem=private_pem(key), algorithm=algorithm)
    principal = Authenticator(settings).authenticate(f"Bearer {token}")
    assert (principal.subject, principal.tenant, principal.scopes) == ("svc", "~svc", frozenset({"predict"}))


def test_the_only_key_of_an_algorithm_serves_tokens_without_kid(tmp_path, rsa_key):
    (tmp_path / "signer.pem").write_bytes(public_pem(rsa_key))
    authn = Authenticator(AuthSettings(enabled=True, algorithms=["RS256"], public_keys_dir=tmp_path))
    token = jwt.encode(claims(), private_pem(rsa_key), algorithm="RS256")
    assert authn.authenticate(f"Bearer {token}").subject == "alice"


def test_hmac_rotation_old_and_new_kid_both_valid_unknown_kid_rejected(tmp_path):
    old, new = secrets.token_hex(32), secrets.token_hex(32)
    keys_file = tmp_path / "hs-keys.json"
    keys_file.write_text(json.dumps({"2024-q4": old, "2025-q1": new}))
    authn = Authenticator(AuthSettings(enabled=True, hs256_keys_file=keys_file))
    assert authn.authenticate(f"Bearer {hs256(claims(sub='a'), old, kid='2024-q4')}").subject == "a"
    assert authn.authenticate(f"Bearer {hs256(claims(sub='b'), new, kid='2025-q1')}").subject == "b"
    reject(authn, f"Bearer {hs256(claims(), secrets.token_hex(32), kid='2025-q2')}", "unknown_kid")
    reject(authn, f"Bearer {hs256(claims(), old, kid='2025-q1')}", "bad_signature")
    reject(authn, f"Bearer {hs256(claims(), new)}", "unknown_kid")  # two keys: a token must name one


def test_public_key_rotation_and_unknown_kid(keys_dir, ec_keys):
    authn = Authenticator(AuthSettings(enabled=True, algorithms=["ES256"], public_keys_dir=keys_dir))
    for kid in ("ec-old", "ec-new"):
        token = jwt.encode(claims(sub=kid), private_pem(ec_keys[kid]), algorithm="ES256", headers={"kid": kid})
        assert authn.authenticate(f"Bearer {token}").subject == kid
    stranger = private_pem(ec_keys["ec-stranger"])
    reject(authn, f"Bearer {jwt.encode(claims(), stranger, algorithm='ES256', headers={'kid': 'ec-x'})}", "unknown_kid")
    reject(authn, f"Bearer {jwt.encode(claims(), stranger, algorithm='ES256', headers={'kid': 'ec-new'})}", "bad_signature")


def test_without_a_tenant_claim_the_subject_is_its_own_tenant_apart_from_named_ones():
    authn = authenticator()
    principal = authn.authenticate(f"Bearer {hs256(claims(sub='bob', scope=None, scp=['predict', 'admin']))}")
    assert principal.tenant == "~bob" and principal.scopes == frozenset({"predict", "admin"})
    named = authn.authenticate(f"Bearer {hs256(claims(sub='x', tenant='bob'))}")
    assert named.tenant == "bob" != principal.tenant  # sub "bob" never lands in tenant bob's bucket or tier
    for forged in ("~bob", "bob\nadmin", "", 7):
        with pytest.raises(Unauthorized):
            authn.authenticate(f"Bearer {hs256(claims(sub='x', tenant=forged))}")
    assert authn.authenticate(f"Bearer {hs256(claims(sub='carol', scope=None))}").scopes == frozenset()


def test_a_lifetime_up_to_the_maximum_is_accepted():
    authn = authenticator(max_lifetime_s=3600)
    now = int(time.time())
    assert authn.authenticate(f"Bearer {hs256(claims(iat=now - 3000, exp=now + 600))}").expires_at == now + 600
    assert authn.authenticate(f"Bearer {hs256(claims(iat=None, exp=now + 3500))}").subject == "alice"


# --- algorithm attacks ------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", ""])
def test_alg_none_is_rejected(alg):
    reject(authenticator(), f"Bearer {forge({'alg': alg, 'typ': 'JWT'}, claims())}", "bad_algorithm")
    reject(authenticator(), f"Bearer {forge({'alg': alg}, claims(), SECRET.encode())}", "bad_algorithm")


def test_algorithm_outside_the_allow_list_is_rejected(rsa_key):
    authn = authenticator()
    hs512 = forge({"alg": "HS512", "typ": "JWT"}, claims(), SECRET.encode(), hashlib.sha512)
    reject(authn, f"Bearer {hs512}", "bad_algorithm")
    reject(authn, f"Bearer {jwt.encode(claims(), private_pem(rsa_key), algorithm='RS256')}", "bad_algorithm")
    reject(authn, f"Bearer {forge({'typ': 'JWT'}, claims(), SECRET.encode())}", "bad_algorithm")


def test_hs_rs_confusion_with_the_public_key_as_hmac_secret_fails(tmp_path, keys_dir, rsa_key):
    """The classic: sign HS256 with the server's RSA public key bytes and hope it verifies with them."""
    public = public_pem(rsa_key)
    mixed = authenticator(algorithms=["HS256", "RS256"], public_keys_dir=keys_dir)
    rsa_only = Authenticator(AuthSettings(enabled=True, algorithms=["RS256"], public_keys_dir=keys_dir))
    for key in (public, public.strip(), b64(public).encode()):
        exc = reject(mixed, f"Bearer {forge({'alg': 'HS256', 'kid': 'rsa-1'}, claims(), key)}", "bad_algorithm")
        assert exc.message == "token algorithm does not fit its key"
        reject(mixed, f"Bearer {forge({'alg': 'HS256'}, claims(), key)}", "bad_signature")
        reject(rsa_only, f"Bearer {forge({'alg': 'HS256', 'kid': 'rsa-1'}, claims(), key)}", "bad_algorithm")
    reject(mixed, f"Bearer {jwt.encode(claims(), SECRET, algorithm='HS256', headers={'kid': 'rsa-1'})}", "bad_algorithm")
    genuine = jwt.encode(claims(), private_pem(rsa_key), algorithm="RS256", headers={"kid": "rsa-1"})
    assert mixed.authenticate(f"Bearer {genuine}").subject == "alice"


# --- tampering --------------------------------------------------------------------------


def test_tampered_payload_is_rejected():
    authn = authenticator()
    header, _, signature = hs256(claims()).split(".")
    promoted = b64(json.dumps(claims(sub="root", scope="predict admin")).encode())
    reject(authn, f"Bearer {header}.{promoted}.{signature}", "bad_signature")


def test_tampered_or_swapped_signature_is_rejected():
    authn = authenticator()
    token = hs256(claims())
    head, _, signature = token.rpartition(".")
    middle = len(signature) // 2
    flipped = signature[:middle] + ("A" if signature[middle] != "A" else "B") + signature[middle + 1 :]
    reject(authn, f"Bearer {head}.{flipped}", "bad_signature")
    other = hs256(claims(sub="mallory")).rpartition(".")[2]
    reject(authn, f"Bearer {head}.{other}", "bad_signature")
    reject(authn, f"Bearer {head}.", "bad_signature")
    assert authn.authenticate(f"Bearer {token}").subject == "alice"


@given(position=st.integers(min_value=0, max_value=10_000), char=st.sampled_from(BASE64URL + ".="))
@settings(max_examples=300, deadline=None)
def test_no_single_character_change_yields_another_identity(uncached, position, char):
    authn, token = uncached, _FUZZ_TOKEN
    i = position % len(token)
    mutated = token[:i] + char + token[i + 1 :]
    try:
        principal = authn.authenticate(f"Bearer {mutated}")
    except Unauthorized:
        return
    assert principal == authn.authenticate(f"Bearer {token}")  # only base64 padding bits changed


_FUZZ_TOKEN = hs256(claims(exp=int(time.time()) + 3600, scope="predict admin", tenant="acme"))


# --- time and claims --------------------------------------------------------------------


def test_expired_token_is_rejected_and_leeway_is_honoured():
    authn = authenticator(leeway_s=30)
    now = int(time.time())
    reject(authn, f"Bearer {hs256(claims(exp=now - 120, iat=now - 720))}", "expired")
    assert authn.authenticate(f"Bearer {hs256(claims(exp=now - 10, iat=now - 610))}").subject == "alice"


def test_missing_exp_or_sub_is_rejected():
    authn = authenticator()
    assert "'exp'" in reject(authn, f"Bearer {hs256(claims(exp=None))}", "claims").message
    assert "'sub'" in reject(authn, f"Bearer {hs256(claims(sub=None))}", "claims").message


def test_nbf_or_iat_in_the_future_is_rejected():
    authn = authenticator(leeway_s=30)
    now = int(time.time())
    reject(authn, f"Bearer {hs256(claims(nbf=now + 600))}", "not_yet_valid")
    reject(authn, f"Bearer {hs256(claims(iat=now + 600))}", "not_yet_valid")
    assert authn.authenticate(f"Bearer {hs256(claims(nbf=now + 10))}").subject == "alice"


@pytest.mark.parametrize(
    ("changes", "accepted"),
    [
        ({}, True),
        ({"aud": ["other", "rtserve"]}, True),
        ({"iss": "https://evil.example"}, False),
        ({"iss": None}, False),
        ({"aud": "other"}, False),
        ({"aud": None}, False),
    ],
)
def test_issuer_and_audience_are_checked_when_configured(changes, accepted):
    authn = authenticator(issuer="https://idp.example", audience="rtserve")
    header = f"Bearer {hs256(claims(**{'iss': 'https://idp.example', 'aud': 'rtserve', **changes}))}"
    if accepted:
        assert authn.authenticate(header).subject == "alice"
    else:
        reject(authn, header, "claims")


def test_audience_is_not_checked_when_unset():
    assert authenticator().authenticate(f"Bearer {hs256(claims(aud='anyone'))}").subject == "alice"


@pytest.mark.parametrize(
    "changes",
    [
        {"exp": 10**400},  # once accepted, valid for ever
        {"exp": 10**400, "iat": None},  # once a 500: a huge int minus the float of now overflows
        {"iat": -(10**400)},
        {"exp": 1e300, "iat": None},
        {"exp": 1e300},
        {"exp": 10**6 * 86400 + int(time.time())},
        {"iat": None, "exp": int(time.time()) + 7200},  # without iat, counted from now
        {"iat": int(time.time()) - 10**9},  # an old iat makes an overlong lifetime even when exp is near
    ],
)
def test_a_lifetime_over_the_maximum_is_refused(changes):
    exc = reject(authenticator(max_lifetime_s=3600), f"Bearer {forge({'alg': 'HS256'}, claims(**changes), SECRET.encode())}", "claims")
    assert exc.message == "token lifetime is over the maximum of 3600 s"


@pytest.mark.parametrize("bad", ["true", "1e400", "Infinity", "NaN", '"1"'])
@pytest.mark.parametrize("claim", ["exp", "iat"])
def test_a_time_that_is_not_a_finite_number_is_refused(claim, bad):
    doc = json.dumps(claims(**{claim: 0})).replace(f'"{claim}": 0', f'"{claim}": {bad}')
    with pytest.raises(Unauthorized):
        authenticator().authenticate(f"Bearer {signed(doc.encode())}")


@pytest.mark.parametrize(
    "changes",
    [
        {"sub": "\ud800x"},
        {"sub": "x\udfff"},
        {"tenant": "\ud800"},
        {"scope": "predict \ud800"},
        {"scp": ["predict", "\udc00"]},
        {"note": {"deep": ["fine", {"\ud800": 1}]}},  # a claim nothing reads yet is still text or refused
    ],
)
def test_claims_that_are_not_well_formed_text_are_refused(changes):
    payload = json.dumps(claims(**changes)).encode()  # JSON escapes: the token itself is ASCII
    assert b"\\ud" in payload
    exc = reject(authenticator(), f"Bearer {signed(payload)}", "claims")
    assert exc.message == "token claims are not well-formed text"


@pytest.mark.parametrize("sub", ["a\nb", "a\u0000", "a\u001b[31m", "x" * 256])
def test_a_subject_must_be_printable_and_short(sub):
    exc = reject(authenticator(), f"Bearer {hs256(claims(sub=sub))}", "claims")
    assert exc.message == "sub must be printable text of at most 255 characters"


@pytest.mark.parametrize("bad", [{"scope": 7}, {"scp": [1, 2]}, {"tenant": ["a"]}])
def test_claims_of_the_wrong_type_are_rejected(bad):
    reject(authenticator(), f"Bearer {hs256(claims(**bad))}", "claims")


# --- headers ----------------------------------------------------------------------------


def test_oversized_token_is_rejected_before_parsing():
    authn = authenticator(max_token_bytes=512)
    reject(authn, f"Bearer {hs256(claims(pad='x' * 600))}", "too_large")
    reject(authn, "Bearer " + "a" * 100_000, "too_large")
    reject(authn, b"Bearer " + b"." * 513, "too_large")
    assert authn.authenticate(f"Bearer {hs256(claims())}").subject == "alice"


@pytest.mark.parametrize("header", [None, "", b"", "   "])
def test_missing_token_gets_a_plain_challenge(header):
    reject(authenticator(), header, "missing")


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer    ",
        "Basic dXNlcjpwYXNzd29yZA==",
        "Token abc.def.ghi",
        "garbage",
        "Bearer a.b.c",
        "Bearer not-a-jwt",
        "Bearer x y",
        "Bearer\tabc.def.ghi",
        "Bearer tökén",
        b"Bearer \xff\xfe.\x00.\x01",
        f"Bearer {b64(b'[]')}.{b64(b'{}')}.",
        f"Bearer {b64(json.dumps({'alg': 'HS256', 'kid': 5}).encode())}.{b64(b'{}')}.",
        f"Bearer {signed(b'not json')}",
        f"Bearer {signed(b'[1]')}",
        f"Bearer {signed(json.dumps(claims(exp='tomorrow')).encode())}",
    ],
)
def test_malformed_headers_are_rejected(header):
    reject(authenticator(), header, "malformed")


def test_two_authorization_headers_are_refused_even_when_both_are_valid():
    authn = authenticator()
    token = hs256(claims())
    headers = {b"x": b"1"}
    combine_credentials(headers, [(b"authorization", f"Bearer {token}".encode()), (b"x", b"1"),
                                  (b"authorization", f"Bearer {token}".encode())])
    assert headers[b"authorization"] == f"Bearer {token}, Bearer {token}".encode()
    exc = reject(authn, headers[b"authorization"], "malformed")
    assert exc.message == "send one bearer token in one Authorization header"
    reject(authn, f"Bearer {token},", "malformed")


def test_deeply_nested_header_is_malformed_not_a_crash():
    nested = b64(b"[" * 5000 + b"]" * 5000)
    reject(authenticator(max_token_bytes=65536), f"Bearer {nested}.{b64(b'{}')}.", "malformed")


@given(st.one_of(st.binary(max_size=300), st.text(max_size=300), st.text(max_size=300).map("Bearer {}".format)))
@settings(max_examples=300, deadline=None)
def test_garbage_is_always_a_401(uncached, header):
    with pytest.raises(Unauthorized) as info:
        uncached.authenticate(header)
    assert info.value.headers["WWW-Authenticate"].startswith('Bearer realm="rtserve"')


# --- scopes -----------------------------------------------------------------------------


def test_missing_scope_is_403_with_insufficient_scope():
    principal = authenticator().authenticate(f"Bearer {hs256(claims(scope='predict'))}")
    require_scope(principal, "predict")
    with pytest.raises(Forbidden) as info:
        require_scope(principal, "admin")
    assert info.value.status == 403 and info.value.message == "token lacks scope 'admin'"
    assert info.value.headers["WWW-Authenticate"] == 'Bearer realm="rtserve", error="insufficient_scope", scope="admin"'


# --- cache ------------------------------------------------------------------------------


def test_repeat_is_answered_from_cache_without_verifying(monkeypatch):
    authn = authenticator()
    header = f"Bearer {hs256(claims())}".encode()
    first = authn.authenticate(header)

    def no_verifying(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a cached token was verified again")

    monkeypatch.setattr(jwt, "decode", no_verifying)
    monkeypatch.setattr(jwt, "get_unverified_header", no_verifying)
    for _ in range(1000):
        assert authn.authenticate(header) is first
    assert (authn.stats.cache_hits, authn.stats.verified, authn.cached_tokens) == (1000, 1, 1)
    assert authn.authenticate(header.decode()) is first  # str and bytes headers share the entry


def test_cache_is_keyed_by_digest_not_by_token_text():
    authn = authenticator()
    token = hs256(claims()).encode()
    authn.authenticate(b"Bearer " + token)
    assert all(len(key) == 16 and token not in key for key in authn._cache)


def test_cached_token_is_rejected_once_it_expires():
    authn = authenticator(leeway_s=0)
    exp = int(time.time()) + 1
    if exp - time.time() < 0.3:  # leave time for the first two calls
        exp += 1
    header = f"Bearer {hs256(claims(exp=exp))}"
    authn.authenticate(header)
    authn.authenticate(header)
    assert authn.stats.cache_hits == 1
    deadline = time.monotonic() + 5
    while time.time() < exp and time.monotonic() < deadline:
        time.sleep(0.05)
    reject(authn, header, "expired")  # from the cache entry
    assert authn.cached_tokens == 0
    reject(authn, header, "expired")  # and from PyJWT once the entry is gone
    assert authn.stats.verified == 1


def test_cache_is_bounded_and_evicts_least_recently_used():
    authn = authenticator(cache_size=4)
    tokens = [f"Bearer {hs256(claims(sub=f'user-{i}'))}" for i in range(11)]
    for header in tokens[:10]:
        authn.authenticate(header)
    assert authn.cached_tokens == 4  # users 6..9
    authn.authenticate(tokens[6])  # now most recent; user 7 is the oldest
    assert authn.stats.cache_hits == 1
    authn.authenticate(tokens[10])
    assert authn.cached_tokens == 4
    verified = authn.stats.verified
    authn.authenticate(tokens[6])
    assert (authn.stats.cache_hits, authn.stats.verified) == (2, verified)
    authn.authenticate(tokens[7])
    assert (authn.stats.cache_hits, authn.stats.verified) == (2, verified + 1)


def test_cache_size_zero_verifies_every_time():
    authn = authenticator(cache_size=0)
    header = f"Bearer {hs256(claims())}"
    for _ in range(3):
        authn.authenticate(header)
    assert (authn.stats.cache_hits, authn.stats.verified, authn.cached_tokens) == (0, 3, 0)


def test_a_failed_token_is_never_cached():
    authn = authenticator()
    head, _, _ = hs256(claims()).rpartition(".")
    forged = f"Bearer {head}.{b64(b'x' * 32)}"
    reject(authn, forged, "bad_signature")
    reject(authn, forged, "bad_signature")
    assert (authn.stats.cache_hits, authn.cached_tokens) == (0, 0)
    assert set(authn.stats.failures) == set(FAILURE_REASONS)


# --- configuration ----------------------------------------------------------------------


def test_algorithms_come_from_the_environment_and_none_is_refused(monkeypatch):
    monkeypatch.setenv("RTSERVE_AUTH_ALGORITHMS", "HS256, RS256")
    assert AuthSettings().algorithms == ["HS256", "RS256"]
    monkeypatch.setenv("RTSERVE_AUTH_ALGORITHMS", '["ES256"]')
    assert AuthSettings().algorithms == ["ES256"]
    for bad in ("none", "HS256,none", "HS257", ""):
        monkeypatch.setenv("RTSERVE_AUTH_ALGORITHMS", bad)
        with pytest.raises(ValidationError):
            AuthSettings()


def test_secret_file_is_read_without_its_newline(tmp_path):
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n")
    authn = Authenticator(AuthSettings(enabled=True, hs256_secret_file=path))
    assert authn.authenticate(f"Bearer {hs256(claims())}").subject == "alice"


def test_misconfiguration_fails_at_start(tmp_path, keys_dir):
    (tmp_path / "secret").write_text(SECRET)
    (tmp_path / "keys.json").write_text(json.dumps({"rsa-1": SECRET}))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "k.pem").write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    cases = [
        ({"hs256_secret": None}, "no key"),
        ({"hs256_secret": "short"}, "minimum"),
        ({"hs256_secret_file": tmp_path / "secret"}, "not both"),
        ({"hs256_keys_file": tmp_path / "keys.json", "algorithms": ["HS256", "RS256"], "public_keys_dir": keys_dir}, "twice"),
        ({"public_keys_dir": tmp_path / "junk"}, "not a PEM public key"),
        ({"hs256_secret": None, "public_keys_dir": keys_dir}, "no key serves"),
    ]
    for overrides, words in cases:
        with pytest.raises(ValueError, match=words):
            authenticator(**overrides)


# --- development tokens -----------------------------------------------------------------


def test_ensure_dev_secret_creates_a_private_file_once(tmp_path):
    path = tmp_path / ".dev" / "jwt-secret"
    secret = ensure_dev_secret(path)
    assert len(secret) == 64 and int(secret, 16) >= 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_dev_secret(path) == secret
    assert os.listdir(path.parent) == ["jwt-secret"]


def test_mint_refuses_what_the_server_would_refuse(rsa_key):
    settings = AuthSettings(enabled=True, hs256_secret=SECRET)
    with pytest.raises(ValueError, match="not among"):
        mint(settings, subject="a", scopes="", tenant=None, ttl_s=60, algorithm="RS256", private_key_pem=private_pem(rsa_key))
    expired = mint(settings, subject="a", scopes="", tenant=None, ttl_s=-120)
    reject(Authenticator(settings), f"Bearer {expired}", "expired")
