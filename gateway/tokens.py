"""Minting tokens for development and tests; in production the identity provider issues them.

`rtserve token` prints one signed with the same settings the server reads, so a token that
works here works against a local server. Without a configured secret it uses (and on first
use creates) the development secret in `.dev/`, the file `make serve` points the server at.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Any

import jwt

from gateway.auth import AuthSettings, load_hmac_secrets, read_secret_file

DEV_SECRET_FILE = Path(__file__).resolve().parents[1] / ".dev" / "jwt-secret"
"""The project's development key, where `make serve` writes it and its server reads it: the same file wherever
`rtserve` runs (from a folder of models, a key relative to the current folder signed tokens the server refused)."""


def mint(
    settings: AuthSettings,
    *,
    subject: str,
    scopes: str,
    tenant: str | None,
    ttl_s: int,
    kid: str | None = None,
    private_key_pem: bytes | None = None,
    algorithm: str = "HS256",
) -> str:
    """A token the server configured by `settings` accepts (a negative ttl makes an expired one)."""
    if algorithm not in settings.algorithms:
        raise ValueError(f"algorithm {algorithm} is not among the accepted {settings.algorithms}")
    now = int(time.time())
    claims: dict[str, Any] = {"sub": subject, "iat": now, "exp": now + ttl_s}
    if scopes.split():
        claims["scope"] = " ".join(scopes.split())
    if tenant is not None:
        claims["tenant"] = tenant
    if settings.issuer:
        claims["iss"] = settings.issuer
    if settings.audience:
        claims["aud"] = settings.audience
    key: bytes
    if algorithm.startswith("HS"):
        if private_key_pem is not None:
            raise ValueError(f"{algorithm} signs with a shared secret, not a private key")
        kid, key = _hmac_secret(settings, kid)
    elif private_key_pem is None:
        raise ValueError(f"{algorithm} needs private_key_pem")
    else:
        key = private_key_pem
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid} if kid else None)


def _hmac_secret(settings: AuthSettings, kid: str | None) -> tuple[str | None, bytes]:
    found = load_hmac_secrets(settings)
    if kid is not None:
        if kid not in found:
            raise ValueError(f"no HMAC secret with key id '{kid}' is configured")
        return kid, found[kid]
    if None in found:
        return None, found[None]
    if len(found) == 1:
        return next(iter(found.items()))
    raise ValueError("no HMAC secret is configured" if not found else "several HMAC keys are configured; pick one with kid")


def ensure_dev_secret(path: Path) -> str:
    """The development secret at `path`, created (random, mode 0600) on first use.

    Written to a private temporary file and hard-linked into place, so concurrent first uses
    agree on one secret and nobody reads a half-written file.
    """
    if path.exists():
        return read_secret_file(path).decode()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    secret = secrets.token_hex(32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secret + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            return read_secret_file(path).decode()
    finally:
        tmp.unlink(missing_ok=True)
    return secret
