"""The interactive API page: Swagger UI over `GET /openapi.json`, served at `/docs` without a token.

Its assets come from the `swagger-ui-bundle` package, installed with the server, so the page works on a
closed network (no CDN). Viewing needs no token; trying a request needs one, entered under "Authorize".
"""

from __future__ import annotations

import functools
from pathlib import Path

from core.errors import NotFound
from frontends.parts import FrontendParts
from frontends.route_table import HttpRequest

PAGE_PATH = "/docs"
ASSETS = {
    "swagger-ui.css": b"text/css; charset=utf-8",
    "swagger-ui-bundle.js": b"text/javascript; charset=utf-8",
    "favicon-32x32.png": b"image/png",
}
"""The only files served from the bundle: a fixed list, so a path segment never reaches the file system."""

PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>rtserve API</title>
  <link rel="stylesheet" href="{PAGE_PATH}/swagger-ui.css">
  <link rel="icon" type="image/png" href="{PAGE_PATH}/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{PAGE_PATH}/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({{
      url: "/openapi.json",
      dom_id: "#swagger-ui",
      deepLinking: true,
      persistAuthorization: true,
      presets: [SwaggerUIBundle.presets.apis],
      layout: "BaseLayout",
    }});
  </script>
</body>
</html>
""".encode()

HTML = b"text/html; charset=utf-8"
CACHED = (b"cache-control", b"public, max-age=86400")


@functools.cache
def _asset(name: str) -> bytes:
    from swagger_ui_bundle import swagger_ui_path

    return (Path(swagger_ui_path) / name).read_bytes()


async def page(served: FrontendParts, request: HttpRequest) -> tuple[int, bytes, bytes]:
    return 200, PAGE, HTML


async def asset(served: FrontendParts, request: HttpRequest) -> tuple[int, bytes, bytes]:
    name = request.params["asset"]
    content_type = ASSETS.get(name)
    if content_type is None:
        raise NotFound(f"no file {name!r} on the API page")
    request.extra.append(CACHED)
    return 200, _asset(name), content_type
