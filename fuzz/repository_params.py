"""atheris target: the parameters of a repository load or unload (`requested_versions`), as tritonclient
sends them: a JSON object whose `config` is a model configuration, as a string or an object.

The input is the parameters' JSON; input that is not a JSON object is taken as the `config` string
itself, so deep and broken configurations reach the parser. A crash is anything but a
`ServingError`: what a configuration nested 200,000 deep once was (RecursionError, a 500)."""

from __future__ import annotations

import atheris
import orjson

import routing.admin  # noqa: F401 - imported before instrumentation: only the parser's module is instrumented
import runners.registry  # noqa: F401

with atheris.instrument_imports():
    from pipeline.repository import requested_versions

from fuzz.common import main


def target(data: bytes) -> None:
    try:
        params = orjson.loads(data)
    except orjson.JSONDecodeError:
        params = None
    if not isinstance(params, dict):
        params = {"config": data}
    requested_versions(params, load=True)
    requested_versions(params, load=False)


if __name__ == "__main__":
    main(target)
