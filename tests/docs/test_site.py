"""The docs site builds in strict mode (so every internal link and anchor resolves), the README's links into it
resolve, and every block of commands says whether a test runs it (docs/contributing.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.docs.blocks import COMMANDS, DOCS, blocks

ROOT = DOCS.parent


def build(project: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)], check=False,
                          cwd=project, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, capture_output=True, text=True, timeout=120)


def test_the_site_builds_in_strict_mode_and_the_readmes_links_into_it_resolve(tmp_path):
    done = build(ROOT, tmp_path / "site")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "index.html").exists()
    for page, anchor in re.findall(r"\]\(docs/([\w-]+)\.md(?:#([\w-]+))?\)", (ROOT / "README.md").read_text()):
        html = tmp_path / "site" / ("" if page == "index" else page) / "index.html"
        assert html.exists(), f"README links to docs/{page}.md, which is not a page"
        assert not anchor or f'id="{anchor}"' in html.read_text(), f"README links to docs/{page}.md#{anchor}: no such heading"


def test_a_broken_link_fails_the_build(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# x\n\n[missing](nowhere.md) and [no heading](index.md#nothing)\n")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())  # the project's settings, its own pages
    del config["nav"]
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    done = build(tmp_path, tmp_path / "site")
    assert done.returncode != 0
    assert "nowhere.md" in done.stderr and "nothing" in done.stderr


def test_every_block_of_commands_is_run_by_a_test_or_marked_illustrative():
    for block in blocks():
        if block.lang not in COMMANDS:
            assert block.lang, f"{block.page}:{block.line}: a fence without a language (text, yaml, json, bash, ...)"
            continue
        where = f"{block.page}:{block.line}"
        assert block.title is not None, f"{where}: a {block.lang} block without a title (docs/contributing.md)"
        if block.title == "illustrative":
            continue
        assert block.title.startswith("run by tests/"), f"{where}: title {block.title!r}"
        test = ROOT / block.title.removeprefix("run by ")
        assert test.is_file(), f"{where}: {test} does not exist"
        assert block.page in test.read_text(), f"{where}: {test.name} does not mention {block.page}"
