"""The permission table: every operator route needs a known permission; provider roles never
reach tenant content; tenant roles never create tenants."""

from __future__ import annotations

import itertools

import pytest

from services.gateway.permissions import PERMISSIONS, PROVIDER_PERMISSIONS, allowed
from services.gateway.roles import PROVIDER_ROLES, TENANT_ROLES
from services.gateway.routes import ROUTES

OPERATOR_ROUTES = [r for r in ROUTES if r.auth == "operator"]


@pytest.mark.parametrize("route", OPERATOR_ROUTES, ids=lambda r: f"{r.method} {r.path}")
def test_every_operator_route_names_a_known_permission(route):
    assert route.permission in PERMISSIONS


@pytest.mark.parametrize(
    "route,role", list(itertools.product(OPERATOR_ROUTES, TENANT_ROLES + PROVIDER_ROLES)),
    ids=lambda v: v if isinstance(v, str) else f"{v.method} {v.path}",
)
def test_route_role_matrix(route, role):
    expected = role in PERMISSIONS[route.permission]
    assert allowed(route.permission, frozenset({role})) is expected
    if role in PROVIDER_ROLES:
        # Inside the provider tenant: customer tenants' lifecycle, the provider's own people, and the
        # service-wide root of trust, which only the root custodians hold (never a provider admin).
        assert not expected or route.permission in PROVIDER_PERMISSIONS
        if route.permission == "custody.root":
            assert expected is (role == "root_custodian")


def test_unknown_permission_is_denied_to_everyone():
    assert not allowed("keys.destroy_everything", frozenset(TENANT_ROLES + PROVIDER_ROLES))


def test_non_operator_routes_are_the_agent_and_public_ones():
    assert {r.path for r in ROUTES if r.auth != "operator"} >= {"/v1/health", "/v1/agent/enroll", "/v1/agent/key-requests"}
    assert {r.path for r in ROUTES if r.auth == "none"} == {"/v1/health", "/v1/live", "/v1/ready", "/metrics", "/v1/agent/enroll", "/v1/agent/enroll/challenges", "/v1/agent/enroll/zero-touch",
                                                                 "/v1/agent/enroll/zero-touch/challenges", "/v1/auth/setup", "/v1/auth/login",
                                                             "/v1/auth/oidc/start", "/v1/auth/oidc/callback",
                                                             "/v1/auth/saml/start", "/v1/auth/saml/acs", "/v1/auth/saml/metadata",
                                                             "/v1/docs", "/v1/docs/{asset}"}
