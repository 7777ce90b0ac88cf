"""Every console route, one line each: method, path, view and the permission it needs (the API's
permission names, checked against the same role table); registered from here only.

Sign-in (password and TOTP, or the tenant's OIDC or SAML provider: `views_sso`) is open to anyone;
everything else is in the table. Pages and fragments answer HTML, live parts server-sent events; all of it is served from this
package (templates/, static/), with a strict Content-Security-Policy (`web.py`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from . import (
    views_approvals,
    views_audit,
    views_devices,
    views_keys,
    views_overview,
    views_policies,
    views_reports,
    views_requests,
    views_signin,
    views_sso,
    views_stream,
    views_users,
)
from .live import LIVE, Live, close_streams
from .web import page, see_other, with_headers

HERE = Path(__file__).parent


@dataclass(frozen=True)
class ConsoleRoute:
    method: str
    path: str
    view: object
    permission: str


ROUTES: tuple[ConsoleRoute, ...] = (
    ConsoleRoute("POST", "/console/logout", views_signin.logout, "account.self"),
    ConsoleRoute("GET", "/console/overview", views_overview.overview, "account.self"),
    ConsoleRoute("GET", "/console/approvals", views_approvals.inbox, "approvals.read"),
    ConsoleRoute("GET", "/console/approvals/live", views_approvals.inbox_live, "approvals.read"),
    ConsoleRoute("POST", "/console/approvals/{approval_id}/vote", views_approvals.vote, "approvals.decide"),
    ConsoleRoute("GET", "/console/requests/{request_id}", views_requests.detail, "decisions.read"),
    ConsoleRoute("GET", "/console/stream", views_stream.page, "events.read"),
    ConsoleRoute("GET", "/console/stream/live", views_stream.tail, "events.read"),
    ConsoleRoute("GET", "/console/keys", views_keys.index, "keys.read"),
    ConsoleRoute("GET", "/console/keys/{key_id}", views_keys.detail, "keys.read"),
    ConsoleRoute("POST", "/console/keys/{key_id}/rotate", views_keys.rotate, "keys.manage"),
    ConsoleRoute("POST", "/console/keys/{key_id}/retire", views_keys.retire, "keys.manage"),
    ConsoleRoute("POST", "/console/keys/{key_id}/state", views_keys.change_state, "keys.manage"),
    ConsoleRoute("POST", "/console/keys/{key_id}/destruction", views_keys.schedule, "keys.manage"),
    ConsoleRoute("POST", "/console/keys/{key_id}/destruction/approve", views_keys.approve, "keys.manage"),
    ConsoleRoute("POST", "/console/keys/{key_id}/destruction/cancel", views_keys.cancel, "keys.manage"),
    ConsoleRoute("GET", "/console/devices", views_devices.index, "devices.read"),
    ConsoleRoute("GET", "/console/devices/{device_id}", views_devices.detail, "devices.read"),
    ConsoleRoute("POST", "/console/devices/{device_id}/revoke", views_devices.revoke, "devices.manage"),
    ConsoleRoute("POST", "/console/devices/{device_id}/clear-quarantine", views_devices.clear_quarantine,
                 "devices.manage"),
    ConsoleRoute("GET", "/console/reports", views_reports.reports, "reports.read"),
    ConsoleRoute("GET", "/console/reports/export.csv", views_reports.export_csv, "reports.read"),
    ConsoleRoute("GET", "/console/policies", views_policies.policies, "policies.read"),
    ConsoleRoute("GET", "/console/policies/{policy_id}", views_policies.policy, "policies.read"),
    ConsoleRoute("GET", "/console/policies/{policy_id}/simulate", views_policies.simulate, "policies.simulate"),
    ConsoleRoute("GET", "/console/audit", views_audit.search, "audit.read"),
    ConsoleRoute("GET", "/console/audit/export", views_audit.export, "audit.export"),
    ConsoleRoute("GET", "/console/users", views_users.users, "users.read"),
    ConsoleRoute("POST", "/console/users/{user_id}/roles/{role}/confirm", views_users.confirm, "users.manage"),
)


async def _home(request: web.Request) -> web.StreamResponse:
    return with_headers(see_other("/console/overview"))


def setup(app: web.Application) -> None:
    """Templates, static files, the sign-in pages and every route of the table."""
    aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                         undefined=jinja2.StrictUndefined)
    app[LIVE] = Live()
    app.on_shutdown.append(close_streams)
    app.router.add_get("/console", _home)
    app.router.add_get("/console/login", views_signin.login_form)
    app.router.add_post("/console/login", views_signin.login)
    app.router.add_get("/console/sso/start", views_sso.start)
    app.router.add_get("/console/sso/oidc/callback", views_sso.oidc_callback)
    app.router.add_post("/console/sso/saml/acs", views_sso.saml_acs)
    app.router.add_post("/console/sso/saml/finish", views_sso.saml_finish)
    app.router.add_static("/console/static", HERE / "static", append_version=False)
    for route in ROUTES:
        app.router.add_route(route.method, route.path, page(route.view, route.permission))  # type: ignore[arg-type]
