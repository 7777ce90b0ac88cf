"""Who may do what: one declarative table, permission -> roles that hold it.

Routes name a permission (see `routes.py`); nothing else decides access. Provider roles
never hold a tenant-content permission, so a provider cannot read a tenant's keys,
policies, devices or audit records.
"""

from __future__ import annotations

TENANT_ROLES = ("tenant_admin", "security_officer", "key_custodian", "approver", "auditor")
PROVIDER_ROLES = ("provider_admin",)

PERMISSIONS: dict[str, frozenset[str]] = {
    "tenants.create": frozenset({"provider_admin"}),
    "tokens.manage": frozenset({"tenant_admin", "provider_admin"}),
    "devices.enroll": frozenset({"security_officer"}),
    "devices.manage": frozenset({"security_officer"}),
    "devices.read": frozenset({"security_officer", "tenant_admin", "auditor"}),
    "keys.manage": frozenset({"key_custodian"}),
    "keys.read": frozenset({"key_custodian", "security_officer", "auditor"}),
    "policies.manage": frozenset({"security_officer"}),
    "policies.read": frozenset({"security_officer", "auditor"}),
    "audit.read": frozenset({"auditor", "tenant_admin"}),
    # --- audit exports, forwarders, reports ---
    "audit.export": frozenset({"auditor", "tenant_admin"}),
    "audit.forwarders.manage": frozenset({"tenant_admin", "security_officer"}),
    "audit.retention.manage": frozenset({"tenant_admin"}),
    "reports.read": frozenset({"auditor", "tenant_admin", "security_officer"}),
    # --- policies, device groups, approvals, notifications ---
    "policies.simulate": frozenset({"security_officer", "auditor"}),
    "groups.manage": frozenset({"security_officer"}),
    "groups.read": frozenset({"security_officer", "auditor"}),
    "approvals.read": frozenset({"approver", "security_officer", "auditor"}),
    "approvals.decide": frozenset({"approver"}),
    "decisions.read": frozenset({"security_officer", "approver", "auditor"}),
    "events.read": frozenset({"security_officer", "approver", "auditor", "tenant_admin"}),
    # --- accounts and sign-in ---
    # "member" is held by every signed-in user, even one who still has to enrol in MFA;
    # "bootstrap" only by the bootstrap credential, until the first admin exists.
    "accounts.bootstrap": frozenset({"bootstrap"}),
    "account.self": frozenset({"member"}),
    "tokens.self": frozenset(TENANT_ROLES + PROVIDER_ROLES),
    "users.manage": frozenset({"tenant_admin", "provider_admin"}),
    "users.read": frozenset({"tenant_admin", "auditor", "provider_admin"}),
    "tenant.settings": frozenset({"tenant_admin"}),
    "tenants.read": frozenset({"provider_admin"}),
    "tenants.manage": frozenset({"provider_admin"}),
    # --- key custody ---
    # Tenant custody policy and KEK: the tenant's key custodians; reading it also for auditors.
    "custody.manage": frozenset({"key_custodian"}),
    "custody.read": frozenset({"key_custodian", "security_officer", "auditor"}),
    "keys.export": frozenset({"key_custodian"}),
    # The service-wide root of trust (init, unseal with Shamir shares, re-key) belongs to the
    # provider's root custodians, never to a tenant; today the bootstrap credential holds it.
    "custody.root": frozenset({"provider_admin", "root_custodian"}),
}

# Permissions a provider admin holds inside the provider tenant: customer tenants' lifecycle and
# the provider's own people. None of them reads or changes a customer tenant's content.
PROVIDER_PERMISSIONS = frozenset(p for p, roles in PERMISSIONS.items() if "provider_admin" in roles)


def allowed(permission: str, roles: frozenset[str]) -> bool:
    holders = PERMISSIONS.get(permission)
    if holders is None:  # deny by default: an unknown permission is nobody's
        return False
    return not holders.isdisjoint(roles)
