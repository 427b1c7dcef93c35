"""The fenced blocks of the docs pages, with the title that says whether a test runs them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"
COMMANDS = ("bash", "python")
"""Languages whose blocks are commands or code to run, and so must carry a title."""
FENCE = re.compile(r'^```(?P<lang>[\w-]*)(?:\s+title="(?P<title>[^"]*)")?\s*$')


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    lang: str
    title: str | None
    text: str


def blocks(docs: Path = DOCS) -> list[Block]:
    found = []
    for page in sorted(docs.glob("*.md")):
        lines = page.read_text(encoding="utf-8").splitlines()
        start = None
        for i, line in enumerate(lines):
            if not line.startswith("```"):
                continue
            if start is None:
                start, opening = i, FENCE.match(line)
                if opening is None:
                    raise ValueError(f"{page.name}:{i + 1}: a fence this check cannot read: {line!r}")
            else:
                found.append(Block(page.name, start + 1, opening["lang"], opening["title"], "\n".join(lines[start + 1 : i])))
                start = None
    return found
