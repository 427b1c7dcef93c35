"""`rtserve release-models`: the versions the routes load, written into the bentofile's models list."""

from __future__ import annotations

from pathlib import Path

import yaml

from app.release_cli import merged, routed_versions

ROOT = Path(__file__).resolve().parents[2]


def test_routed_versions_are_added_once_and_the_rest_of_the_bentofile_is_kept() -> None:
    described = {"digits-sklearn": {"loaded": ["v1", "v2"], "weights": {"v1": 100}},
                 "own-iris": {"loaded": ["v3"], "origin": "runtime"}}
    original = (ROOT / "bentofile.yaml").read_text()
    text, models = merged(original, routed_versions(described))
    doc, before = yaml.safe_load(text), yaml.safe_load(original)
    assert models == [*before["models"], "own-iris:v3"] == doc["models"]
    assert {k: v for k, v in doc.items() if k != "models"} == {k: v for k, v in before.items() if k != "models"}
    assert merged(text, routed_versions(described))[0] == text  # running it again changes nothing
