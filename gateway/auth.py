"""JWT bearer authentication: verify a token once, then answer its repeats from a cache.

Verification is PyJWT with the algorithm allow-list and the keys fixed when the service
starts; nothing in a token decides how it is checked, except its `kid`, which only picks
among keys already trusted. A verified token is remembered under its blake2b digest (never
its text) until it expires, so a client resending its token pays a hash and a dict lookup,
not a signature check.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import get_default_algorithms
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.errors import Forbidden, Unauthorized

log = logging.getLogger(__name__)

REALM = "rtserve"
FAILURE_REASONS = (
    "missing", "malformed", "too_large", "bad_algorithm", "unknown_kid",
    "bad_signature", "expired", "not_yet_valid", "claims",
)  # fmt: skip
"""Every reason `AuthStats.failures` counts, so metrics can export zeros from the start."""

_HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
_RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_EC_ALGORITHMS = {"secp256r1": ("ES256",), "secp384r1": ("ES384",), "secp521r1": ("ES512", "ES521"), "secp256k1": ("ES256K",)}
_EDDSA_ALGORITHMS = ("EdDSA",)
_FAR_FUTURE = 2**53
MAX_SUBJECT_CHARS = 255
"""Longest `sub` accepted, OpenID Connect's bound: it becomes a sticky-routing key and a job's owner."""


class AuthSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RTSERVE_AUTH_")

    enabled: bool = True
    """Require a bearer token. On unless switched off on purpose; on without a key, the service refuses to start."""
    algorithms: Annotated[list[str], NoDecode] = ["HS256"]
    """Accepted JWS algorithms, pinned here and never taken from a token (`none` is refused).
    From the environment: comma-separated or a JSON list."""
    hs256_secret: SecretStr | None = None
    """Shared HMAC secret for tokens that name no `kid` (at least as long as the hash, 32 bytes for HS256)."""
    hs256_secret_file: Path | None = None
    """File holding that secret instead, so it stays out of the environment and process listings."""
    hs256_keys_file: Path | None = None
    """JSON object kid -> secret: old and new keys are valid side by side while a key rotates."""
    public_keys_dir: Path | None = None
    """Directory of PEM public keys (RSA, EC, Ed25519) for RS/PS/ES/EdDSA tokens; a file's stem is its `kid`."""
    issuer: str | None = None
    """Required `iss` claim, when set."""
    audience: str | None = None
    """Required `aud` claim, when set; when unset `aud` is not checked."""
    leeway_s: float = Field(30.0, ge=0)
    """Clock skew tolerated on `exp`, `nbf` and `iat`."""
    max_lifetime_s: float = Field(86400.0, gt=0)
    """Longest a token may be valid: `exp - iat` (or, without `iat`, `exp` minus now) above this is refused,
    so a leaked token cannot stay valid for years; raise it for long-lived service tokens."""
    max_token_bytes: int = Field(8192, gt=0)
    """Longest token accepted; longer ones are refused before any parsing."""
    cache_size: int = Field(10_000, ge=0)
    """Verified tokens remembered (least recently used go first); 0 turns the cache off."""

    @field_validator("algorithms", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            return json.loads(text) if text.startswith("[") else [a for a in re.split(r"[\s,]+", text) if a]
        return value

    @field_validator("algorithms")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        known = set(get_default_algorithms()) - {"none"}
        unknown = [a for a in value if a not in known]
        if unknown:
            raise ValueError(f"unsupported or unsafe algorithm(s) {unknown}; choose from {sorted(known)}")
        if not value:
            raise ValueError("at least one algorithm is required")
        return list(dict.fromkeys(value))


TENANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
"""What a named tenant (a token's `tenant` claim, a rate-limit tier assignment) may be called."""


def subject_tenant(subject: str) -> str:
    """The tenant of a token without a `tenant` claim: its subject alone, in a namespace (`~`) that no
    named tenant can reach, so `sub: acme` never shares tenant acme's bucket or tier."""
    return "~" + subject


@dataclass(frozen=True, slots=True)
class Principal:
    """Who called: what the authorization, rate-limit and metrics layers key on."""

    subject: str
    tenant: str
    scopes: frozenset[str]
    expires_at: float
    models: frozenset[str] | None = None
    """The token's `models` claim: the only models it may use; None when it names none."""


@dataclass(slots=True)
class AuthStats:
    """Counters for the metrics layer; plain ints because they are bumped on every request."""

    cache_hits: int = 0
    verified: int = 0
    """Tokens that went through a full signature check and passed."""
    failures: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAILURE_REASONS, 0))


@dataclass(frozen=True, slots=True)
class _Key:
    kid: str | None
    material: bytes | Any
    algorithms: list[str]
    """The allowed algorithms this key can verify, in allow-list order."""


class _Rejected(Exception):
    def __init__(self, reason: str, description: str) -> None:
        self.reason, self.description = reason, description


def read_secret_file(path: Path) -> bytes:
    """A secret file's content without surrounding whitespace (editors add a newline)."""
    secret = path.read_bytes().strip()
    if not secret:
        raise ValueError(f"secret file {path} is empty")
    return secret


def load_hmac_secrets(settings: AuthSettings) -> dict[str | None, bytes]:
    """The configured HMAC secrets by kid; the `None` entry serves tokens that name no kid."""
    if settings.hs256_secret is not None and settings.hs256_secret_file is not None:
        raise ValueError("set hs256_secret or hs256_secret_file, not both")
    secrets: dict[str | None, bytes] = {}
    if settings.hs256_secret is not None:
        secrets[None] = settings.hs256_secret.get_secret_value().encode()
    elif settings.hs256_secret_file is not None:
        secrets[None] = read_secret_file(settings.hs256_secret_file)
    if settings.hs256_keys_file is not None:
        path = settings.hs256_keys_file
        try:
            doc = json.loads(path.read_bytes())
        except ValueError:
            raise ValueError(f"{path} is not valid JSON") from None
        if not isinstance(doc, dict) or not all(k and isinstance(v, str) and v for k, v in doc.items()):
            raise ValueError(f"{path} must be a JSON object of kid -> non-empty secret")
        secrets.update((kid, secret.encode()) for kid, secret in doc.items())
    return secrets


def _load_public_keys(directory: Path) -> dict[str, Any]:
    if not directory.is_dir():
        raise ValueError(f"public_keys_dir {directory} is not a directory")
    keys: dict[str, Any] = {}
    for path in sorted(directory.glob("*.pem")):
        try:
            keys[path.stem] = load_pem_public_key(path.read_bytes())
        except (ValueError, TypeError):
            raise ValueError(f"{path} is not a PEM public key") from None
    return keys


def _algorithms_of(material: Any) -> tuple[str, ...]:
    if isinstance(material, bytes):
        return _HMAC_ALGORITHMS
    if isinstance(material, rsa.RSAPublicKey):
        return _RSA_ALGORITHMS
    if isinstance(material, ec.EllipticCurvePublicKey):
        return _EC_ALGORITHMS.get(material.curve.name, ())
    if isinstance(material, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return _EDDSA_ALGORITHMS
    return ()


_JWT_ERRORS: tuple[tuple[type[Exception], str, str], ...] = (
    (jwt.ExpiredSignatureError, "expired", "token expired"),
    (jwt.ImmatureSignatureError, "not_yet_valid", "token not yet valid"),
    (jwt.InvalidSignatureError, "bad_signature", "signature verification failed"),
    (jwt.InvalidAlgorithmError, "bad_algorithm", "token algorithm is not accepted"),
    (jwt.InvalidKeyError, "bad_algorithm", "token algorithm does not fit its key"),
    (jwt.InvalidIssuerError, "claims", "wrong issuer"),
    (jwt.InvalidAudienceError, "claims", "wrong audience"),
    (jwt.DecodeError, "malformed", "token is not a well-formed JWT"),
    (jwt.InvalidTokenError, "claims", "token claims are invalid"),
)


def _classify(exc: jwt.PyJWTError) -> _Rejected:
    if isinstance(exc, jwt.MissingRequiredClaimError):  # names one of our required claims: safe to echo
        return _Rejected("claims", f"token lacks required claim '{exc.claim}'")
    for kind, reason, description in _JWT_ERRORS:
        if isinstance(exc, kind):
            return _Rejected(reason, description)
    return _Rejected("malformed", "token is not a well-formed JWT")


class Authenticator:
    """Checks `Authorization: Bearer` headers against keys loaded once, at start."""

    def __init__(self, settings: AuthSettings) -> None:
        allowed = list(settings.algorithms)
        keys = [self._key(kid, secret, allowed) for kid, secret in load_hmac_secrets(settings).items()]
        public = _load_public_keys(settings.public_keys_dir) if settings.public_keys_dir else {}
        keys += [self._key(kid, material, allowed) for kid, material in public.items()]
        keys = [k for k in keys if k is not None]
        if not keys:
            raise ValueError(f"authentication is on but no key serves the allowed algorithms {allowed}")
        self._named: dict[str, _Key] = {}
        for key in keys:
            if key.kid is not None:
                if key.kid in self._named:
                    raise ValueError(f"key id '{key.kid}' is configured twice")
                self._named[key.kid] = key
        self._unnamed: dict[str, _Key] = {}
        for alg in allowed:
            candidates = [k for k in keys if alg in k.algorithms]
            default = next((k for k in candidates if k.kid is None), None)
            if default is None and len(candidates) == 1:
                default = candidates[0]
            if default is not None:
                self._unnamed[alg] = default
        self._allowed = frozenset(allowed)
        self._options: dict[str, Any] = {"require": ["exp", "sub"], "verify_aud": settings.audience is not None}
        self._issuer = settings.issuer
        self._audience = settings.audience
        self._leeway = settings.leeway_s
        self._max_lifetime = settings.max_lifetime_s
        self._max_token = settings.max_token_bytes
        self._max_header = settings.max_token_bytes + 64
        self._cache_size = settings.cache_size
        self._cache: OrderedDict[bytes, tuple[Principal, float]] = OrderedDict()
        """blake2b(token) -> (principal, valid until); no lock: each OrderedDict call is atomic under the GIL."""
        self.stats = AuthStats()
        log.info("auth: algorithms %s, key ids %s", allowed, sorted(self._named) or "(none)")

    @staticmethod
    def _key(kid: str | None, material: Any, allowed: list[str]) -> _Key | None:
        algorithms = [a for a in allowed if a in _algorithms_of(material)]
        name = f"key '{kid}'" if kid else "hs256_secret"
        if not algorithms:
            log.warning("auth: %s serves none of the allowed algorithms %s; ignored", name, allowed)
            return None
        for alg in algorithms:
            weakness = jwt.get_algorithm_by_name(alg).check_key_length(material)
            if weakness:
                raise ValueError(f"{name}: {weakness}")
        return _Key(kid, material, algorithms)

    @property
    def cached_tokens(self) -> int:
        return len(self._cache)

    def authenticate(self, authorization: bytes | str | None) -> Principal:
        """The caller named by a bearer token, or `Unauthorized` saying why not (RFC 6750)."""
        try:
            token = self._bearer(authorization)
            digest = hashlib.blake2b(token, digest_size=16).digest()
            cache = self._cache
            entry = cache.get(digest)
            if entry is not None:
                if time.time() < entry[1]:
                    try:
                        cache.move_to_end(digest)
                    except KeyError:  # evicted by another thread just now; the entry is still good
                        pass
                    self.stats.cache_hits += 1
                    return entry[0]
                cache.pop(digest, None)
                raise _Rejected("expired", "token expired")
            principal, valid_until = self._verify(token)
        except _Rejected as rejected:
            self.stats.failures[rejected.reason] = self.stats.failures.get(rejected.reason, 0) + 1
            if rejected.reason == "missing":
                challenge = f'Bearer realm="{REALM}"'
            else:
                challenge = f'Bearer realm="{REALM}", error="invalid_token", error_description="{rejected.description}"'
            raise Unauthorized(rejected.description, headers={"WWW-Authenticate": challenge}) from None
        self.stats.verified += 1
        if self._cache_size:
            cache[digest] = (principal, valid_until)
            while len(cache) > self._cache_size:
                try:
                    cache.popitem(last=False)
                except KeyError:
                    break
        return principal

    def _bearer(self, authorization: bytes | str | None) -> bytes:
        if authorization is None:
            raise _Rejected("missing", "missing bearer token")
        if isinstance(authorization, str):
            try:
                authorization = authorization.encode("ascii")
            except UnicodeEncodeError:
                raise _Rejected("malformed", "authorization header is not ASCII") from None
        if len(authorization) > self._max_header:
            raise _Rejected("too_large", "token too large")
        if b"," in authorization:  # no bearer token has one: two headers, combined by the front end (RFC 9110)
            raise _Rejected("malformed", "send one bearer token in one Authorization header")
        scheme, _, token = authorization.strip().partition(b" ")
        if not scheme:
            raise _Rejected("missing", "missing bearer token")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:  # inner whitespace fails as a malformed JWT
            raise _Rejected("malformed", "expected 'Authorization: Bearer <token>'")
        if len(token) > self._max_token:
            raise _Rejected("too_large", "token too large")
        return token

    def _verify(self, token: bytes) -> tuple[Principal, float]:
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError, TypeError, OverflowError, RecursionError):
            raise _Rejected("malformed", "token is not a well-formed JWT") from None
        key = self._key_for(header)
        try:
            claims = jwt.decode(
                token,
                key.material,
                algorithms=key.algorithms,
                options=self._options,
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
            )
        except jwt.PyJWTError as exc:
            raise _classify(exc) from None
        except (ValueError, TypeError, OverflowError, RecursionError):
            raise _Rejected("malformed", "token is not a well-formed JWT") from None
        exp = self._lifetime_checked(claims)
        return self._principal(claims, float(exp)), exp + self._leeway

    def _lifetime_checked(self, claims: dict[str, Any]) -> int:
        """`exp` as PyJWT compared it (truncated), once the token's lifetime is within the maximum."""
        exp, iat = claims["exp"], claims.get("iat")
        for name, value in (("exp", exp), ("iat", iat)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or (isinstance(value, float) and not math.isfinite(value))):
                raise _Rejected("claims", f"{name} must be a finite number")
        start = time.time() if iat is None else iat
        # Past 2**53 s either way a time is no date (and int - float could overflow): too long a life.
        if abs(exp) > _FAR_FUTURE or abs(start) > _FAR_FUTURE or exp - start > self._max_lifetime:
            raise _Rejected("claims", f"token lifetime is over the maximum of {self._max_lifetime:g} s")
        return int(exp)

    def _key_for(self, header: dict[str, Any]) -> _Key:
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._allowed:
            raise _Rejected("bad_algorithm", "token algorithm is not accepted")
        kid = header.get("kid")
        if kid is None or not self._named:  # with no named keys, a kid selects nothing
            key = self._unnamed.get(alg)
            if key is None:
                raise _Rejected("unknown_kid", "no key for this token; name one with kid")
        else:
            key = self._named.get(kid)
            if key is None:
                raise _Rejected("unknown_kid", "unknown key id")
        if alg not in key.algorithms:
            raise _Rejected("bad_algorithm", "token algorithm does not fit its key")
        return key

    @staticmethod
    def _principal(claims: dict[str, Any], expires_at: float) -> Principal:
        _well_formed(claims)
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise _Rejected("claims", "sub must be a non-empty string")
        if len(subject) > MAX_SUBJECT_CHARS or not subject.isprintable():
            raise _Rejected("claims", f"sub must be printable text of at most {MAX_SUBJECT_CHARS} characters")
        tenant = claims.get("tenant")
        if tenant is None:
            tenant = subject_tenant(subject)
        elif not isinstance(tenant, str) or not TENANT_NAME.fullmatch(tenant):
            raise _Rejected("claims", "tenant must be a name of letters, digits and . _ @ - (at most 128)")
        models = _names(claims, "models")
        return Principal(subject, tenant, _scopes(claims), expires_at, frozenset(models) if models is not None else None)


def combine_credentials(headers: dict[bytes, bytes], raw: Iterable[tuple[bytes, bytes]]) -> None:
    """Repeated `authorization` fields joined with commas (RFC 9110's combination), which `authenticate`
    refuses: two credentials must never pass as whichever came last. For front ends whose header map
    (`headers`, built from `raw`) came out shorter than the fields sent."""
    sent = [value for name, value in raw if name == b"authorization"]
    if len(sent) > 1:
        headers[b"authorization"] = b", ".join(sent)


def _well_formed(claims: dict[str, Any]) -> None:
    """Every string in the claims (names and values, at any depth) encodes as UTF-8.

    JSON's `\\ud800` escapes decode to lone surrogates, which are not text: a claim holding one
    would fail later, wherever it is written out (a job record, a log line, a routing key)."""
    pending: list[Any] = [claims]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            pending.extend(value)
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise _Rejected("claims", "token claims are not well-formed text") from None


def _scopes(claims: dict[str, Any]) -> frozenset[str]:
    """Scopes from `scope` (space-separated, RFC 8693) and `scp` (a list, as some issuers send)."""
    scopes: set[str] = set()
    for name in ("scope", "scp"):
        scopes.update(_names(claims, name) or ())
    return frozenset(scopes)


def _names(claims: dict[str, Any], name: str) -> list[str] | None:
    """A claim of names: space-separated in a string, or a list of strings; None when absent."""
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return value
    raise _Rejected("claims", f"{name} claim must be a string or a list of strings")


def require_scope(principal: Principal, scope: str) -> None:
    """403 unless the token grants `scope`; authentication succeeded, so this is not a 401."""
    if scope not in principal.scopes:
        challenge = f'Bearer realm="{REALM}", error="insufficient_scope", scope="{scope}"'
        raise Forbidden(f"token lacks scope '{scope}'", headers={"WWW-Authenticate": challenge})
