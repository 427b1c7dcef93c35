"""The configuration is validated whole at start: one clear line, and `bentoml serve` stops once."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from app.config import ConfigError, load_config
from tests.helpers import BENTOML, ROOT, ServerProcess


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ("RTSERVE_AUTH_ENABLED", "RTSERVE_AUTH_HS256_SECRET", "RTSERVE_AUTH_HS256_SECRET_FILE", "RTSERVE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    secret = tmp_path / "secret"
    secret.write_text("s" * 64)
    return secret


def test_auth_is_on_by_default_and_needs_a_key(clean_env, monkeypatch):
    with pytest.raises(ConfigError, match="RTSERVE_AUTH_HS256_SECRET_FILE"):
        load_config()
    monkeypatch.setenv("RTSERVE_AUTH_HS256_SECRET_FILE", str(clean_env))
    assert load_config().auth.enabled
    monkeypatch.setenv("RTSERVE_AUTH_HS256_SECRET_FILE", str(clean_env.with_name("missing")))
    with pytest.raises(ConfigError, match="authentication keys"):
        load_config()
    monkeypatch.delenv("RTSERVE_AUTH_HS256_SECRET_FILE")
    monkeypatch.setenv("RTSERVE_AUTH_ENABLED", "false")
    assert not load_config().auth.enabled


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("models: {m: {versions: [v1], batching: {max_batch_siz: 4}}}", "models.m.batching.max_batch_siz: Extra inputs are not permitted"),
        ("models: {m: {versions: [v1], batching: {max_batch_size: 0}}}", "models.m.batching.max_batch_size: Input should be greater"),
        ("models: {m: {versions: [v1], weights: {v2: 100}}}", "weights name versions that are not loaded"),
        ("models: {m: {versions: []}}", "models.m.versions"),
        ("modls: {}", "models: Field required"),
        ("models: [", "not valid YAML"),
    ],
)
def test_a_serving_file_mistake_names_the_file_and_the_field(clean_env, monkeypatch, tmp_path, yaml_text, expected):
    path = tmp_path / "serving.yaml"
    path.write_text(yaml_text)
    monkeypatch.setenv("RTSERVE_CONFIG", str(path))
    monkeypatch.setenv("RTSERVE_AUTH_ENABLED", "false")
    with pytest.raises(ConfigError) as info:
        load_config()
    assert str(info.value).startswith(str(path)) and expected in str(info.value), str(info.value)


def test_an_environment_mistake_names_the_variable(clean_env, monkeypatch):
    monkeypatch.setenv("RTSERVE_AUTH_ENABLED", "false")
    monkeypatch.setenv("RTSERVE_LIMIT_MAX_ROWS", "many")
    with pytest.raises(ConfigError, match="environment RTSERVE_LIMIT_MAX_ROWS"):
        load_config()
    monkeypatch.delenv("RTSERVE_LIMIT_MAX_ROWS")
    monkeypatch.setenv("RTSERVE_EVENT_LOOP", "trio")
    with pytest.raises(ConfigError, match="environment RTSERVE_EVENT_LOOP"):
        load_config()
    monkeypatch.setenv("RTSERVE_EVENT_LOOP", "asyncio")
    assert load_config().loop.event_loop == "asyncio"
    for name, value in (("RTSERVE_WORKERS", "0"), ("RTSERVE_TRAFFIC_TIMEOUT_S", "-1"), ("RTSERVE_FRONT_DOOR_ENABLED", "maybe")):
        monkeypatch.setenv(name, value)
        with pytest.raises(ConfigError, match=f"environment {name}"):
            load_config()
        monkeypatch.delenv(name)
    monkeypatch.setenv("RTSERVE_TLS_CERTFILE", str(clean_env))
    with pytest.raises(ConfigError, match="environment RTSERVE_TLS_\\*: .*set both RTSERVE_TLS_CERTFILE and RTSERVE_TLS_KEYFILE"):
        load_config()
    monkeypatch.setenv("RTSERVE_TLS_KEYFILE", str(clean_env.with_name("missing")))
    with pytest.raises(ConfigError, match="is not a readable file"):
        load_config()


def test_permissions_name_tiers_the_rate_limit_defines(clean_env, monkeypatch):
    monkeypatch.setenv("RTSERVE_AUTH_ENABLED", "false")
    monkeypatch.setenv("RTSERVE_ACCESS_TIERS", '{"gold": {"top_priority": 1}}')
    with pytest.raises(ConfigError, match="RTSERVE_ACCESS_TIERS: tiers not defined in RTSERVE_RATELIMIT_TIERS: gold"):
        load_config()
    monkeypatch.setenv("RTSERVE_RATELIMIT_TIERS", '{"gold": {"rate": 10, "burst": 10}}')
    monkeypatch.setenv("RTSERVE_ACCESS_DEFAULT", '{"models": ["digits-onnx"]}')
    config = load_config()
    assert config.access.tiers["gold"].top_priority == 1 and config.access.default.models == ["digits-onnx"]
    monkeypatch.setenv("RTSERVE_ACCESS_TIERS", '{"gold": {"top_priority": 17}}')
    with pytest.raises(ConfigError, match="environment RTSERVE_ACCESS_TIERS"):
        load_config()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "authentication is on but no key is configured"),
        ({"RTSERVE_AUTH_ENABLED": "false", "RTSERVE_CONFIG": "typo.yaml"}, "typo.yaml: cannot be read"),
        ({"RTSERVE_AUTH_ENABLED": "false", "RTSERVE_WORKERS": "none"}, "environment RTSERVE_WORKERS"),  # read on import
    ],
)
def test_bentoml_serve_stops_once_with_one_line(model_store, tmp_path, env, expected):
    server = ServerProcess(env={"REDIS_URL": "", **env})
    if "RTSERVE_AUTH_ENABLED" not in env:
        del server.env["RTSERVE_AUTH_ENABLED"]  # the default, as a built Bento runs it
    start = time.monotonic()
    out = subprocess.run([BENTOML, "serve", "--port", str(server.port)], cwd=ROOT, env={**os.environ, **server.env},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    lines = [line for line in (out.stdout + out.stderr).splitlines() if "configuration error" in line]
    assert len(lines) == 1 and expected in lines[0], out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    assert time.monotonic() - start < 60
    assert not Path(ROOT / "typo.yaml").exists()
