"""Who may do what: permission -> roles that hold it, derived from the role records (`roles.py`).

Routes name a permission (see `routes.py`); nothing else decides access.
"""

from __future__ import annotations

from .roles import PROVIDER_ADMIN, ROLES

PERMISSIONS: dict[str, frozenset[str]] = {
    permission: frozenset(r.name for r in ROLES if permission in r.permissions)
    for permission in sorted({p for r in ROLES for p in r.permissions})
}

# Permissions a provider admin holds inside the provider tenant: customer tenants' lifecycle and
# the provider's own people. None of them reads or changes a customer tenant's content.
PROVIDER_PERMISSIONS = PROVIDER_ADMIN.permissions


def allowed(permission: str, roles: frozenset[str]) -> bool:
    holders = PERMISSIONS.get(permission)
    if holders is None:  # deny by default: an unknown permission is nobody's
        return False
    return not holders.isdisjoint(roles)
