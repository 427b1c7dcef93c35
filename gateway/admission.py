"""Who may call, and how often: authentication, scope, and the tenant's rate limit, in that order."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.auth import Authenticator, require_scope
from gateway.ratelimit import RateLimiter
from observability.tracing import DISABLED, Tracer


@dataclass(slots=True)
class Admitted:
    tenant: str
    user: str | None  # for sticky routing: the token's subject, else the X-User-Id header
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # RateLimit-* for the response


class Admission:
    def __init__(self, auth: Authenticator | None, limiter: RateLimiter | None, tracer: Tracer = DISABLED) -> None:
        self.auth = auth
        self.limiter = limiter
        self.tracer = tracer

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
            return Admitted(principal.tenant, principal.subject)
        return Admitted("anonymous", user_header.decode("latin-1")[:256] if user_header else None)

    async def limit(self, admitted: Admitted) -> None:
        """One request against the tenant's rate (429); its RateLimit-* headers go on `admitted`."""
        if self.limiter is not None:
            with self.tracer.span("rate_limit", tenant=admitted.tenant):
                decision = await self.limiter.enforce(admitted.tenant)
            admitted.headers = decision.header_fields()

    def authorize(self, authorization: bytes | None, scope: str) -> None:
        """Credentials only, for metadata requests that are not rate limited."""
        if self.auth is not None:
            require_scope(self.auth.authenticate(authorization), scope)
