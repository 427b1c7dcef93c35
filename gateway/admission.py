"""Who may call, and how often: authentication, scope, and the tenant's rate limit, in that order;
then what the caller may ask for (models, priority), which every front end checks through `Admitted`."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from core.errors import Forbidden, Unauthorized
from gateway.access import Grants, allowed_models, check_model, check_priority
from gateway.auth import Authenticator, require_scope
from gateway.ratelimit import RateLimiter
from observability.actor import acting_as
from observability.tracing import DISABLED, Tracer


@dataclass(slots=True)
class Admitted:
    tenant: str
    user: str | None  # for sticky routing: the token's subject, else the X-User-Id header
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # RateLimit-* for the response
    models: frozenset[str] | None = None
    """The only models this caller may use (its tier's and its token's allow-lists); None: every one."""
    top_priority: int = 1
    """The highest priority level it may ask for (1 is the highest); 0: none above a model's default."""
    expires_at: float | None = None
    """When its token expires (`exp`, Unix seconds); None without authentication. A stream, admitted once,
    serves no item past it."""

    def seconds_left(self) -> float:
        """Until its token expires (0 once it has; infinite without one): how long a stream may still serve it."""
        return math.inf if self.expires_at is None else max(0.0, self.expires_at - time.time())

    def expired(self) -> Unauthorized:
        """What a stream, admitted once at its start, ends with once this caller's token has expired."""
        return Unauthorized("token expired; stream closed: open a new stream with a fresh token")

    def permit(self, model: str) -> None:
        """403, the same for every model it may not use, before anything tells whether the model exists."""
        check_model(self.models, model)

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models

    def permit_priority(self, priority: int, default_level: int) -> None:
        check_priority(self.top_priority, priority, default_level)


class Admission:
    def __init__(
        self, auth: Authenticator | None, limiter: RateLimiter | None, tracer: Tracer = DISABLED, grants: Grants | None = None
    ) -> None:
        self.auth = auth
        self.limiter = limiter
        self.tracer = tracer
        self.grants = grants
        """Per-tier permissions; without authentication there is no tenant to hold any, and nothing is limited."""

    async def admit(self, authorization: bytes | None, user_header: bytes | None, scope: str) -> Admitted:
        """Raises 401/403 for credentials, 429 (or 503 with Redis down and failing closed) for limits."""
        admitted = self.identify(authorization, user_header, scope)
        await self.limit(admitted)
        return admitted

    def identify(self, authorization: bytes | None, user_header: bytes | None, scope: str) -> Admitted:
        """Who calls, from the credentials alone (401/403); a stream does this once and `limit`s each item."""
        if self.auth is not None:
            with self.tracer.span("auth"):
                principal = self.auth.authenticate(authorization)
                require_scope(principal, scope)
            top, models = self.grants.of(principal.tenant) if self.grants is not None else (0, None)
            return Admitted(principal.tenant, principal.subject, models=allowed_models(models, principal.models), top_priority=top,
                            expires_at=principal.expires_at)
        return Admitted("anonymous", user_header.decode("latin-1")[:256] if user_header else None)

    async def limit(self, admitted: Admitted) -> None:
        """One request against the tenant's rate (429); its RateLimit-* headers go on `admitted`."""
        if self.limiter is not None:
            with self.tracer.span("rate_limit", tenant=admitted.tenant):
                decision = await self.limiter.enforce(admitted.tenant)
            admitted.headers = decision.header_fields()

    def authorize(self, authorization: bytes | None, scope: str, user_header: bytes | None = None) -> Admitted:
        """Credentials only, as the HTTP routes check them before their handler (which may `limit` the caller);
        the caller is remembered for the audit log of what an admin request changes (routing/audit.py)."""
        admitted = self.identify(authorization, user_header, scope)
        if self.auth is not None and admitted.user is not None:
            acting_as(admitted.user, admitted.tenant)
        return admitted

    def authenticate(self, authorization: bytes | None) -> None:
        """401 unless the credentials are valid, whatever their scopes: for a path no route has, so that routes
        cannot be probed without a token."""
        if self.auth is not None:
            with self.tracer.span("auth"):
                self.auth.authenticate(authorization)

    def shows_detail(self, authorization: bytes | None) -> bool:
        """Whether an open path may add what names models or tasks: only for a caller with scope predict."""
        if self.auth is None:
            return True
        if authorization is None:
            return False
        try:
            require_scope(self.auth.authenticate(authorization), "predict")
        except (Unauthorized, Forbidden):
            return False
        return True
