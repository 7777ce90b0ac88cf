"""Every role, declared once: one record with its permissions, where it is held, whether it needs
MFA, whether a grant waits for a second admin (every role that manages people, keys, policies or
approvals: an admin alone can never make another admin or a security officer it controls), and
which roles it may never be held with.

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
    # Held only by a person, never by a service account (whose token anyone holding it could use).
    people_only: bool = False
    # Manages people and settings: its holders are the "admins" whose second person confirms what
    # waits for one (see `accounts.rules.is_active_admin`).
    admin: bool = False


_SELF = "tokens.self"  # every tenant and provider role manages its own API tokens

TENANT_ADMIN = Role("tenant_admin", frozenset({
    "tokens.manage", "devices.read", "audit.read", "audit.export", "audit.forwarders.manage", "audit.retention.manage",
    "reports.read", "events.read", _SELF, "users.manage", "users.read", "tenant.settings",
}), mfa=True, confirmed=True, excludes=("key_custodian", "approver"), admin=True)
SECURITY_OFFICER = Role("security_officer", frozenset({
    "devices.enroll", "devices.manage", "devices.read", "keys.read", "policies.manage", "policies.read",
    "audit.forwarders.manage", "reports.read", "policies.simulate", "groups.manage", "groups.read", "approvals.read",
    "decisions.read", "events.read", _SELF, "custody.read", "volumes.read",
}), mfa=True, confirmed=True)
# Tenant custody policy, KEK and export belong to the tenant's key custodians.
# Break-glass recovery of a volume's passphrase is asked for by a custodian and approved by two others.
KEY_CUSTODIAN = Role("key_custodian", frozenset({
    "keys.manage", "keys.read", _SELF, "custody.manage", "custody.read", "keys.export", "volumes.read",
    "volumes.recover",
}), mfa=True, confirmed=True)
APPROVER = Role("approver", frozenset({
    "approvals.read", "approvals.decide", "decisions.read", "events.read", _SELF,
}), mfa=True, confirmed=True)
AUDITOR = Role("auditor", frozenset({
    "devices.read", "keys.read", "policies.read", "audit.read", "audit.export", "reports.read", "policies.simulate",
    "groups.read", "approvals.read", "decisions.read", "events.read", _SELF, "users.read", "custody.read",
    "volumes.read",
}))
# Customer tenants' lifecycle and the provider's own people. It may watch whether custody is sealed
# (`custody.root.status`: counts and fingerprints, nothing that opens anything) but never receives,
# submits or verifies a root share: with a share and the store it runs, a provider could open every
# tenant's KEKs. A grant waits for a second, active provider admin (the bootstrap may name one):
# a provider admin alone could otherwise make a puppet admin to confirm root-custodian grants.
PROVIDER_ADMIN = Role("provider_admin", frozenset({
    "tenants.create", "tokens.manage", _SELF, "users.manage", "users.read", "tenants.read", "tenants.manage",
    "custody.root.status", "audit.read",  # the provider's own chain: its people and its security log
}), held_in="provider", mfa=True, confirmed=True, admin=True)
# The service-wide root of trust (init, unseal with Shamir shares, re-key): named people of the
# provider, each holding one share sealed to the key they enrolled themselves. Granted by a provider
# admin, in effect once a second provider admin confirms; a person only, never with provider_admin.
ROOT_CUSTODIAN = Role("root_custodian", frozenset({"custody.root", "custody.root.status", _SELF}),
                      held_in="provider", mfa=True, confirmed=True, excludes=("provider_admin",), people_only=True)
# Held by every signed-in user, even one who still has to enrol in MFA: their own sign-in.
MEMBER = Role("member", frozenset({"account.self"}), held_in="credential")
# Held only by the bootstrap credential, until the first admin exists.
BOOTSTRAP = Role("bootstrap", frozenset({"accounts.bootstrap"}), held_in="credential")

ROLES: tuple[Role, ...] = (TENANT_ADMIN, SECURITY_OFFICER, KEY_CUSTODIAN, APPROVER, AUDITOR, PROVIDER_ADMIN,
                           ROOT_CUSTODIAN, MEMBER, BOOTSTRAP)

TENANT_ROLES = tuple(r.name for r in ROLES if r.held_in == "tenant")
PROVIDER_ROLES = tuple(r.name for r in ROLES if r.held_in == "provider")
MFA_ROLES = frozenset(r.name for r in ROLES if r.mfa)
CONFIRMED_ROLES = frozenset(r.name for r in ROLES if r.confirmed)
PEOPLE_ONLY_ROLES = frozenset(r.name for r in ROLES if r.people_only)
ADMIN_ROLES = frozenset(r.name for r in ROLES if r.admin)
CONFLICTS = tuple(frozenset({r.name, other}) for r in ROLES for other in r.excludes)
