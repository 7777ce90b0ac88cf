"""The browsable API reference at `/v1/docs`: Swagger UI's static files as the openapi-ui-bundles
package ships them, over `/v1/openapi.json`.

Served under a strict Content-Security-Policy: scripts and styles from this origin only, no inline
script (the page's start-up code is `/v1/docs/init.js`), nothing framed, nothing posted.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from openapi_ui_bundles import swagger_ui

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "Cache-Control": "public, max-age=3600"}

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Strongroom API reference</title>
<link rel="stylesheet" href="/v1/docs/swagger-ui.css">
<link rel="icon" type="image/png" href="/v1/docs/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/v1/docs/swagger-ui-bundle.js"></script>
<script src="/v1/docs/init.js"></script>
</body>
</html>
"""

INIT = """"use strict";
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/v1/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  });
});
"""

# The only files served, by name: nothing else of the package (or the disk) is reachable.
ASSETS: dict[str, str] = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "favicon-32x32.png": "image/png",
}
_VENDOR = Path(swagger_ui.static_path)


async def page(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html", charset="utf-8", headers=HEADERS)


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["asset"]
    if name == "init.js":
        return web.Response(text=INIT, content_type="text/javascript", charset="utf-8", headers=HEADERS)
    media = ASSETS.get(name)
    if media is None:
        raise web.HTTPNotFound(text="no such asset")
    return web.Response(body=(_VENDOR / name).read_bytes(), content_type=media, headers=HEADERS)
