"""The `rtserve` command line: tokens, and admin operations against a real server."""

from __future__ import annotations

import argparse
import json
import secrets
import time

import jwt
import pytest

from app.cli import main, model_heading, parser
from gateway.auth import Authenticator, AuthSettings
from tests.helpers import ROOT


def test_token_command_falls_back_to_the_projects_dev_secret_wherever_it_runs(tmp_path, monkeypatch, capsys):
    """`make serve`'s key, in the project, also when the command runs in a folder of models."""
    monkeypatch.chdir(tmp_path)
    assert main(["token", "--scope", "predict admin", "--tenant", "acme", "--sub", "dev", "--ttl", "3600"]) == 0
    token = capsys.readouterr().out.strip()
    assert not (tmp_path / ".dev").exists()
    authn = Authenticator(AuthSettings(enabled=True, hs256_secret_file=ROOT / ".dev" / "jwt-secret"))
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
    commands = ["token", "deploy", "models", "load", "unload", "route set", "route reset", "experiment start", "experiment status", "experiment stop",
                "canary start", "canary status", "canary abort", "shadow set", "shadow clear", "audit"]
    for command in commands:
        with pytest.raises(SystemExit) as info:
            main([*command.split(), "--help"])
        assert info.value.code == 0
        assert "usage: rtserve " + command in capsys.readouterr().out
    assert parser().parse_args(["route", "set", "m", "v1=90"]).handler.__name__ == "_route_set"


def _commands(p: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(words, parser) of every command that runs something, through every level of sub-commands."""
    subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, p
    for sub in subs:
        for name, child in sub.choices.items():
            yield from _commands(child, (*path, name))


def test_every_option_of_every_command_has_help_and_shows_its_default():
    commands = list(_commands(parser()))
    assert len(commands) >= 19
    for words, p in commands:
        text = p.format_help()
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"rtserve {' '.join(words)}: {action.dest} has no help text"
            if action.option_strings:
                shown = p._get_formatter()._get_help_string(action)
                assert ("(required)" if action.required else "default") in shown, f"rtserve {' '.join(words)} {action.option_strings[0]}"
        assert "(default:" in text or not any(a.option_strings for a in p._actions[1:]), words
    canary = dict(commands)[("canary", "start")].format_help()
    for default in ("5,25,50,100", "30)", "1000)", "1.2)", "2.0)", "0.001)"):
        assert default in canary.replace("\n", " ")


def test_canary_thresholds_are_sent_from_the_command_line():
    args = parser().parse_args(["canary", "start", "m", "v2", "--max-p95-ratio", "2", "--p95-slack-ms", "5",
                                "--max-error-rate-increase", "0.01", "--max-disagreement", "0.1"])
    assert (args.max_p95_ratio, args.p95_slack_ms, args.max_error_rate_increase, args.max_disagreement) == (2, 5, 0.01, 0.1)


def test_models_shows_a_canary_only_while_it_runs():
    doc = {"origin": "configuration", "weights": {"v2": 100.0}, "experiment": None, "shadow": None,
           "canary": {"version": "v2", "stable": "v1", "status": "promoted"}}
    assert "canary" not in model_heading("m", doc)
    doc["canary"]["status"] = "running"
    assert model_heading("m", doc).endswith("(canary)")
    assert model_heading("m", {**doc, "shadow": {"version": "v2", "fraction": 0.1}}).endswith("(canary, shadow)")


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
