"""The blocks of commands the docs say a test runs (docs/index.md: the quick start's requests), run as
written against the production-shaped server: only its address replaces `localhost:3000`, and curl fails
on an HTTP error."""

from __future__ import annotations

import json
import os
import subprocess

from tests.docs.blocks import DOCS, blocks

TITLE = "run by tests/docs/test_commands.py"


def documents(text: str) -> list[object]:
    """The JSON documents curl printed one after another, without separators."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while at < len(text.rstrip()):
        document, at = decoder.raw_decode(text, at)
        found.append(document)
        while at < len(text) and text[at].isspace():
            at += 1
    return found


def test_the_quick_start_requests_answer_as_the_docs_say(gateway):
    block = next(b for b in blocks() if b.page == "index.md" and b.title == TITLE)
    script = block.text.replace("localhost:3000", gateway.url.removeprefix("http://")).replace("curl -s ", "curl -sf ")
    env = {**os.environ, "RTSERVE_AUTH_HS256_SECRET_FILE": str(gateway.auth.hs256_secret_file)}  # `rtserve token` signs with it
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], check=False, cwd=DOCS.parent, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    answers = documents(done.stdout)
    assert answers[0] == {"ready": True}
    assert answers[1]["name"] == "digits-sklearn"
    assert answers[2]["model_version"] == "v2" and answers[2]["outputs"]
    assert len(answers[3]["outputs"]) >= 1
