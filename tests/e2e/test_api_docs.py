"""The browsable API reference at /v1/docs: Swagger UI's vendored files and the spec, all from this
origin, under a strict Content-Security-Policy with no inline script."""

from __future__ import annotations

import re

from services.gateway.docs import CSP


def _directives(header: str) -> dict[str, str]:
    return {d.strip().split(" ", 1)[0]: d.strip().partition(" ")[2] for d in header.split(";") if d.strip()}


async def test_the_reference_page_its_assets_and_the_spec_are_served_under_a_strict_csp(http, stack):
    async with http.get(stack.url + "/v1/docs") as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        html = await resp.text()
        csp = _directives(resp.headers["Content-Security-Policy"])
    assert resp.headers["Content-Security-Policy"] == CSP
    assert csp["default-src"] == "'none'" and csp["script-src"] == "'self'" and csp["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in resp.headers["Content-Security-Policy"]
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all('src="/v1/docs/' in attrs and not body.strip() for attrs, body in scripts), scripts
    assert "on" + "load=" not in html.lower()  # no inline event handlers either
    assets = re.findall(r'(?:src|href)="(/v1/docs/[^"]+)"', html)
    assert {"/v1/docs/swagger-ui-bundle.js", "/v1/docs/init.js", "/v1/docs/swagger-ui.css"} <= set(assets)
    for path in assets:
        async with http.get(stack.url + path) as resp:
            body = await resp.read()
            assert resp.status == 200 and len(body) > 0, path
            assert resp.headers["Content-Security-Policy"] == CSP and resp.headers["X-Content-Type-Options"] == "nosniff"
            if path.endswith(".js"):
                assert resp.content_type == "text/javascript", path
    async with http.get(stack.url + "/v1/docs/init.js") as resp:
        init = await resp.text()
    assert '"/v1/openapi.json"' in init  # the UI loads the spec from this origin (connect-src 'self')
    async with http.get(stack.url + "/v1/openapi.json") as resp:
        assert resp.status == 200 and (await resp.json())["openapi"].startswith("3.1")


async def test_only_the_listed_assets_are_served(http, stack):
    for name in ("index.html", "swagger-ui-bundle.js.map", "..%2F..%2Fdocs.py", "%2e%2e", "package.json"):
        async with http.get(stack.url + "/v1/docs/" + name) as resp:
            assert resp.status == 404, name
            assert resp.content_type == "application/problem+json"
