"""Every role, declared once: one record with its permissions, where it is held, whether it needs
MFA, whether a grant waits for a second admin, and which roles it may never be held with.

Provider roles never hold a tenant-content permission, so a provider cannot read a tenant's keys,
policies, devices or audit records. Credential roles are never granted: a kind of credential
carries them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Role:
    name: str
    permissions: frozenset[str]
    held_in: Literal["tenant", "provider", "credential"] = "tenant"
    mfa: bool = False  # changes keys, policies, approvals or who holds them: TOTP is required
    # A grant takes effect only once a second tenant admin confirms; and since a service account's
    # token hands its holder the account's roles, so does a token for a service account holding it.
    confirmed: bool = False
    # Separation of duties: roles one user may not also hold (unless the tenant allows it for small teams).
    excludes: tuple[str, ...] = ()


_SELF = "tokens.self"  # every tenant and provider role manages its own API tokens

TENANT_ADMIN = Role("tenant_admin", frozenset({
    "tokens.manage", "devices.read", "audit.read", "audit.export", "audit.forwarders.manage", "audit.retention.manage",
    "reports.read", "events.read", _SELF, "users.manage", "users.read", "tenant.settings",
}), mfa=True, excludes=("key_custodian", "approver"))
SECURITY_OFFICER = Role("security_officer", frozenset({
    "devices.enroll", "devices.manage", "devices.read", "keys.read", "policies.manage", "policies.read",
    "audit.forwarders.manage", "reports.read", "policies.simulate", "groups.manage", "groups.read", "approvals.read",
    "decisions.read", "events.read", _SELF, "custody.read",
}), mfa=True)
# Tenant custody policy, KEK and export belong to the tenant's key custodians.
KEY_CUSTODIAN = Role("key_custodian", frozenset({
    "keys.manage", "keys.read", _SELF, "custody.manage", "custody.read", "keys.export",
}), mfa=True, confirmed=True)
APPROVER = Role("approver", frozenset({
    "approvals.read", "approvals.decide", "decisions.read", "events.read", _SELF,
}), mfa=True, confirmed=True)
AUDITOR = Role("auditor", frozenset({
    "devices.read", "keys.read", "policies.read", "audit.read", "audit.export", "reports.read", "policies.simulate",
    "groups.read", "approvals.read", "decisions.read", "events.read", _SELF, "users.read", "custody.read",
}))
# Customer tenants' lifecycle and the provider's own people; the service-wide root of trust (init,
# unseal with Shamir shares, re-key) belongs to the provider's root custodians, never to a tenant.
PROVIDER_ADMIN = Role("provider_admin", frozenset({
    "tenants.create", "tokens.manage", _SELF, "users.manage", "users.read", "tenants.read", "tenants.manage",
    "custody.root", "audit.read",  # the provider's own chain: its people and its security log
}), held_in="provider", mfa=True)
# Held by every signed-in user, even one who still has to enrol in MFA: their own sign-in.
MEMBER = Role("member", frozenset({"account.self"}), held_in="credential")
# Held only by the bootstrap credential, until the first admin exists.
BOOTSTRAP = Role("bootstrap", frozenset({"accounts.bootstrap"}), held_in="credential")
ROOT_CUSTODIAN = Role("root_custodian", frozenset({"custody.root"}), held_in="credential")

ROLES: tuple[Role, ...] = (TENANT_ADMIN, SECURITY_OFFICER, KEY_CUSTODIAN, APPROVER, AUDITOR, PROVIDER_ADMIN,
                           MEMBER, BOOTSTRAP, ROOT_CUSTODIAN)

TENANT_ROLES = tuple(r.name for r in ROLES if r.held_in == "tenant")
PROVIDER_ROLES = tuple(r.name for r in ROLES if r.held_in == "provider")
MFA_ROLES = frozenset(r.name for r in ROLES if r.mfa)
CONFIRMED_ROLES = frozenset(r.name for r in ROLES if r.confirmed)
CONFLICTS = tuple(frozenset({r.name, other}) for r in ROLES for other in r.excludes)
