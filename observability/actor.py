"""Who is changing the service's state: set where an admin call is authorized, read where the change is audited.

A context variable, as the request labels are (observability/context.py): every request runs in a task
of its own, so one caller's identity never leaks into another's; background tasks (the canary
controller, the start-up merge of serving.yaml) see `SYSTEM`.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Actor:
    subject: str
    """The token's subject, or "system" for what the service does by itself."""
    tenant: str


SYSTEM = Actor("system", "system")

_actor: ContextVar[Actor] = ContextVar("rtserve_actor", default=SYSTEM)


def acting_as(subject: str, tenant: str) -> None:
    _actor.set(Actor(subject, tenant))


def current_actor() -> Actor:
    return _actor.get()
