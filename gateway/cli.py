"""`rtserve`: the console script. Subcommands dispatch to the module that owns the concern."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

USAGE = """usage: rtserve COMMAND [ARGS]

commands:
  token    print a signed JWT for calling the server (rtserve token --scope "predict admin")
"""


def _commands() -> dict[str, Callable[[Sequence[str]], int]]:
    from gateway import tokens

    return {"token": tokens.main}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    commands = _commands()
    if not args or args[0] not in commands:
        print(USAGE, file=sys.stderr)
        return 0 if args[:1] in (["-h"], ["--help"]) else 2
    return commands[args[0]](args[1:])


if __name__ == "__main__":
    sys.exit(main())
