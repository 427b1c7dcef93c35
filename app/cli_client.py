"""What every `rtserve` command shares: how commands are declared, the signing key, and one call to the server.

The server is RTSERVE_URL (default http://localhost:3000); the token is RTSERVE_TOKEN, or one minted for the
command from the configured key (the development key of `make serve` when none is configured).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

import httpx

from gateway.auth import AuthSettings
from gateway.tokens import DEV_SECRET_FILE, ensure_dev_secret, mint

Handler = Callable[[argparse.Namespace], None]


class CommandError(Exception):
    """What a command prints instead of a traceback; exit status 2."""


class DefaultsShown(argparse.HelpFormatter):
    """`--help` names every option's default: appended where its help text does not already say it; an option
    without a value (None) must say in its help what happens when it is left out; a required one says so."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.required and action.option_strings:
            return f"{text} (required)"
        if "default" in text or action.default in (None, argparse.SUPPRESS) or not action.option_strings:
            return text
        shown = "off" if action.default is False else "on" if action.default is True else "%(default)s"
        return f"{text} (default: {shown})"


def command(sub: argparse._SubParsersAction, name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text, description=help_text, formatter_class=DefaultsShown)
    parser.set_defaults(handler=handler)
    return parser


def group(sub: argparse._SubParsersAction, name: str, help_text: str) -> argparse._SubParsersAction:
    """A command with actions of its own (rtserve canary start|status|abort)."""
    parser = sub.add_parser(name, help=help_text, description=help_text, formatter_class=DefaultsShown)
    return parser.add_subparsers(dest="action", required=True, metavar="ACTION")


def signing_settings() -> AuthSettings:
    """The configured HMAC key, else the development key (created on first use, as `make serve` does)."""
    settings = AuthSettings()
    if all(v is None for v in (settings.hs256_secret, settings.hs256_secret_file, settings.hs256_keys_file)):
        ensure_dev_secret(DEV_SECRET_FILE)
        settings = settings.model_copy(update={"hs256_secret_file": DEV_SECRET_FILE})
    return settings


def request(method: str, path: str, *, scopes: str, tenant: str, ttl_s: int, timeout: float, **kwargs: Any) -> httpx.Response:
    """One call with RTSERVE_TOKEN or a token minted for `scopes` and `tenant`; an error answer becomes a
    CommandError with the server's message."""
    token = os.environ.get("RTSERVE_TOKEN") or mint(signing_settings(), subject="rtserve-cli", scopes=scopes, tenant=tenant,
                                                    ttl_s=ttl_s)
    url = os.environ.get("RTSERVE_URL", "http://localhost:3000").rstrip("/")
    headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
    try:
        r = httpx.request(method, url + path, headers=headers, timeout=timeout, **kwargs)
    except httpx.HTTPError as exc:
        raise CommandError(f"cannot reach {url}: {exc}") from None
    if r.status_code >= 400:
        try:
            doc = r.json()
            message = doc.get("error", r.text) if isinstance(doc, dict) else r.text
        except ValueError:
            message = r.text
        raise CommandError(f"{r.status_code} {message}")
    return r
