"""`rtserve`: the console script. Subcommands dispatch to the module that owns the concern."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

USAGE = """usage: rtserve COMMAND [ARGS]

commands:
  token       print a signed JWT for calling the server (rtserve token --scope "predict admin")
  models      models, loaded versions, states and weights
  load        load a version in every worker (rtserve load digits-sklearn v2)
  unload      drain and free a version
  route       rtserve route set digits-sklearn v1=90 v2=10
  experiment  start | status | stop a sticky A/B experiment
  canary      start | status | abort a canary rollout (rtserve canary start digits-sklearn v2)
  shadow      set | clear mirrored traffic to a version
"""


def _commands() -> dict[str, Callable[[Sequence[str]], int]]:
    from gateway import tokens
    from routing import cli as routing_cli

    def routing(command: str) -> Callable[[Sequence[str]], int]:
        return lambda args: routing_cli.main([command, *args])

    commands = {c: routing(c) for c in ("models", "load", "unload", "route", "experiment", "canary", "shadow")}
    return {"token": tokens.main, **commands}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    commands = _commands()
    if not args or args[0] not in commands:
        print(USAGE, file=sys.stderr)
        return 0 if args[:1] in (["-h"], ["--help"]) else 2
    return commands[args[0]](args[1:])


if __name__ == "__main__":
    sys.exit(main())
