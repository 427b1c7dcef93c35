"""Peer (c): an `@bentoml.asgi_app`-mounted app returning constant JSON: the BentoML server's own ceiling."""

from __future__ import annotations

import bentoml

BODY = b'{"ok":true}'


async def constant(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]})
    await send({"type": "http.response.body", "body": BODY})


@bentoml.asgi_app(constant, path="/")
@bentoml.service(name="empty-asgi", workers=1)
class EmptyService:
    pass
