"""`rtserve backup` and `rtserve restore` against the production-shaped server (Redis): the demo store round trip."""

from __future__ import annotations

import json
import time

import httpx

from app.cli import main


def test_backup_then_restore_through_the_cli_keeps_every_route(gateway, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("RTSERVE_URL", gateway.url)
    monkeypatch.setenv("RTSERVE_TOKEN", gateway.token(scopes="admin"))
    routes = httpx.get(gateway.url + "/admin/models", headers=gateway.headers(scopes="admin")).json()
    file = tmp_path / "rtserve.backup.json"
    started = time.perf_counter()
    assert main(["backup", str(file)]) == 0
    backed_up = time.perf_counter() - started
    assert "stored versions" in capsys.readouterr().out
    doc = json.loads(file.read_bytes())
    assert set(doc["routes"]) == set(routes)
    started = time.perf_counter()
    assert main(["restore", str(file)]) == 0
    with capsys.disabled():
        print(f"\ndemo store backup: {file.stat().st_size / 1e6:.2f} MB, {len(doc['versions'])} versions, backed up in "
              f"{backed_up:.2f} s, restored (all present) in {time.perf_counter() - started:.2f} s")
    assert "imported 0 versions" in capsys.readouterr().out
    after = httpx.get(gateway.url + "/admin/models", headers=gateway.headers(scopes="admin")).json()
    assert {n: m["weights"] for n, m in after.items()} == {n: m["weights"] for n, m in routes.items()}
    assert main(["restore", str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err
