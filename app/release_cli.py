"""`rtserve release-models`: the versions deployed at runtime into the next Bento, so a release carries them.

Hot deploys go through the model repository and reach every replica within seconds; a release is the
Bento, which Argo Rollouts canaries as one image. This command closes the gap: it reads the versions
the routes load (from the running service's admin API), pulls any that this machine's store lacks from
the model repository, and writes them into the bentofile's `models:` list, so `bentoml build` packs them.

    RTSERVE_URL=https://rtserve.example RTSERVE_MODEL_REPOSITORY=s3://models/prod rtserve release-models --write
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import yaml

from app.cli_client import CommandError, command, request

MODELS_BLOCK = re.compile(r"^models:\n(?:(?:  - .*|\s*#.*)\n)*", re.MULTILINE)


def register(sub: argparse._SubParsersAction) -> None:
    c = command(sub, "release-models", _release, "put the versions the routes load (deploys included) into the "
                "bentofile's models, pulling from the model repository what this store lacks")
    c.add_argument("--bentofile", type=Path, default=Path("bentofile.yaml"), help="the bentofile to update")
    c.add_argument("--write", action="store_true", help="write the bentofile (without it: print the models list)")


def routed_versions(described: dict) -> list[str]:
    """NAME:VERSION of every version the routes load, from GET /admin/models."""
    return sorted(f"{name}:{v}" for name, m in described.items() for v in m.get("loaded", []))


def merged(bentofile: str, tags: list[str]) -> tuple[str, list[str]]:
    """The bentofile with `tags` added to its models list (kept in order, no duplicates), and the list."""
    current = [str(m) if isinstance(m, str) else str(m["tag"]) for m in (yaml.safe_load(bentofile) or {}).get("models", [])]
    models = current + [t for t in tags if t not in current]
    block = "models:\n" + "".join(f"  - {t}\n" for t in models)
    match = MODELS_BLOCK.search(bentofile)
    return (bentofile[: match.start()] + block + bentofile[match.end():] if match else bentofile + block), models


def _release(a: argparse.Namespace) -> None:
    # Imported here: the store and the repository client bring bentoml and numpy, which every other
    # command (`rtserve deploy` above all) would otherwise pay for at start.
    from models.remote import ModelRepositorySettings, ObjectRepository
    from models.store import exists

    described = request("GET", "/admin/models", scopes="admin", tenant="admin", ttl_s=300, timeout=30).json()
    tags = routed_versions(described)
    missing = [t for t in tags if not exists(t)]
    remote = ObjectRepository.from_settings(ModelRepositorySettings())
    if missing and remote is None:
        raise CommandError(f"{missing} are not in this store and no model repository is set (RTSERVE_MODEL_REPOSITORY)")
    for tag in missing:
        name, version = tag.split(":", 1)
        remote.pull(name, version)
        print(f"pulled {tag} from {remote.url}")
    text, models = merged(a.bentofile.read_text(), tags)
    if a.write:
        a.bentofile.write_text(text)
        print(f"{a.bentofile}: {len(models)} models; build the release with `bentoml build`")
    else:
        print("models:\n" + "".join(f"  - {t}\n" for t in models), end="")
