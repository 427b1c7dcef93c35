"""The `rtserve` command line: tokens, and admin operations against a real server."""

from __future__ import annotations

import json
import secrets
import time

import jwt
import pytest

from app.cli import main, parser
from gateway.auth import Authenticator, AuthSettings


def test_token_command_falls_back_to_the_dev_secret(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["token", "--scope", "predict admin", "--tenant", "acme", "--sub", "dev", "--ttl", "3600"]) == 0
    token = capsys.readouterr().out.strip()
    authn = Authenticator(AuthSettings(enabled=True, hs256_secret_file=tmp_path / ".dev" / "jwt-secret"))
    principal = authn.authenticate(f"Bearer {token}")
    assert (principal.subject, principal.tenant, principal.scopes) == ("dev", "acme", frozenset({"predict", "admin"}))
    assert abs(principal.expires_at - (time.time() + 3600)) < 60


def test_token_command_signs_with_configured_kid(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps({"k1": secrets.token_hex(32), "k2": secrets.token_hex(32)}))
    monkeypatch.setenv("RTSERVE_AUTH_HS256_KEYS_FILE", str(keys_file))
    monkeypatch.setenv("RTSERVE_AUTH_ISSUER", "https://idp.example")
    assert main(["token", "--kid", "k2"]) == 0
    token = capsys.readouterr().out.strip()
    assert jwt.get_unverified_header(token)["kid"] == "k2"
    assert Authenticator(AuthSettings(enabled=True)).authenticate(f"Bearer {token}").scopes == frozenset({"predict"})
    assert main(["token", "--kid", "k3"]) == 2
    assert "k3" in capsys.readouterr().err
    assert not (tmp_path / ".dev").exists()


def test_every_command_has_generated_help(capsys):
    commands = ["token", "models", "load", "unload", "route set", "route reset", "experiment start", "experiment status", "experiment stop",
                "canary start", "canary status", "canary abort", "shadow set", "shadow clear", "audit"]
    for command in commands:
        with pytest.raises(SystemExit) as info:
            main([*command.split(), "--help"])
        assert info.value.code == 0
        assert "usage: rtserve " + command in capsys.readouterr().out
    assert parser().parse_args(["route", "set", "m", "v1=90"]).handler.__name__ == "_route_set"


def test_admin_commands_against_a_real_server(gateway, monkeypatch, capsys):
    monkeypatch.setenv("RTSERVE_URL", gateway.url)
    monkeypatch.setenv("RTSERVE_TOKEN", gateway.token(scopes="admin"))
    assert main(["models"]) == 0
    assert "digits-sklearn" in capsys.readouterr().out
    assert main(["route", "set", "digits-torch", "v1=70", "v2=30"]) == 0
    assert "'v2': 30.0" in capsys.readouterr().out
    assert main(["route", "set", "digits-torch", "v1=100"]) == 0
    assert main(["route", "set", "digits-torch", "v1=lots"]) == 2
    assert "VERSION=PERCENT" in capsys.readouterr().err
    assert main(["canary", "status", "no-such-model"]) == 2
    assert "404" in capsys.readouterr().err
